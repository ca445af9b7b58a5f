"""The HTML report in a real headless Chromium (playwright driving the system browser), the PDF
printed from it, and a wheel built from the tree. Tests that need a program pip cannot install skip
with a reason starting "needs program:"; .ci/run installs them and fails if any such test skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ASSETS, ROOT
from gpu_audit.fmt import fmt_pct, fmt_usd

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def need(program: str | None, name: str) -> None:
    if not program:
        pytest.skip(f"needs program: {name} (Debian: apt-get install {name})")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from gpu_audit.demo import run_demo

    return run_demo(str(tmp_path_factory.mktemp("demo")), hours=12, interval_s=60)


@pytest.fixture(scope="module")
def browser():
    need(CHROMIUM, "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs program: playwright (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def load(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems, dialogs = [], []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto("file://" + os.path.abspath(path))
    page.wait_for_function("document.querySelectorAll('.chart').length === document.querySelectorAll('.chart .main-svg').length / 1 || true")
    page.wait_for_timeout(500)
    return page, problems, dialogs


def test_demo_report_renders_with_every_chart_and_exact_headline(browser, demo):
    page, problems, _ = load(browser, demo.html)
    assert problems == []
    charts = page.eval_on_selector_all(".chart", "els => els.map(e => [e.id, e.querySelectorAll('svg.main-svg').length])")
    assert len(charts) == 8 and all(n > 0 for _, n in charts), charts  # with "since the last audit": the demo's second day
    assert charts[0][0] == "chart-since"
    assert "realised" in page.inner_text("#since").lower()
    f = demo.findings
    fl = f["fleet"]
    expect = {"fleet.spend_usd": fmt_usd(fl["spend_usd"]), "fleet.waste_usd": fmt_usd(fl["waste_usd"]),
              "fleet.idle_usd": fmt_usd(fl["idle_usd"]), "fleet.mean_util_pct": fmt_pct(fl["mean_util_pct"]),
              "fleet.potential_monthly_savings_usd": fmt_usd(fl["potential_monthly_savings_usd"]),
              "fleet.cost_per_1m_output_tokens": fmt_usd(fl["cost_per_1m_output_tokens"], 3),
              "fleet.coverage_pct": fmt_pct(fl["coverage_pct"]),
              "fleet.monthly_run_rate_usd": fmt_usd(fl["monthly_run_rate_usd"]),
              "fleet.capacity_monthly_usd": fmt_usd(fl["capacity_monthly_usd"]),
              "fleet.behaviour_recommendations": str(fl["behaviour_recommendations"]),
              "fleet.energy_kwh": f"{fl['energy_kwh']:,.1f} kWh", "fleet.energy_usd": fmt_usd(fl["energy_usd"]),
              "fleet.idle_energy_share_pct": fmt_pct(fl["idle_energy_share_pct"]), "fleet.kgco2e": f"{fl['kgco2e']:,.1f} kgCO2e",
              "baseline.realized_monthly_usd": fmt_usd(f["baseline"]["realized_monthly_usd"]),
              **{f"baseline.deltas.fleet.{k}.after": fmt_usd(f["baseline"]["deltas"]["fleet"][k]["after"])
                 for k in ("spend_monthly_usd", "waste_monthly_usd", "idle_monthly_usd")}}
    # the run-rate is spend x 730 / window hours, beside every monthly figure
    assert fl["monthly_run_rate_usd"] == pytest.approx(fl["spend_usd"] * 730 / f["window"]["hours"])
    shown = dict(page.eval_on_selector_all("[data-kpi]", "els => els.map(e => [e.dataset.kpi, e.textContent.trim()])"))
    assert shown == expect
    assert page.locator(".rec").count() == len(f["recommendations"])
    # The device table sorts by a numeric column.
    page.click("#device-table th:nth-child(4)")  # spend
    page.click("#device-table th:nth-child(4)")
    first = page.eval_on_selector("#device-table tbody tr td:nth-child(4)", "e => e.dataset.sort")
    assert float(first) == pytest.approx(max(d["spend_usd"] or -1 for d in f["devices"]))
    page.fill('input.filter[data-table="device-table"]', "mixed-01")
    visible = page.eval_on_selector_all("#device-table tbody tr", "rs => rs.filter(r => r.style.display !== 'none').length")
    assert visible == sum(d["host"] == "mixed-01" for d in f["devices"])
    page.close()


def test_report_is_self_contained_and_under_15_mb(demo):
    text = open(demo.html, encoding="utf-8").read()
    # plotly.js mentions its CDN as a config default; no element loads anything (the browser test
    # also fails on any request that is not file:, data: or about:).
    assert text.count("Plotly.newPlot") == 8 and "<script src=" not in text and "<link " not in text
    assert os.path.getsize(demo.html) < 15 * 2**20


HOSTILE_HOST = "<img src=x onerror=alert(1)>"
HOSTILE_MODEL = "</script><script>alert(2)</script>"


def test_hostile_names_stay_text(browser, tmp_path, run_cli):
    from storefix import T0, series, write_samples

    store = str(tmp_path / "s")
    write_samples(store, series(HOSTILE_HOST, "GPU-<b>x</b>", "NVIDIA H100 80GB HBM3", 0, 600, [50] * 6 + [0] * 12))
    toks = tmp_path / "t.jsonl"
    toks.write_text(json.dumps({"timestamp": T0 + 60, "model": HOSTILE_MODEL, "host": HOSTILE_HOST,
                                "prompt_tokens": 5000, "completion_tokens": 20}) + "\n")
    html = tmp_path / "r.html"
    code, _, err = run_cli("report", store, "--pricing", str(ASSETS / "pricing.toml"), "--tokens", str(toks), "--json", str(tmp_path / "b.json"))
    assert code == 0, err
    # compared with itself as the baseline: the "since the last audit" section shows the hostile titles too
    code, _, err = run_cli("report", store, "--pricing", str(ASSETS / "pricing.toml"), "--tokens", str(toks), "--html", str(html),
                           "--baseline", str(tmp_path / "b.json"))
    assert code == 0, err
    page, problems, dialogs = load(browser, html)
    assert dialogs == [] and problems == []
    assert page.locator("img[src=x]").count() == 0
    assert HOSTILE_HOST in page.inner_text("#devices") and HOSTILE_MODEL in page.inner_text("#tokens")
    assert HOSTILE_HOST in page.inner_text("#recommendations") and HOSTILE_HOST in page.inner_text("#since")
    page.close()


def _pgm_spread(path: str) -> int:
    data = open(path, "rb").read()
    parts = data.split(maxsplit=4)  # P5 width height maxval pixels
    pixels = parts[4]
    return max(pixels) - min(pixels)


def test_pdf_has_pages_text_and_charts(demo, tmp_path, run_cli):
    need(CHROMIUM, "chromium")
    need(shutil.which("pdftotext") and shutil.which("pdftoppm"), "poppler-utils")
    pdf = tmp_path / "r.pdf"
    code, out, err = run_cli("report", demo.store, "--pricing", demo.pricing, "--tokens", demo.tokens, "--since", demo.findings["window"]["start"],
                             "--baseline", os.path.join(demo.out, "audits"), "--html", str(tmp_path / "r.html"), "--pdf", str(pdf))
    assert code == 0, err
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    assert pages >= 3
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    f = json.loads((tmp_path / "r.json").read_text()) if (tmp_path / "r.json").exists() else demo.findings
    assert fmt_usd(f["fleet"]["spend_usd"]) in text and "Recommendations" in text
    for page in (1, 2):
        subprocess.run(["pdftoppm", "-gray", "-r", "30", "-f", str(page), "-l", str(page), str(pdf), str(tmp_path / f"p{page}")], check=True)
        png = next(p for p in os.listdir(tmp_path) if p.startswith(f"p{page}") and p.endswith(".pgm"))
        assert _pgm_spread(str(tmp_path / png)) > 100  # not a blank page


def test_pdf_without_a_browser_is_one_line_and_keeps_the_html(demo, tmp_path, run_cli):
    html = tmp_path / "r.html"
    code, _, err = run_cli("report", demo.store, "--pricing", demo.pricing, "--html", str(html), "--pdf", str(tmp_path / "r.pdf"),
                           "--browser", "/nonexistent/chromium")
    assert code == 2 and err.startswith("Error: --browser '/nonexistent/chromium' is not an executable")
    assert html.exists() and not (tmp_path / "r.pdf").exists()


def test_wheel_ships_the_templates_and_renders(tmp_path, demo):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = list((tmp_path / "dist").glob("gpu_audit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpu_audit/templates/report.html.j2" in names and "gpu_audit/templates/recommendations/idle.html.j2" in names
    assert "gpu_audit/scenarios/h100-inference.toml" in names and "gpu_audit/data/demo-pricing.toml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import json, sys; from gpu_audit.report.html import render_html, TEMPLATES; "
            f"assert str(TEMPLATES).startswith({str(site)!r}), TEMPLATES; "
            f"print(len(render_html(json.load(open({demo.json!r})))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                       env={**os.environ, "PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout) > 1_000_000


def test_table_headers_never_cover_the_first_row(browser, demo):
    """Sticky headers inside a scrolling table wrapper stick to the wrapper's top: the first row stays visible."""
    page, problems, _ = load(browser, demo.html)
    for table in ("#model-table", "#device-table"):
        page.locator(f"{table} tbody tr").first.scroll_into_view_if_needed()
        hit = page.evaluate(f"""() => {{
            const row = document.querySelector('{table} tbody tr');
            const r = row.getBoundingClientRect();
            const el = document.elementFromPoint(r.left + 20, r.top + r.height / 2);
            return row.contains(el);
        }}""")
        assert hit, f"the first row of {table} is covered"
    assert problems == []
