"""The analysis against answers computed by hand (docs/metrics.md has each definition)."""

from __future__ import annotations

import json

import pytest

from conftest import ASSETS
from gpu_audit.analyze.findings import ReportRequest, build
from storefix import T0, at, series, write_samples

PRICING = str(ASSETS / "pricing.toml")
H100, L4 = "NVIDIA H100 80GB HBM3", "NVIDIA L4"


def dev(f, uuid):
    return next(d for d in f["devices"] if d["uuid"] == uuid)


def model(f, name):
    return next(m for m in f["models"] if m["model"] == name)


def write_tokens(path, records):
    with open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def test_two_devices_two_hours_one_model_per_host(tmp_path):
    store = str(tmp_path / "store")
    # 10-minute samples over two hours. A ($3/h): 50 % then 0 %. B ($1/h): 100 % then 20 %.
    write_samples(store, series("host-a", "GPU-a", H100, 0, 600, [50] * 6 + [0] * 6)
                  + series("host-b", "GPU-b", L4, 0, 600, [100] * 6 + [20] * 6))
    toks = write_tokens(tmp_path / "t.jsonl", [
        {"timestamp": T0 + 100, "model": "m-a", "host": "host-a", "prompt_tokens": 3000, "completion_tokens": 1000},
        {"timestamp": T0 + 200, "model": "m-b", "host": "host-b", "prompt_tokens": 1000, "completion_tokens": 2000},
        {"timestamp": T0 + 4000, "model": "m-b", "host": "host-b", "prompt_tokens": 0, "completion_tokens": 500},
    ])
    f = build(ReportRequest([store], PRICING, [toks], None, None))
    a, b = dev(f, "GPU-a"), dev(f, "GPU-b")
    assert a["gpu_hours"] == pytest.approx(2) and a["spend_usd"] == pytest.approx(6)
    assert a["waste_usd"] == pytest.approx(3 * (1 * 0.5 + 1 * 1.0))  # 4.5
    assert a["idle_usd"] == pytest.approx(3) and a["idle_hours"] == pytest.approx(1)
    assert a["mean_util_pct"] == pytest.approx(25) and a["p95_util_pct"] == 50
    # 1 GiB of 80 GiB is 12.5 per mille; binned at 0.1 % of total, rounded down so that the p95 never
    # exceeds the peak: 12.
    assert a["p95_memory_bytes"] == pytest.approx(12 / 1000 * 80 * 2**30) and a["peak_memory_bytes"] == 2**30
    assert a["p95_memory_bytes"] <= a["peak_memory_bytes"]
    assert b["spend_usd"] == pytest.approx(2) and b["waste_usd"] == pytest.approx(0.8)
    assert b["idle_usd"] == 0 and b["mean_util_pct"] == pytest.approx(60) and b["p95_util_pct"] == 100
    fl = f["fleet"]
    assert fl["spend_usd"] == pytest.approx(8) and fl["waste_usd"] == pytest.approx(5.3)
    assert fl["idle_usd"] == pytest.approx(3) and fl["mean_util_pct"] == pytest.approx(42.5)
    assert fl["gpu_hours"] == pytest.approx(4) and fl["coverage_pct"] == pytest.approx(100)
    # Spend split: productive = 8 - 5.3; idle 3; under-used = waste - idle = 2.3. Utilization of spend 33.75 %.
    assert fl["spend_split"] == pytest.approx({"productive_usd": 2.7, "idle_usd": 3.0, "underused_usd": 2.3})
    assert fl["utilization_pct_of_spend"] == pytest.approx(100 * (1 - 5.3 / 8))
    assert fl["idle_hours"] == pytest.approx(1)
    assert f["window"]["hours"] == pytest.approx(2)
    # Host A's second hour has no tokens: it goes to the host's models by their window shares (all m-a).
    assert model(f, "m-a")["cost_usd"] == pytest.approx(6)
    assert model(f, "m-a")["cost_per_1m_output_tokens"] == pytest.approx(6 / 1000 * 1e6)
    assert model(f, "m-a")["cost_per_1m_tokens"] == pytest.approx(6 / 4000 * 1e6)
    assert model(f, "m-b")["cost_usd"] == pytest.approx(2)
    assert model(f, "m-b")["cost_per_1m_output_tokens"] == pytest.approx(800)
    assert model(f, "m-b")["cost_per_1m_tokens"] == pytest.approx(2 / 3500 * 1e6)
    assert fl["unattributed_usd"] == pytest.approx(0)
    assert f["token_source"] == "token logs"
    assert fl["cost_per_1m_output_tokens"] == pytest.approx(8 / (1000 + 2500) * 1e6)
    assert f["utilization_metric"] == "util_gpu_pct"


def test_shared_host_hours_without_tokens_and_unattributed(tmp_path):
    store = str(tmp_path / "store")
    H = 3600
    write_samples(store, series("host-a", "GPU-a", "NVIDIA A100-SXM4-80GB", 0, 1800, [40] * 6, )
                  + series("host-b", "GPU-b", L4, 0, 1800, [10] * 6))
    # host-a costs $7/h. Hour 0: m1 300 out, m2 100 out -> 75/25. Hour 1: only m2. Hour 2: none -> the
    # host's window shares (m1 300 : m2 300 -> 50/50). host-b has no tokens: its $3 are unattributed.
    toks = write_tokens(tmp_path / "t.jsonl", [
        {"timestamp": T0 + 10, "model": "m1", "host": "host-a", "prompt_tokens": 1, "completion_tokens": 300},
        {"timestamp": T0 + 20, "model": "m2", "host": "host-a", "prompt_tokens": 1, "completion_tokens": 100},
        {"timestamp": T0 + H + 5, "model": "m2", "host": "host-a", "prompt_tokens": 1, "completion_tokens": 200},
    ])
    f = build(ReportRequest([store], PRICING, [toks], None, None))
    assert model(f, "m1")["cost_usd"] == pytest.approx(7 * 0.75 + 7 * 0.5)
    assert model(f, "m2")["cost_usd"] == pytest.approx(7 * 0.25 + 7 + 7 * 0.5)
    assert f["fleet"]["unattributed_usd"] == pytest.approx(3)
    assert sum(m["cost_usd"] for m in f["models"]) + f["fleet"]["unattributed_usd"] == pytest.approx(f["fleet"]["spend_usd"])


def test_token_records_outside_the_window_or_from_unknown_hosts_are_counted(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("host-a", "GPU-a", H100, 0, 600, [50] * 6))
    toks = write_tokens(tmp_path / "t.jsonl", [
        {"timestamp": T0 + 10, "model": "m1", "host": "host-a", "prompt_tokens": 1, "completion_tokens": 10},
        {"timestamp": T0 + 7200, "model": "m1", "host": "host-a", "prompt_tokens": 1, "completion_tokens": 10},
        {"timestamp": T0 + 20, "model": "m1", "host": "host-z", "prompt_tokens": 1, "completion_tokens": 10},
    ])
    f = build(ReportRequest([store], PRICING, [toks], None, None))
    assert f["data_quality"]["token_records_outside_window"] == 1
    assert f["data_quality"]["token_records_unknown_host"] == 1
    assert model(f, "m1")["completion_tokens"] == 10


def test_mig_devices_are_billed_by_their_share(tmp_path):
    store = str(tmp_path / "store")
    name = "NVIDIA A100-SXM4-80GB"
    rows = series("h", "GPU-p", name, 0, 600, [None] * 6, mig_mode=True)
    rows += series("h", "MIG-3", name, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="3g.40gb", sm_active_pct=40.0)
    rows += series("h", "MIG-2", name, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="2g.20gb")
    write_samples(store, rows)
    f = build(ReportRequest([store], PRICING, [], None, None))
    m3, m2, p = dev(f, "MIG-3"), dev(f, "MIG-2"), dev(f, "GPU-p")
    assert m3["gpu_hours"] == pytest.approx(3 / 7) and m3["spend_usd"] == pytest.approx(3)
    assert m3["waste_usd"] == pytest.approx(3 * 0.6) and m3["utilization_metric"] == "sm_active_pct"
    assert m2["spend_usd"] == pytest.approx(2) and m2["waste_usd"] == 0 and m2["mean_util_pct"] is None
    # The parent is not billed itself; its 2 free slices of 7 are unallocated (idle and waste).
    assert p["unallocated_usd"] == pytest.approx(2) and p["spend_usd"] == pytest.approx(2) and p["idle_usd"] == pytest.approx(2)
    fl = f["fleet"]
    assert fl["spend_usd"] == pytest.approx(7) and fl["waste_usd"] == pytest.approx(1.8 + 2)
    assert fl["idle_usd"] == pytest.approx(2) and fl["unallocated_usd"] == pytest.approx(2) and fl["devices"] == 2
    assert [d["uuid"] for d in f["data_quality"]["devices_without_evidence"]] == ["MIG-2"]
    assert fl["waste_sm_active_usd"] == pytest.approx(1.8)
    assert fl["waste_util_on_sm_devices_usd"] == pytest.approx(1.8)  # there u is the SM activity itself


def test_unpriced_device_is_listed_never_free(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-x", "NVIDIA GeForce RTX 4090", 0, 600, [10] * 6)
                  + series("h", "GPU-y", L4, 0, 600, [10] * 6))
    f = build(ReportRequest([store], PRICING, [], None, None))
    x = dev(f, "GPU-x")
    assert x["spend_usd"] is None and x["price_per_hour"] is None
    assert f["data_quality"]["unpriced_devices"] == [{"host": "h", "uuid": "GPU-x", "name": "NVIDIA GeForce RTX 4090",
                                                      "why": "no price for this GPU model: add it to a pricing file ([gpu] or [host])"}]
    assert f["fleet"]["spend_usd"] == pytest.approx(1) and f["fleet"]["unpriced_gpu_hours"] == pytest.approx(1)


def test_host_price_wins_and_catalog_fills_in(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("special-host", "GPU-s", H100, 0, 600, [10] * 6)
                  + series("h", "GPU-t", "Tesla T4", 0, 600, [10] * 6))
    f = build(ReportRequest([store], PRICING, [], None, None))
    assert dev(f, "GPU-s")["price_per_hour"] == 10.0
    assert dev(f, "GPU-t")["price_per_hour"] == 0.53 and "catalog T4" in dev(f, "GPU-t")["price_source"]


def test_since_until_select_ts_in_half_open_window(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [10] * 6 + [50] * 6 + [90] * 6))
    f = build(ReportRequest([store], PRICING, [], "2026-11-28T01:00:00Z", "2026-11-28T02:00:00Z"))
    a = dev(f, "GPU-a")
    assert a["gpu_hours"] == pytest.approx(1) and a["mean_util_pct"] == pytest.approx(50)
    assert f["window"] == {"start": "2026-11-28T01:00:00Z", "end": "2026-11-28T02:00:00Z", "hours": 1.0}


def test_coverage_and_gaps(tmp_path):
    store = str(tmp_path / "store")
    # One hour of 60 s samples with 20 minutes missing (the collector billed the gap's first sample one
    # interval): 40 samples -> 40 minutes covered out of 60.
    rows = series("h", "GPU-a", H100, 0, 60, [30] * 20) + series("h", "GPU-a", H100, 2400, 60, [30] * 20)
    write_samples(store, rows)
    f = build(ReportRequest([store], PRICING, [], "2026-11-28T00:00:00Z", "2026-11-28T01:00:00Z"))
    assert dev(f, "GPU-a")["coverage_pct"] == pytest.approx(100 * 40 / 60)
    assert f["data_quality"]["gaps"][0]["missing_hours"] == pytest.approx(20 / 60)
    assert dev(f, "GPU-a")["spend_usd"] == pytest.approx(3 * 40 / 60)  # missing coverage is not billed


def test_idle_below_threshold(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [4, 5, 6, 9, 10, 11]))
    assert dev(build(ReportRequest([store], PRICING, [], None, None)), "GPU-a")["idle_hours"] == pytest.approx(1 / 6)
    assert dev(build(ReportRequest([store], PRICING, [], None, None, idle_below=10)), "GPU-a")["idle_hours"] == pytest.approx(4 / 6)


def test_older_schema_files_are_read(tmp_path):
    """A file without the newer columns (as an earlier schema version wrote it) reads as nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "store" / "samples" / "host=h" / "date=2026-11-28"
    folder.mkdir(parents=True)
    old = pa.table({"ts": pa.array([at(0), at(600)], pa.timestamp("us", tz="UTC")), "host": ["h", "h"],
                    "uuid": ["GPU-o", "GPU-o"], "name": [H100, H100], "util_gpu_pct": pa.array([20.0, 40.0], pa.float32()),
                    "interval_s": pa.array([600.0, 600.0], pa.float32())})
    pq.write_table(old, folder / "old.parquet")
    write_samples(str(tmp_path / "store"), series("h", "GPU-n", H100, 0, 600, [60, 60]))
    f = build(ReportRequest([str(tmp_path / "store")], PRICING, [], None, None))
    assert dev(f, "GPU-o")["mean_util_pct"] == pytest.approx(30) and dev(f, "GPU-o")["peak_memory_bytes"] is None
    assert dev(f, "GPU-n")["mean_util_pct"] == pytest.approx(60)


@pytest.mark.parametrize("host", ["inf", "2026", "1.5", "true", "2026-11-28"])
def test_host_names_that_look_like_values_stay_strings(tmp_path, host):
    """host=<name> folders must not be type-inferred (DuckDB read `host=inf` as a DATE once)."""
    store = str(tmp_path / "store")
    write_samples(store, series(host, "GPU-a", H100, 0, 600, [50] * 6))
    f = build(ReportRequest([store], PRICING, [], None, None))
    assert [d["host"] for d in f["devices"]] == [host]


def test_large_fleets_write_hourly_series_per_host(tmp_path, monkeypatch):
    from gpu_audit.analyze import findings as fmod

    monkeypatch.setattr(fmod, "AGGREGATE_ABOVE", 1)
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [20] * 6) + series("h", "GPU-b", H100, 0, 600, [60] * 3 + [None] * 3))
    f = build(ReportRequest([store], PRICING, [], None, None))
    assert f["series"]["device_hourly_level"] == "host"
    (row,) = f["series"]["device_hourly"]["rows"]
    cols = f["series"]["device_hourly"]["columns"]
    r = dict(zip(cols, row))
    # a: 20 % over 3600 s; b: 60 % over 1800 s of evidence -> (20*3600 + 60*1800) / 5400 = 33.33 %
    assert r["uuid"] == "*" and r["mean_util_pct"] == pytest.approx((20 * 3600 + 60 * 1800) / 5400)
    assert r["spend_usd"] == pytest.approx(6.0) and r["covered_s"] == 7200


def test_hourly_series_has_no_nan_for_the_rules(tmp_path):
    import math

    from gpu_audit.analyze.engine import AnalyzeSettings, analyze
    from gpu_audit.analyze.pricing import load_pricing

    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-x", "NVIDIA GeForce RTX 4090", 0, 600, [None] * 6))  # unpriced, no evidence
    f = analyze([store], load_pricing(PRICING), None, AnalyzeSettings())
    (row,) = f["series"]["device_hourly"]["rows"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in row)
    assert row[3] is None and row[5] is None


def test_parquet_token_logs_with_different_dictionaries_and_a_bad_row(tmp_path):
    """Two Parquet logs (each with its own dictionary of models; one with large_string columns and a bad
    row) read as one log: one host, $3/h for one hour, output tokens m-a 300 and m-b 100. m-b's record
    names GPU-a, so GPU-a is m-b's (device level); m-a's records name no GPU and are split over the
    host's GPUs that no gpu_uuid record claims: none (DESIGN.md "Cost per model")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 6))
    pq.write_table(pa.table({"timestamp": pa.array([(T0 + 60) * 1e6, (T0 + 120) * 1e6]).cast(pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                             "model": ["m-a", "m-a"], "host": ["h", "h"], "prompt_tokens": [10, 20],
                             "completion_tokens": [100, 200], "request_id": ["r1", "r2"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"created": [T0 + 180, T0 + 240], "model": pa.array(["m-b", "m-b"], pa.large_string()),
                             "host": pa.array(["h", "h"], pa.large_string()), "prompt_tokens": [5, 7],
                             "completion_tokens": [100, -1], "gpu_uuid": ["GPU-a", None]}), tmp_path / "b.parquet")
    f = build(ReportRequest([store], PRICING, [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], None, None))
    a, b = model(f, "m-a"), model(f, "m-b")
    assert (a["prompt_tokens"], a["completion_tokens"], b["prompt_tokens"], b["completion_tokens"]) == (30, 300, 5, 100)
    assert a["cost_usd"] == 0 and b["cost_usd"] == pytest.approx(3.0)
    assert (a["attribution"], b["attribution"]) == ("host", "device")
    assert b["cost_per_1m_output_tokens"] == pytest.approx(3.0 / 100 * 1e6)
    assert b["gpus"] == ["GPU-a"] and a["gpus"] == []
    rej = f["data_quality"]["rejected_token_records"]
    assert rej["count"] == 1 and rej["examples"] == [f"{tmp_path / 'b.parquet'}:2: a missing field, a negative token count or a time before 2000 or after tomorrow"]


def test_rows_with_a_read_error_are_billed_without_utilization_and_listed(tmp_path):
    # $3/h H100, 10-minute samples: 4 read at 40 %, then 2 that could not be read (GPU lost).
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [40] * 4)
                  + series("h", "GPU-a", H100, 2400, 600, [None] * 2, error="GPU is lost"))
    f = build(ReportRequest([store], PRICING, [], None, None))
    d = dev(f, "GPU-a")
    assert d["spend_usd"] == pytest.approx(3.0)                 # every row is billed
    assert d["waste_usd"] == pytest.approx(3.0 * 4 / 6 * 0.6)   # only rows with evidence: 1.20
    assert d["mean_util_pct"] == pytest.approx(40) and d["idle_usd"] == 0
    assert d["error_hours"] == pytest.approx(1 / 3) and d["coverage_pct"] == pytest.approx(100)
    assert f["data_quality"]["devices_with_read_errors"] == [
        {"host": "h", "uuid": "GPU-a", "name": H100, "error_hours": pytest.approx(1 / 3)}]
    from rich.console import Console

    from gpu_audit.report.terminal import render

    c = Console(width=200, record=True)
    render(f, c)
    assert f"read errors: h {H100} (GPU-a): 0.3 h of samples could not be read" in c.export_text()


def test_cost_per_kubernetes_namespace_by_hand_and_after_a_rollup(tmp_path):
    """GPU-a ($3/h): 30 min at 50 % for team-a, then 30 min at 0 % for team-b. GPU-b ($1/h): 1 h at 100 %,
    no namespace. team-a: spend 1.5, waste 3 x 0.5 h x 0.5 = 0.75, idle 0; team-b: spend 1.5, waste 1.5,
    idle 1.5; no namespace: spend 1, waste 0, idle 0. A rollup to minutes keeps the namespaces."""
    from datetime import datetime, timezone

    from gpu_audit.store.rollup import rollup

    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 3, k8s_namespace="team-a", k8s_pod="p-1")
                  + series("h", "GPU-a", H100, 1800, 600, [0] * 3, k8s_namespace="team-b", k8s_pod="p-2")
                  + series("h", "GPU-b", L4, 0, 600, [100] * 6))
    expect = [
        {"namespace": "team-a", "devices": 1, "gpu_hours": 0.5, "spend_usd": 1.5, "waste_usd": 0.75, "idle_usd": 0.0},
        {"namespace": "team-b", "devices": 1, "gpu_hours": 0.5, "spend_usd": 1.5, "waste_usd": 1.5, "idle_usd": 1.5},
        {"namespace": None, "devices": 1, "gpu_hours": 1.0, "spend_usd": 1.0, "waste_usd": 0.0, "idle_usd": 0.0},
    ]
    f = build(ReportRequest([store], PRICING, [], None, None))
    assert f["namespaces"] == [{k: pytest.approx(v) if isinstance(v, float) else v for k, v in e.items()} for e in expect]
    assert sum(n["spend_usd"] for n in f["namespaces"]) == pytest.approx(f["fleet"]["spend_usd"])
    from rich.console import Console

    from gpu_audit.report.html import render_html
    from gpu_audit.report.terminal import render

    c = Console(width=200, record=True)
    render(f, c)
    text = c.export_text()
    assert "Kubernetes namespaces" in text and any(ln.split() == ["│", "team-b", "│", "1", "│", "0.5", "│", "$1.50", "│", "$1.50", "│", "$1.50", "│"]
                                                   for ln in text.splitlines())
    page = render_html(f)
    assert 'id="namespace-table"' in page and ">team-a</td>" in page and "(none)" in page
    f["namespaces"][0]["namespace"] = "<img src=x onerror=alert(1)>"  # a namespace is user input
    page = render_html(f)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    rollup(store, 0, 60, now=datetime(2026, 11, 29, 0, 0, 1, tzinfo=timezone.utc))
    assert not list((tmp_path / "store" / "samples").rglob("*.parquet"))  # read from the rollups now
    after = build(ReportRequest([store], PRICING, [], None, None))["namespaces"]
    assert [(n["namespace"], n["devices"]) for n in after] == [(e["namespace"], e["devices"]) for e in expect]
    for a, e in zip(after, expect):
        for k in ("gpu_hours", "spend_usd", "waste_usd", "idle_usd"):
            assert a[k] == pytest.approx(e[k], abs=1e-9), (a["namespace"], k)


def test_no_namespace_in_the_store_means_no_namespace_list(tmp_path):
    store = str(tmp_path / "store")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 6))
    assert build(ReportRequest([store], PRICING, [], None, None))["namespaces"] == []


def test_cost_per_model_at_device_level_where_the_logs_name_the_gpu(tmp_path):
    """One host, three H100s at $3/h for one hour: GPU-a serves m-a (1,000 output tokens), GPU-b serves
    m-b (10), GPU-c idles. Each model costs exactly its GPU ($3); the idle GPU is nobody's ($3
    unattributed). At host level (no gpu_uuid) the same tokens would split $9 by 1000:10."""
    store = str(tmp_path / "store")
    write_samples(store, series("inf", "GPU-a", H100, 0, 600, [50] * 6) + series("inf", "GPU-b", H100, 0, 600, [50] * 6)
                  + series("inf", "GPU-c", H100, 0, 600, [0] * 6))
    recs = [{"timestamp": T0 + 60, "model": "m-a", "host": "inf", "prompt_tokens": 100, "completion_tokens": 1000, "gpu_uuid": "GPU-a"},
            {"timestamp": T0 + 120, "model": "m-b", "host": "inf", "prompt_tokens": 100, "completion_tokens": 10, "gpu_uuid": "GPU-b"}]
    f = build(ReportRequest([store], PRICING, [write_tokens(tmp_path / "t.jsonl", recs)], None, None))
    a, b = model(f, "m-a"), model(f, "m-b")
    assert a["cost_usd"] == pytest.approx(3.0) and b["cost_usd"] == pytest.approx(3.0)
    assert a["attribution"] == b["attribution"] == "device"
    assert f["fleet"]["unattributed_usd"] == pytest.approx(3.0)
    assert b["cost_per_1m_output_tokens"] == pytest.approx(3.0 / 10 * 1e6)
    # the token_economics card quotes m-b's own GPU (50 %), not the host's mean (33 %)
    (te,) = [r for r in f["recommendations"] if r["kind"] == "token_economics" and r["targets"][0]["model"] == "m-b"
             and r["evidence"].get("api")]
    assert te["evidence"]["serving_util_pct"] == pytest.approx(50.0)
    host = build(ReportRequest([store], PRICING, [write_tokens(tmp_path / "h.jsonl", [{k: v for k, v in r.items() if k != "gpu_uuid"} for r in recs])],
                 None, None))
    assert model(host, "m-a")["cost_usd"] == pytest.approx(9 * 1000 / 1010) and model(host, "m-a")["attribution"] == "host"
