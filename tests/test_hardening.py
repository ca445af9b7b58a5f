"""What broke under attack (issue: no traceback, no crash on any findings shape, no escape codes):
each case is one line with exit 2 (Ctrl-C: 130), or handled, never a traceback."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from conftest import ASSETS, SCENARIOS, read_table, fixed_start
from storefix import T0, series, write_samples

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"


def store_of(tmp_path, util=50):
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [util] * 6))
    return store


def one_line(code, err):
    assert code == 2, err
    assert "Traceback" not in err and err.strip().startswith("Error:")


@pytest.mark.parametrize("price", ["inf", "nan", "1e308", "-1"])
def test_a_price_that_is_not_a_finite_amount_is_refused(run_cli, tmp_path, price):
    p = tmp_path / "p.toml"
    p.write_text(f'[gpu]\n"H100" = {price}\n')
    code, _, err = run_cli("report", store_of(tmp_path), "--pricing", str(p), "--json", str(tmp_path / "f.json"))
    one_line(code, err)
    assert f"{p}:2" in err and not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("value", ["nan", "-5"])
def test_fail_on_that_could_never_fire_is_refused(run_cli, tmp_path, value):
    code, _, err = run_cli("report", store_of(tmp_path), "--pricing", PRICING, "--fail-on", value)
    one_line(code, err)
    assert "--fail-on" in err


@pytest.mark.parametrize("count", [10**30, 2**63 - 1, 10**9 + 1])
def test_a_token_count_beyond_any_request_is_a_rejected_record(run_cli, tmp_path, count):
    log = tmp_path / "t.jsonl"
    log.write_text(json.dumps({"timestamp": T0 + 60, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": count}) + "\n"
                   + json.dumps({"timestamp": T0 + 90, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 10}) + "\n")
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store_of(tmp_path), "--pricing", PRICING, "--tokens", str(log), "--json", str(out))
    assert code == 0, err
    f = json.loads(out.read_text())
    assert f["data_quality"]["rejected_token_records"]["count"] == 1
    assert f["models"][0]["completion_tokens"] == 10


def test_a_parquet_token_count_beyond_int64_is_rejected_not_an_overflow(run_cli, tmp_path):
    log = tmp_path / "t.parquet"
    pq.write_table(pa.table({"timestamp": [float(T0 + 60), float(T0 + 90)], "model": ["m", "m"], "host": ["h", "h"],
                             "prompt_tokens": [1, 1], "completion_tokens": pa.array([1e30, 10.0])}), log)
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store_of(tmp_path), "--pricing", PRICING, "--tokens", str(log), "--json", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())["data_quality"]["rejected_token_records"]["count"] == 1


def test_an_empty_jsonl_token_log_is_refused_like_an_empty_csv(run_cli, tmp_path):
    for name in ("t.jsonl", "t.csv"):
        (tmp_path / name).write_text("")
        code, _, err = run_cli("report", store_of(tmp_path), "--pricing", PRICING, "--tokens", str(tmp_path / name))
        one_line(code, err)


@pytest.mark.parametrize("scale", [1, 1000, 1_000_000])
def test_epoch_seconds_milliseconds_and_microseconds_in_a_token_log(tmp_path, scale):
    from gpu_audit.analyze.findings import ReportRequest, build

    log = tmp_path / "t.jsonl"
    log.write_text(json.dumps({"timestamp": int((T0 + 60) * scale), "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 10}) + "\n")
    f = build(ReportRequest([store_of(tmp_path)], PRICING, [str(log)]))
    assert f["data_quality"]["token_records_outside_window"] == 0 and f["models"][0]["completion_tokens"] == 10


def test_a_host_name_longer_than_dns_allows_is_refused_before_collecting(run_cli, tmp_path):
    code, _, err = run_cli("collect", "--simulate", fixed_start("mixed-idle.toml", tmp_path), "--duration", "1m", "--interval", "10s",
                           "--out", str(tmp_path / "s"), "--host", "x" * 10_000)
    one_line(code, err)
    assert "at most 253" in err and not (tmp_path / "s" / "samples").exists()


def test_a_long_host_name_within_dns_is_collected_whole(tmp_path):
    """230 characters: every flush failed (file name too long) and a 2 h run was lost. Now its folder
    name is shortened with a hash and every row keeps the whole name."""
    from gpu_audit.collect.run import collect

    host = "node-" + "a" * 225
    collect(str(tmp_path / "s"), interval_s=60, duration_s=1800, simulate=fixed_start("mixed-idle.toml", tmp_path), host=host,
            handle_signals=False)
    rows = read_table(tmp_path / "s", "samples")
    assert rows.num_rows > 0 and set(rows["host"].to_pylist()) == {host}


def test_compact_on_a_store_it_cannot_write_is_one_line(run_cli, tmp_path, monkeypatch):
    import errno

    from gpu_audit.store import compact

    def read_only(folder, now=None):
        raise OSError(errno.EROFS, "Read-only file system", folder)

    monkeypatch.setattr(compact, "remove_stale", read_only)
    code, _, err = run_cli("compact", store_of(tmp_path))
    one_line(code, err)
    assert "Read-only file system" in err


def test_compact_removes_stale_temp_and_probe_files(tmp_path):
    import os

    from gpu_audit.store.compact import compact_store

    store = store_of(tmp_path)
    folder = next(p for p in (tmp_path / "s" / "samples").glob("*/*"))
    stale, fresh, probe = folder / ".x.parquet.tmp", folder / ".y.parquet.tmp", tmp_path / "s" / ".probe-1-abc"
    for p in (stale, fresh, probe):
        p.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(probe, (old, old))
    compact_store(store)
    assert not stale.exists() and not probe.exists() and fresh.exists()


def test_ctrl_c_during_report_is_exit_130_one_line_and_no_output(run_cli, tmp_path, monkeypatch):
    from gpu_audit.analyze import findings

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(findings, "build", interrupted)
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store_of(tmp_path), "--pricing", PRICING, "--json", str(out))
    assert code == 130 and err.strip() == "interrupted: nothing was written" and not out.exists()


def test_a_query_interrupted_inside_duckdb_is_a_keyboard_interrupt():
    import duckdb

    from gpu_audit.duck import session

    with pytest.raises(KeyboardInterrupt):
        with session() as con:
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
    with pytest.raises(KeyboardInterrupt):
        with session() as con:
            raise RuntimeError("Query interrupted")


def test_utilization_stored_as_text_names_the_file(run_cli, tmp_path):
    store = store_of(tmp_path)
    folder = tmp_path / "s" / "samples" / "host=h" / "date=2026-11-28"
    pq.write_table(pa.table({"ts": pa.array([int((T0 + 30) * 1e6)], pa.timestamp("us", tz="UTC")), "host": ["h"], "uuid": ["GPU-a"],
                             "util_gpu_pct": ["50 %"], "interval_s": [1.0]}), folder / "foreign.parquet")
    code, _, err = run_cli("report", store, "--pricing", PRICING)
    one_line(code, err)
    assert "foreign.parquet" in err and "'util_gpu_pct'" in err


HOSTILE = "m\x1b]0;owned\x07\x1b[31mred\u202eevil"


def test_names_never_reach_the_terminal_or_the_page_raw(tmp_path):
    from gpu_audit.analyze.findings import ReportRequest, build
    from gpu_audit.report.html import render_html
    from gpu_audit.report.terminal import render

    log = tmp_path / "t.jsonl"
    log.write_text(json.dumps({"timestamp": T0 + 60, "model": HOSTILE, "host": "h", "prompt_tokens": 1, "completion_tokens": 10}) + "\n")
    f = build(ReportRequest([store_of(tmp_path)], PRICING, [str(log)]))
    buf = io.StringIO()
    render(f, Console(file=buf, width=200, force_terminal=True))
    text = buf.getvalue()
    assert "\x07" not in text and "]0;owned" not in text.replace("\\x1b]0;owned", "") and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in text and "\\u202e" in text
    html = render_html(f)
    assert "\u202e" not in html and "\x1b" not in html and "\\u202eevil" in html.replace("\\\\u202e", "\\u202e")


def test_a_very_long_model_name_is_cut_and_counted(tmp_path):
    from gpu_audit.analyze.findings import ReportRequest, build

    log = tmp_path / "t.jsonl"
    name = "m" * 100_000
    log.write_text(json.dumps({"timestamp": T0 + 60, "model": name, "host": "h", "prompt_tokens": 1, "completion_tokens": 10}) + "\n")
    f = build(ReportRequest([store_of(tmp_path)], PRICING, [str(log)]))
    (m,) = f["models"]
    assert m["model"] == "m" * 200 + "…[cut]" and f["data_quality"]["names_cut"] == 1
    assert len(json.dumps(f)) < 2_000_000


class Trickle(threading.Thread):
    """A /metrics endpoint that sends one byte every 0.2 s, forever (until stopped)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        outer = self
        self.stop = False

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                try:
                    while not outer.stop:
                        self.wfile.write(b"#")
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"

    def run(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.stop = True
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_trickling_scrape_times_out_as_an_error_row():
    from gpu_audit.collect.engines import scrape_once

    srv = Trickle()
    srv.start()
    try:
        t0 = time.monotonic()
        (row,) = scrape_once(srv.url, 1.0)
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert took < 2.0 and "within 1 s" in row["error"]


def test_a_gpm_failure_keeps_the_nvml_fields_of_the_sample(tmp_path, monkeypatch):
    from gpu_audit.collect import nvml
    from gpu_audit.collect.run import collect

    calls = {"n": 0}
    real = nvml.Nvml._gpm

    def flaky(self, d):
        calls["n"] += 1
        if calls["n"] % 2:
            raise nvml.DeviceError("GPM metrics: invalid argument (a clock step)")
        return real(self, d)

    monkeypatch.setattr(nvml.Nvml, "_gpm", flaky)
    collect(str(tmp_path / "s"), interval_s=60, duration_s=1800, simulate=fixed_start("h100-inference.toml", tmp_path), handle_signals=False)
    rows = read_table(tmp_path / "s", "samples").to_pylist()
    assert calls["n"] > 0 and all(r["error"] is None for r in rows)
    assert all(r["util_gpu_pct"] is not None and r["power_w"] is not None for r in rows)
    assert any(r["sm_active_pct"] is None for r in rows)
