"""report with engine data: counter deltas (resets included) as the token source; engine evidence."""

from __future__ import annotations

import pytest

from conftest import ASSETS
from findfix import device, findings
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import batching, quantization
from gpu_audit.store.writer import StoreWriter
from storefix import at, series, write_samples

PRICING = str(ASSETS / "pricing.toml")


def write_engine(store, rows):
    w = StoreWriter(store, "inf")
    for r in rows:
        w.add("engine", {"host": "inf", "endpoint": "http://127.0.0.1:8000/metrics", "engine": "vllm", "source": "scrape", **r})
    w.flush()


def test_engine_counters_are_the_token_source_with_resets(tmp_path):
    store = str(tmp_path / "s")
    write_samples(store, series("inf", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [40] * 12))
    # generation: 100 -> 300 (+200) | 50 (reset: +50) -> 150 (+100); hour 0: 200, hour 1: 150.
    write_engine(store, [
        {"ts": at(0), "model": "m", "generation_tokens_total": 100.0, "prompt_tokens_total": 1000.0, "requests_waiting": 2.0, "kv_cache_usage_pct": 30.0},
        {"ts": at(1800), "model": "m", "generation_tokens_total": 300.0, "prompt_tokens_total": 3000.0, "requests_waiting": 4.0, "kv_cache_usage_pct": 50.0},
        {"ts": at(3600), "model": "m", "generation_tokens_total": 50.0, "prompt_tokens_total": 500.0, "requests_waiting": 0.0, "kv_cache_usage_pct": 10.0},
        {"ts": at(5400), "model": "m", "generation_tokens_total": 150.0, "prompt_tokens_total": 1500.0, "requests_waiting": 2.0, "kv_cache_usage_pct": 30.0},
        {"ts": at(100), "model": None, "error": "scrape failed: timed out"},
    ])
    f = build(ReportRequest([store], PRICING, [], None, None))
    assert f["token_source"] == "engine counters"
    (m,) = f["models"]
    assert m["completion_tokens"] == 350 and m["prompt_tokens"] == 2000 + 500 + 1000
    assert m["cost_usd"] == pytest.approx(6.0)  # 2 h of an H100 at $3/h, all to the only model
    assert m["cost_per_1m_output_tokens"] == pytest.approx(6.0 / 350 * 1e6)
    assert m["engine"]["mean_requests_waiting"] == pytest.approx(2.0) and m["engine"]["mean_kv_cache_usage_pct"] == pytest.approx(30)
    assert m["hosts"] == ["inf"] and f["fleet"]["unattributed_usd"] == pytest.approx(0)


def test_token_logs_win_over_engine_counters(tmp_path):
    store = str(tmp_path / "s")
    write_samples(store, series("inf", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [40] * 6))
    write_engine(store, [{"ts": at(0), "model": "m", "generation_tokens_total": 1.0}, {"ts": at(60), "model": "m", "generation_tokens_total": 9.0}])
    t = tmp_path / "t.jsonl"
    t.write_text('{"timestamp": 1795824100, "model": "m", "host": "inf", "prompt_tokens": 1, "completion_tokens": 2}\n')
    f = build(ReportRequest([store], PRICING, [str(t)], None, None))
    assert f["token_source"] == "token logs" and f["models"][0]["completion_tokens"] == 2
    assert f["models"][0]["engine"]["scrapes"] == 2


def model(**engine):
    return {"model": "m", "hosts": ["inf"], "gpus": [], "cost_usd": 10.0, "prompt_tokens": 1, "completion_tokens": 1,
            "cost_per_1m_output_tokens": 1.0, "engine": engine}


def test_batching_capped_by_configuration():
    # Two GPUs whose hourly utilization peaks too high to free one, but requests wait with KV room.
    devs = [device("inf", "GPU-a", "NVIDIA H100 80GB HBM3", 3.0, [10] * 12 + [60] * 12, 70),
            device("inf", "GPU-b", "NVIDIA H100 80GB HBM3", 3.0, [10] * 12 + [60] * 12, 70)]
    (r,) = batching(findings(devs, 24, [model(mean_requests_waiting=3.0, p95_kv_cache_usage_pct=40.0)]), RecommendSettings())
    assert r.evidence["batch_capped_by_configuration"] and r.monthly_savings_usd == 0
    assert "--max-num-seqs" in r.action
    assert batching(findings(devs, 24, [model(mean_requests_waiting=3.0, p95_kv_cache_usage_pct=97.0)]), RecommendSettings()) == []


def test_quantization_from_preemptions_with_memory_to_spare():
    d = device("inf", "GPU-a", "NVIDIA H100 80GB HBM3", 3.0, [40] * 24, 56)  # 70 % memory
    (r,) = quantization(findings([d], 24, [model(preemptions=12.0, p95_kv_cache_usage_pct=99.0)]), RecommendSettings())
    assert r.evidence["kv_cache_full_or_preempting"]
    assert quantization(findings([d], 24, [model(preemptions=0.0, p95_kv_cache_usage_pct=50.0)]), RecommendSettings()) == []


def test_html_shows_engine_evidence(tmp_path):
    from gpu_audit.report.html import render_html

    store = str(tmp_path / "s")
    write_samples(store, series("inf", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [40] * 6))
    write_engine(store, [{"ts": at(0), "model": "m<x>", "generation_tokens_total": 1.0, "requests_running": 6.0, "kv_cache_usage_pct": 42.0},
                         {"ts": at(60), "model": "m<x>", "generation_tokens_total": 9.0, "requests_running": 8.0, "kv_cache_usage_pct": 44.0}])
    html = render_html(build(ReportRequest([store], PRICING, [], None, None)))
    assert 'id="engine-table"' in html and "<td>m&lt;x&gt;</td><td>vllm</td>" in html and "7.0 / 8" in html
