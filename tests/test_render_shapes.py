"""Every recommendation shape the rules make, rendered: terminal, HTML (templates strict: a field a
template reads that the findings lack fails here, loudly) and PDF. Then every recommendation again
with each optional evidence field removed (a key not every recommendation of its kind carries):
the templates must leave it out, never fail. Readers get PoliteUndefined instead of an error page."""

from __future__ import annotations

import copy
import io
import shutil

import pytest
from rich.console import Console

from conftest import ASSETS
from findfix import device, findings, served_model
from gpu_audit.catalog import MODELS
from gpu_audit.recommend import recommend
from gpu_audit.recommend.base import RecommendSettings

H100, A100, H200, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA H200", "NVIDIA L40S"
S = RecommendSettings(gpu_prices={m.key: (m.price_per_hour, m.provider) for m in MODELS if m.price_per_hour is not None})
FULL_KV = {"p95_kv_cache_usage_pct": 98.0, "preemptions": 3.0, "mean_requests_waiting": 2.0}
API = [{"model": "gpt-4o-mini", "input_per_1m": 0.15, "output_per_1m": 0.60, "as_of": "2026-04-06", "source": "x", "serves": ["tail", "rag"]}]
NODE, OWNED = {"unit": "node", "commitment": "on-demand"}, {"unit": "gpu", "commitment": "owned"}


def dev(host, uuid, name, price, utils, mem, billing=None, **kw):
    d, rows = device(host, uuid, name, price, utils, mem, covered_hours=float(len(utils)), **kw)
    if billing:
        d["billing"] = billing
    return d, rows


def cases():
    """Findings that make each rule fire in each of its variants."""
    week = [0 if (h % 24 >= 22 or h % 24 < 7) else 60 for h in range(72)]
    parent = ({"host": "m", "uuid": "GPU-p", "name": A100, "mig_mode": True, "parent_uuid": None, "spend_usd": 2.0, "unallocated_usd": 2.0,
               "mean_util_pct": None, "coverage_pct": 100.0, "covered_hours": 24.0, "price_per_hour": 1.8}, [])
    kid = dev("m", "MIG-k", A100, 1.0, [1] * 24, 1, parent_uuid="GPU-p", mig_profile="2g.20gb")
    return [
        findings([dev("h", "GPU-1", L40S, 2.0, [0] * 10 + [50] * 14, 0)], 24),
        findings([dev("h", "GPU-2", L40S, 2.0, [0] * 20 + [30] * 4, 40, top_process={"name": "python3", "pid": 1, "used_mem_bytes": 40 * 2**30})], 24),
        findings([dev("h", "GPU-3", L40S, 1.0, week, 0)], 72),
        findings([dev("n", f"GPU-{i}", L40S, 2.0, [0] * 10 + [50] * 14 if i == 0 else [80] * 24, 0, NODE) for i in range(4)], 24),
        findings([dev("o", "GPU-o", L40S, 2.0, [0] * 10 + [50] * 14, 0, OWNED)], 24),
        findings([dev("h", "MIG-s", H100, 1.0, [0] * 24, 0, parent_uuid="GPU-x", mig_profile="1g.10gb")], 24),
        findings([dev("h", "GPU-r", H100, 12.29, [20] * 24, 10)], 24),
        findings([dev("h", f"GPU-{i}", A100, 5.12, [10] * 24, 8) for i in range(4)], 24),
        findings([parent, kid], 24),
        findings([dev("h1", "GPU-a", L40S, 1.86, [55] * 12 + [5] * 12, 9.6, total_gib=48),
                  dev("h2", "GPU-b", L40S, 1.86, [5] * 12 + [55] * 12, 9.6, total_gib=48, billing=NODE)], 24),
        findings([dev("inf", f"GPU-{i}", H100, 3.0, [15] * 24, 70) for i in range(4)], 24, [served_model("m", ["inf"], engine={
            "mean_requests_waiting": 3.0, "p95_kv_cache_usage_pct": 40.0})]),
        findings([dev("inf", "GPU-h", H100, 3.0, [60] * 24, 76), dev("inf", "GPU-a", A100, 2.0, [60] * 24, 76)], 24,
                 [served_model("m", ["inf"], engine=FULL_KV)]),
        findings([dev("inf", f"GPU-{k}", H100, 3.0, [20] * 24, 71) for k in range(8)], 24, [served_model("llama-3.1-70b", ["inf"])]),
        findings([dev("inf", "GPU-q", H200, 4.0, [62] * 24, 136, total_gib=141)], 24,
                 [served_model("llama-3.1-405b-fp8", ["inf"], engine=FULL_KV), served_model("m", ["inf"])]),
        findings([dev("inf", "GPU-t", H100, 3.0, [20] * 24, 70)], 24, [
            served_model("tail", ["inf"], completion_p50=100.0, completion_p99=1000.0, completion_tokens_beyond_p95=200_000.0),
            served_model("rag", ["inf"], prompt_p50=5000.0, completion_p50=100.0, completion_p99=300.0)], API),
        {**findings([dev("s", "GPU-j", H100, 3.0, [3] * 24, 40)], 24), "workloads": [
            {"kind": "slurm_job", "id": "4512", "name": "python", "user": "bob", "namespace": None, "gpus": 4, "hosts": ["s"],
             "gpu_hours": 24.0, "spend_usd": 72.0, "waste_usd": 70.0, "idle_usd": 50.0, "idle_held_hours": 16.0,
             "mean_util_pct": 3.0, "peak_memory_bytes": 40 * 2**30}]},
        # two models on two hosts, one with only short completions: the routing variant (it crashed the HTML)
        findings([dev("a", "GPU-a", H100, 3.0, [20] * 24, 70), dev("b", "GPU-b", L40S, 1.0, [20] * 24, 20)], 24, [
            served_model("big", ["a"], cost=300.0, completion_p50=40.0, completion_p99=100.0, short_request_share=0.6),
            served_model("small", ["b"], cost=10.0)]),
    ]


@pytest.fixture(scope="module")
def recs():
    out = []
    for f in cases():
        f.setdefault("fleet", {"coverage_pct": 100.0})
        out.extend(recommend(f, S)["recommendations"])
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Real findings of a small store, to carry the generated recommendations."""
    from gpu_audit.analyze.findings import ReportRequest, build
    from storefix import series, write_samples

    store = str(tmp_path_factory.mktemp("shapes") / "s")
    write_samples(store, series("h", "GPU-1", H100, 0, 600, [0] * 6 + [50] * 6))
    return build(ReportRequest([store], str(ASSETS / "pricing.toml")))


def test_every_kind_and_variant_is_made(recs):
    kinds = {r["kind"] for r in recs}
    assert kinds == {"idle", "right_size", "mig", "consolidation", "batching", "quantization", "token_economics", "workload"}
    assert {r["savings_class"] for r in recs} == {"cash", "capacity", "behaviour"}
    variants = {r["evidence"].get("variant") for r in recs if r["kind"] == "idle"}
    assert variants == {"idle_empty", "idle_memory_held", "schedule"}
    levers = {r["targets"][0].get("lever") for r in recs if r["kind"] == "token_economics"}
    assert levers >= {"max_tokens", "prefix_cache", "routing", None}
    assert any("gpus_per_replica_bf16" in r["evidence"] for r in recs)
    assert any(r["evidence"].get("already_quantized") for r in recs)


def test_terminal_html_and_pdf_render_every_shape(recs, base, tmp_path):
    from gpu_audit.report.html import render_html
    from gpu_audit.report.terminal import render

    f = copy.deepcopy(base)
    f["recommendations"] = recs
    buf = io.StringIO()
    render(f, Console(file=buf, width=160, force_terminal=False))
    text = buf.getvalue()
    assert f"Recommendations ({len(recs)};" in text and "not shown" not in text  # every one listed
    assert all(r["kind"] in text for r in recs)
    html = render_html(f)
    assert html.count('class="rec ') == len(recs)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        from gpu_audit.report.pdf import html_to_pdf

        html_path, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
        html_path.write_text(html, encoding="utf-8")
        html_to_pdf(str(html_path), str(pdf), chromium)
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_each_optional_evidence_field_removed_still_renders(recs):
    from gpu_audit.report.blocks import Block
    from gpu_audit.report.html import environment

    env = environment(strict=True)
    card = env.get_template("blocks/recommendations.html.j2")
    by_kind: dict[str, list[dict]] = {}
    for r in recs:
        by_kind.setdefault(r["kind"], []).append(r)
    tried = 0
    for kind, group in by_kind.items():
        required = set.intersection(*(set(r["evidence"]) for r in group))
        for r in group:
            for key in sorted(set(r["evidence"]) - required):
                shape = copy.deepcopy(r)
                del shape["evidence"][key]
                card.render(block=Block("recommendations", data={"recs": [shape], "settings": {}}))
                tried += 1
    assert tried > 20


def test_readers_get_a_polite_report_when_a_field_is_missing(recs, base):
    from gpu_audit.report.blocks import Block
    from gpu_audit.report.html import environment

    shape = copy.deepcopy(next(r for r in recs if r["kind"] == "right_size"))
    shape.pop("action")  # not optional in the contract: strict templates fail on it, readers get the rest
    block = Block("recommendations", data={"recs": [shape], "settings": {}})
    with pytest.raises(Exception):
        environment(strict=True).get_template("blocks/recommendations.html.j2").render(block=block)
    html = environment(strict=False).get_template("blocks/recommendations.html.j2").render(block=block)
    import html as h

    assert h.escape(shape["title"], quote=False) in html and "Do:" in html
