"""Scraping inference engines during collect: real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from conftest import ASSETS, SCENARIOS, read_table, shared_or_skip
from gpu_audit.collect.engines import parse_engine, scrape_once
from gpu_audit.collect.run import collect

TMPL = (ASSETS / "vllm_metrics.tmpl").read_text()


class Server:
    """A /metrics server in a thread. ``mode``: advance (counters grow per request), static, hang,
    500, garbage."""

    def __init__(self, mode: str = "advance", body: str | None = None) -> None:
        self.mode, self.body, self.hits = mode, body, 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                outer.hits += 1
                if outer.mode == "hang":
                    time.sleep(5)
                if outer.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if outer.mode == "garbage":
                    text = "this is { not prometheus\n\x00\x01"
                elif outer.body is not None:
                    text = outer.body
                else:
                    n = outer.hits
                    text = TMPL.replace("{running}", "4").replace("{prompt}", str(1000.0 * n)).replace("{gen}", f"{2.5e2 * n:e}")
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def make(*a, **k):
        s = Server(*a, **k)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def scenario(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text((SCENARIOS / "mixed-idle.toml").read_text().replace("[host]\n", '[host]\nstart = "2026-11-28T00:00:00Z"\n', 1))
    return str(p)


def test_aggregation_over_engines_and_cache_config():
    engine, (row,) = parse_engine(TMPL.replace("{running}", "4").replace("{prompt}", "10").replace("{gen}", "2.5e+01"))
    assert engine == "vllm" and row["model"] == "demo/model"
    assert row["prompt_tokens_total"] == 20 and row["generation_tokens_total"] == 50  # summed over DP engines
    assert row["requests_running"] == 8 and row["requests_waiting"] == 4
    assert row["kv_cache_usage_pct"] == pytest.approx(40)  # a ratio: averaged
    assert row["kv_capacity_tokens"] == 16 * 2452 and row["preemptions_total"] == 2


def test_sglang_ranks_are_not_double_counted():
    text = """# TYPE sglang:generation_tokens_total counter
sglang:generation_tokens_total{model_name="m",tp_rank="0"} 100
sglang:generation_tokens_total{model_name="m",tp_rank="1"} 100
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0"} 7
sglang:num_running_reqs{model_name="m",tp_rank="1"} 7
"""
    engine, (row,) = parse_engine(text)
    assert engine == "sglang" and row["generation_tokens_total"] == 100 and row["requests_running"] == 7


def test_openmetrics_with_eof_and_tgi_histograms():
    text = """# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{le="10.0"} 3
tgi_request_generated_tokens_bucket{le="+Inf"} 5
tgi_request_generated_tokens_count 5
tgi_request_generated_tokens_sum 1.25e3
# TYPE tgi_queue_size gauge
tgi_queue_size 2
# EOF
"""
    engine, (row,) = parse_engine(text)
    assert engine == "tgi" and row["generation_tokens_total"] == 1250 and row["requests_waiting"] == 2


def test_real_vllm_scrape(server):
    path = shared_or_skip("data/real/engine_metrics/hwrouter_vllm_qwen1.5-0.5b_idle.prom")
    s = server(body=path.read_text())
    (row,) = scrape_once(s.url, 2)
    assert row["engine"] == "vllm" and row["model"] == "Qwen/Qwen1.5-0.5B-Chat"
    assert row["generation_tokens_total"] == 0 and row["kv_capacity_tokens"] == 39232


def test_real_sglang_doc_sample(server):
    path = shared_or_skip("data/engine_metrics/sglang_production_metrics_doc_example.prom")
    s = server(body=path.read_text())
    (row,) = scrape_once(s.url, 2)
    assert row["engine"] == "sglang" and row["generation_tokens_total"] == 7557572 and row["requests_waiting"] == 2826


def test_virtual_collect_scrapes_every_tick_with_advancing_counters(server, tmp_path):
    good = server()
    bad = [server("500"), server("garbage")]
    out = str(tmp_path / "store")
    _, stats = collect(out, interval_s=60, duration_s=600, simulate=scenario(tmp_path), handle_signals=False,
                       scrape=[good.url] + [b.url for b in bad])
    eng = read_table(out, "engine").sort_by([("endpoint", "ascending"), ("ts", "ascending")]).to_pylist()
    ok = [r for r in eng if r["endpoint"] == good.url]
    assert len(ok) == 10 and all(r["error"] is None for r in ok)
    assert [r["prompt_tokens_total"] for r in ok] == [2000.0 * k for k in range(1, 11)]
    assert [r["ts"].timestamp() for r in ok] == [1795824000 + 60 * k for k in range(10)]
    assert ok[0]["engine"] == "vllm" and ok[0]["host"] == "mixed-01" and ok[0]["source"] == "scrape"
    errs = {r["endpoint"]: r["error"] for r in eng if r["error"]}
    assert errs[bad[0].url].startswith("scrape failed: ") and "500" in errs[bad[0].url]
    assert errs[bad[1].url].startswith("not Prometheus text") or "no inference-engine metrics" in errs[bad[1].url]
    assert stats.scrape_errors == 20 and stats.device_samples == 40


def test_a_hanging_or_vanishing_endpoint_never_delays_gpu_samples(server, tmp_path):
    hang = server("hang")
    gone = server()
    out = str(tmp_path / "store")
    t = threading.Timer(1.0, gone.stop)  # disappears mid-run
    t.start()
    t0 = time.monotonic()
    _, stats = collect(out, interval_s=0.2, duration_s=3, simulate=scenario(tmp_path), realtime=True, handle_signals=False,
                       scrape=[hang.url, gone.url])
    elapsed = time.monotonic() - t0
    assert stats.ticks == 15 and stats.skipped_ticks == 0 and elapsed < 4.5
    eng = read_table(out, "engine").to_pylist()
    from_gone = [r for r in eng if r["endpoint"] == gone.url]
    assert any(r["error"] is None for r in from_gone) and any(r["error"] for r in from_gone)
    assert all(r["error"] for r in eng if r["endpoint"] == hang.url)


def test_bad_scrape_url(run_cli, tmp_path):
    code, _, err = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "1m", "--out", str(tmp_path),
                           "--scrape", "localhost:8000/metrics")
    assert code == 2 and err.startswith("Error: --scrape: 'localhost:8000/metrics' is not an http(s) URL")
