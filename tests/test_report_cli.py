"""`report` and `prices` through the CLI: output, JSON, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ASSETS
from storefix import series, write_samples

PRICING = str(ASSETS / "pricing.toml")


@pytest.fixture
def store(tmp_path):
    s = str(tmp_path / "store")
    write_samples(s, series("h", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [50] * 6))
    return s


def test_report_writes_json_and_prints_the_summary(run_cli, store, tmp_path):
    out = tmp_path / "f.json"
    code, stdout, err = run_cli("report", store, "--pricing", PRICING, "--json", str(out))
    assert code == 0, err
    f = json.loads(out.read_text())
    assert f["schema_version"] == 1 and f["fleet"]["spend_usd"] == 3.0
    assert "$3.00" in stdout and "$1.50" in stdout  # spend, waste


@pytest.mark.parametrize("text,message", [
    ('currency = "EUR"\n', "pricing.toml:1: currency 'EUR' is not supported"),
    ('[gpu]\n"H100" = "three"\n', "pricing.toml:2: [gpu] 'H100': expected a price in $ per GPU-hour"),
    ('[gpu]\n"H100" = -1\n', "pricing.toml:2: [gpu] 'H100': expected a price"),
    ('[gpu\n', "pricing.toml: not valid TOML"),
    ('[cloud]\nx=1\n', "pricing.toml:1: unknown section or key 'cloud'"),
    ('[api."m"]\ninput_per_1m = 1\n', "pricing.toml:1: [api.'m'] output_per_1m: expected $ per 1M tokens"),
])
def test_malformed_pricing(run_cli, store, tmp_path, text, message):
    p = tmp_path / "pricing.toml"
    p.write_text(text)
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store, "--pricing", str(p), "--json", str(out))
    assert code == 2
    assert err.splitlines()[0].startswith("Error: ") and message in err.splitlines()[0], err
    assert not out.exists()


def test_token_log_with_broken_lines_is_counted_or_strict(run_cli, store, tmp_path):
    t = tmp_path / "t.jsonl"
    t.write_text('{"timestamp": 1795824100, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}\n'
                 '{not json\n\n'
                 '{"timestamp": "2026-11-28T00:10:00Z", "model": "m", "host": "h", "prompt_tokens": -1, "completion_tokens": 2}\n'
                 '{"created": 1795824200, "model": "m", "host": "h", "usage": {"prompt_tokens": 5, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 3}}}\n')
    out = tmp_path / "f.json"
    code, stdout, err = run_cli("report", store, "--pricing", PRICING, "--tokens", str(t), "--json", str(out))
    assert code == 0, err
    f = json.loads(out.read_text())
    rej = f["data_quality"]["rejected_token_records"]
    assert rej["count"] == 2
    assert rej["examples"][0].startswith(f"{t}:2: not JSON") and rej["examples"][1].startswith(f"{t}:4: prompt_tokens must be")
    assert f["models"][0]["completion_tokens"] == 9 and f["models"][0]["prompt_tokens"] == 6
    assert "rejected token records: 2" in stdout
    out.unlink()
    code, _, err = run_cli("report", store, "--pricing", PRICING, "--tokens", str(t), "--json", str(out), "--strict")
    assert code == 2 and err.startswith(f"Error: bad token record at {t}:2: not JSON") and not out.exists()


def test_token_csv_and_parquet(run_cli, store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = tmp_path / "t.csv"
    c.write_text("timestamp,model,host,prompt_tokens,completion_tokens\n2026-11-28T00:05:00,m,h,10,20\n2026-11-28T00:06:00,m,h,x,1\n")
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"timestamp": ["2026-11-28T00:07:00Z"], "model": ["m"], "host": ["h"], "prompt_tokens": [1], "completion_tokens": [2]}), p)
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store, "--pricing", PRICING, "--tokens", str(c), "--tokens", str(p), "--json", str(out))
    assert code == 0, err
    f = json.loads(out.read_text())
    assert f["models"][0]["completion_tokens"] == 22
    assert f["data_quality"]["rejected_token_records"]["examples"] == [f"{c}:3: could not convert string to float: 'x'"]


def test_csv_token_log_without_columns(run_cli, store, tmp_path):
    c = tmp_path / "t.csv"
    c.write_text("time,model\n1,m\n")
    code, _, err = run_cli("report", store, "--tokens", str(c))
    assert code == 2 and err.splitlines()[0] == f"Error: {c}:1: token log CSV lacks column(s) completion_tokens, host, prompt_tokens, timestamp"


@pytest.mark.parametrize("make,message", [
    (lambda tmp: str(tmp / "nope"), "Error: store not found: "),
    (lambda tmp: (os.makedirs(tmp / "empty"), str(tmp / "empty"))[1], "Error: no samples in "),
])
def test_missing_or_empty_store(run_cli, tmp_path, make, message):
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", make(tmp_path), "--json", str(out))
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) <= 2
    assert not out.exists()


def test_bad_window(run_cli, store):
    code, _, err = run_cli("report", store, "--since", "2026-11-29", "--until", "2026-11-28")
    assert code == 2 and err.startswith("Error: --since must be before --until")
    code, _, err = run_cli("report", store, "--since", "last tuesday")
    assert code == 2 and err.startswith("Error: --since: cannot read 'last tuesday' as a time")


def test_json_output_is_not_replaced_on_failure(run_cli, store, tmp_path):
    out = tmp_path / "f.json"
    out.write_text('{"previous": true}')
    code, _, _ = run_cli("report", store, "--pricing", str(tmp_path / "missing.toml"), "--json", str(out))
    assert code == 2 and json.loads(out.read_text()) == {"previous": True}


def test_prices(run_cli, tmp_path):
    # A long path (as on CI's checkout) must not wrap the rows: it is named once above the table.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    pricing = deep / "pricing.toml"
    pricing.write_text(Path(PRICING).read_text())
    code, out, _ = run_cli("prices", "--pricing", str(pricing))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"pricing file: {pricing}"
    h100 = next(line for line in lines if "│ H100 SXM" in line)
    assert "$3.00" in h100 and "[gpu]" in h100
    t4 = next(line for line in lines if "│ T4" in line)
    assert "$0.53" in t4 and "2026-Q1" in t4
    b200 = next(line for line in lines if "│ B200" in line)
    assert "N/A" in b200 and "unpriced" in b200


def test_fail_on(run_cli, tmp_path):
    from storefix import series, write_samples

    s = str(tmp_path / "idle")
    write_samples(s, series("h", "GPU-i", "NVIDIA L40S", 0, 600, [0] * 6 * 24))
    code, out, err = run_cli("report", s, "--pricing", PRICING, "--fail-on", "100")
    assert code == 1 and "exceed --fail-on $100.00" in err
    code, _, _ = run_cli("report", s, "--pricing", PRICING, "--fail-on", "1000000")
    assert code == 0


def test_a_damaged_store_file_names_the_file(run_cli, store, tmp_path):
    (victim,) = [p for p in Path(store).rglob("*.parquet")]
    victim.write_bytes(b"PAR1 not really parquet")
    out = tmp_path / "f.json"
    out.write_text('{"previous": true}')
    code, _, err = run_cli("report", store, "--json", str(out))
    assert code == 2 and err.splitlines()[0].startswith(f"Error: cannot read {victim}: ")
    assert "Traceback" not in err and json.loads(out.read_text()) == {"previous": True}


def test_memory_limit(run_cli, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("report", store, "--memory-limit", "lots")
    assert code == 2 and err.startswith("Error: --memory-limit: cannot read 'lots' as a size")
    code, _, err = run_cli("report", store, "--memory-limit", "1GB'; SELECT 1; --")  # never reaches SQL
    assert code == 2 and err.startswith("Error: --memory-limit: cannot read \"1GB'; SELECT 1; --\" as a size")
    code, _, err = run_cli("report", store, "--memory-limit", "100KB")
    assert code == 2 and err.startswith("Error: the analysis needs more memory than its limit (100KB)")
    assert "Hint: raise --memory-limit" in err
    code, _, _ = run_cli("report", store, "--memory-limit", "256MB")
    assert code == 0
    assert not (tmp_path / ".tmp").exists()  # DuckDB's default spill folder is never the working directory


def test_duckdb_spills_to_a_private_folder_that_goes_away():
    from gpu_audit.duck import session

    with session("64MB") as con:
        (folder,) = con.execute("SELECT current_setting('temp_directory')").fetchone()
        assert os.path.basename(folder).startswith("gpu-audit-duckdb-") and os.path.isdir(folder)
    assert not os.path.exists(folder)


def test_build_reports_every_stage_in_order(store):
    from gpu_audit.analyze.findings import ReportRequest, build, report_stages

    seen = []
    build(ReportRequest([store], PRICING, [], None, None), step=seen.append)
    assert seen == list(report_stages()) and len(seen) == 7


def test_a_terminal_only_report_imports_neither_plotly_nor_jinja2_nor_pandas(tmp_path):
    """Start-up (issue 21): the HTML's libraries load only for --html or --pdf; pandas only where token
    records, workloads or namespaces are split (the analysis after the scan is SQL)."""
    import subprocess
    import sys

    from storefix import series, write_samples

    write_samples(str(tmp_path / "s"), series("h", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [50] * 6))
    code = ("import sys; from gpu_audit.cli import run; rc = run(['report', sys.argv[1]]); "
            "print('LOADED', [m for m in ('plotly', 'jinja2', 'pandas') if m in sys.modules]); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout
