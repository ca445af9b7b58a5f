"""One reading per device and instant, values checked where they enter, and invisible is not idle
(DESIGN.md; docs/metrics.md "Integrity of the evidence"). Every case is compared with the figures of
the clean single import, computed by hand: a log of 60 one-minute samples of one H100 ($3.00/h)
at 50 % is 1 GPU-hour, $3.00 spend, $1.50 waste."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ASSETS, read_table, shared_or_skip
from storefix import at, series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.store.schema import SAMPLES, with_version

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"
T0 = datetime(2026, 11, 28, tzinfo=timezone.utc)
HEADER = "timestamp, uuid, name, utilization.gpu [%], memory.used [MiB]\n"


def line(k: int, util: int = 50, uuid: str = "GPU-a") -> str:
    return f"{T0 + timedelta(minutes=k):%Y/%m/%d %H:%M:%S}.000, {uuid}, {H100}, {util} %, 1024 MiB\n"


def log(path, ks, **kw) -> str:
    path.write_text(HEADER + "".join(line(k, **kw) for k in ks))
    return str(path)


def report(store: str, **kw):
    return build(ReportRequest([store], PRICING, [], None, None, **kw))


def dev(f, uuid="GPU-a"):
    return next(d for d in f["devices"] if d["uuid"] == uuid)


def assert_clean(f, hours=1.0):
    d = dev(f)
    assert d["gpu_hours"] == pytest.approx(hours) and d["spend_usd"] == pytest.approx(3.0 * hours)
    assert d["waste_usd"] == pytest.approx(1.5 * hours) and d["coverage_pct"] <= 100.0
    assert f["fleet"]["spend_usd"] == pytest.approx(3.0 * hours)


def imp(run_cli, store, *files, extra=()):
    return run_cli("import", "nvidia-smi", *files, "--host", "n1", "--tz", "UTC", "--out", store, *extra)


# -- imports are idempotent ----------------------------------------------------------------------

def test_the_same_log_imported_twice_is_stored_once(run_cli, tmp_path):
    store, f = str(tmp_path / "s"), log(tmp_path / "a.csv", range(60))
    assert imp(run_cli, store, f)[0] == 0
    code, out, err = imp(run_cli, store, f)
    assert code == 2 and "nothing imported" in err and "the same content as" in err  # known by its content hash
    shutil.rmtree(tmp_path / "s" / "imports")  # without the ledger, each (device, instant) is still stored once
    code, out, err = imp(run_cli, store, f)
    assert code == 2 and "nothing imported" in err and "all 60 rows are already in the store" in err
    assert read_table(store, "samples").num_rows == 60
    assert_clean(report(store))


def test_a_grown_log_imported_again_adds_only_the_new_rows(run_cli, tmp_path):
    store = str(tmp_path / "s")
    assert imp(run_cli, store, log(tmp_path / "a.csv", range(30)))[0] == 0
    code, out, _ = imp(run_cli, store, log(tmp_path / "a.csv", range(60)))
    assert code == 0 and "imported 30 rows" in out and "30 rows already in the store (skipped)" in out
    assert read_table(store, "samples").num_rows == 60
    assert_clean(report(store))


@pytest.mark.parametrize("order", [list(range(59, -1, -1)), list(range(30, 60)) + list(range(30)),
                                   [k for k in range(60) for _ in (0, 1)]],
                         ids=["descending", "time-goes-back", "each-instant-twice"])
def test_input_order_and_duplicate_instants_never_matter(run_cli, tmp_path, order):
    store = str(tmp_path / "s")
    code, out, _ = imp(run_cli, store, log(tmp_path / "a.csv", order))
    assert code == 0 and "imported 60 rows" in out
    if len(order) > 60:
        assert "60 duplicate instants in the file (kept once)" in out
    rows = read_table(store, "samples").to_pylist()
    assert sorted(r["interval_s"] for r in rows) == [60.0] * 60  # no 0 s and no negative gaps
    f = report(store)
    assert_clean(f)
    assert not any("single" in (x.get("why") or "") for x in f["data_quality"]["devices_without_evidence"])


def test_an_import_resumed_after_a_full_disk_equals_one_clean_import(run_cli, tmp_path, monkeypatch):
    from gpu_audit.sources import nvidia_smi
    from gpu_audit.store import writer
    from gpu_audit.store.writer import StoreError

    store, f = str(tmp_path / "s"), log(tmp_path / "a.csv", range(60))
    real, calls = writer.write_parquet_atomic, []

    def full_disk(table, path, **kw):
        calls.append(path)
        if len(calls) > 2:
            raise StoreError(f"cannot write {path}: the disk is full")
        real(table, path, **kw)

    monkeypatch.setattr(nvidia_smi, "FLUSH_ROWS", 20)
    monkeypatch.setattr(writer, "write_parquet_atomic", full_disk)
    code, _, err = imp(run_cli, store, f)
    assert code == 2 and "the disk is full" in err
    assert read_table(store, "samples").num_rows == 40  # two flushes made it
    monkeypatch.setattr(writer, "write_parquet_atomic", real)
    code, out, _ = imp(run_cli, store, f)
    assert code == 0 and "imported 20 rows" in out and "40 rows already in the store" in out
    assert_clean(report(store))


def test_prometheus_text_imported_twice_is_stored_once(run_cli, tmp_path):
    scrape = tmp_path / "s.prom"
    scrape.write_text('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"} 50\n')
    store = str(tmp_path / "s")
    args = ("import", "prometheus-text", str(scrape), "--out", store, "--at", "2026-11-28T00:00:00Z", "--interval", "60s")
    assert run_cli(*args)[0] == 0
    code, _, err = run_cli(*args)
    assert code == 2 and "the same content as" in err
    assert read_table(store, "samples").num_rows == 1


# -- the analyzer counts each (host, uuid, ts) once -----------------------------------------------

def test_duplicate_rows_in_the_store_are_counted_once(tmp_path):
    """The same rows written twice (a log imported twice by an older version, a retried flush)."""
    store = str(tmp_path / "s")
    rows = series("n1", "GPU-a", H100, 0, 60, [50] * 60)
    write_samples(store, rows)
    write_samples(store, rows)
    f = report(store)
    assert_clean(f)
    (q,) = f["data_quality"]["duplicate_or_overlapping_samples"]
    assert q["duplicate_rows"] == 60 and q["overlap_hours"] == pytest.approx(0)


def test_overlapping_series_at_different_offsets_bill_wall_time(tmp_path):
    """Two series of one device at 60 s, 30 s apart, over one hour: 120 samples that stand for 7,200 s
    as written. Each sample is cut to the gap since the previous one: 60 + 119 x 30 = 3,630 s, the
    wall time from the first sample's start (-60 s) to the last (3,570 s)."""
    store = str(tmp_path / "s")
    write_samples(store, series("n1", "GPU-a", H100, 0, 60, [50] * 60))
    write_samples(store, series("n1", "GPU-a", H100, 30, 60, [50] * 60))
    f = report(store)
    d = dev(f)
    assert d["gpu_hours"] == pytest.approx(3630 / 3600) and d["spend_usd"] == pytest.approx(3.0 * 3630 / 3600)
    assert d["coverage_pct"] <= 100.0
    (q,) = f["data_quality"]["duplicate_or_overlapping_samples"]
    assert q["duplicate_rows"] == 0 and q["overlap_hours"] == pytest.approx((7200 - 3630) / 3600)


def test_a_clean_store_is_not_flagged(tmp_path):
    """Back-to-back runs (the second starts one interval after the first ends) are no overlap."""
    store = str(tmp_path / "s")
    write_samples(store, series("n1", "GPU-a", H100, 0, 60, [50] * 30))
    write_samples(store, series("n1", "GPU-a", H100, 1800, 60, [50] * 30))
    f = report(store)
    assert_clean(f)
    assert f["data_quality"]["duplicate_or_overlapping_samples"] == []


def test_a_retried_flush_across_midnight_writes_each_row_once(tmp_path, monkeypatch):
    """180 samples at 10 s from 23:45 to 00:15: the first flush writes the first day, fails on the
    second (disk full); the retry writes only the second day. 0.5 GPU-hours, not 0.664."""
    from gpu_audit.store import writer as wmod
    from gpu_audit.store.writer import StoreError, StoreWriter

    store = str(tmp_path / "s")
    w = StoreWriter(store, "n1")
    start = datetime(2026, 11, 28, 23, 45, tzinfo=timezone.utc)
    for k in range(180):
        w.add("samples", {"ts": start + timedelta(seconds=10 * k), "host": "n1", "uuid": "GPU-a", "name": H100,
                          "util_gpu_pct": 50.0, "interval_s": 10.0, "source": "nvml"})
    real = wmod.write_parquet_atomic
    calls = []

    def fail_second(table, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise StoreError("cannot write: the disk is full")
        real(table, path, **kw)

    monkeypatch.setattr(wmod, "write_parquet_atomic", fail_second)
    with pytest.raises(StoreError):
        w.flush()
    assert w.pending("samples") == 90
    w.flush()
    assert read_table(store, "samples").num_rows == 180
    f = report(store)
    assert dev(f)["gpu_hours"] == pytest.approx(0.5)
    assert f["data_quality"]["duplicate_or_overlapping_samples"] == []


# -- values are checked where they enter ----------------------------------------------------------

def _write_raw(store, host, name, table: pa.Table, date="2026-11-28"):
    folder = tmp = f"{store}/samples/host={host}/date={date}"
    import os

    os.makedirs(tmp, exist_ok=True)
    pq.write_table(table, f"{folder}/{name}.parquet")
    return f"{folder}/{name}.parquet"


def _raw(n=60, **cols):
    base = {"ts": pa.array([int((T0 + timedelta(minutes=k)).timestamp() * 1e6) for k in range(n)], pa.timestamp("us", tz="UTC")),
            "host": ["n1"] * n, "uuid": ["GPU-a"] * n, "name": [H100] * n, "util_gpu_pct": pa.array([50.0] * n, pa.float32()),
            "interval_s": pa.array([60.0] * n, pa.float32()), "source": ["nvml"] * n}
    base.update(cols)
    return pa.table({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("col,bad", [("interval_s", -60.0), ("interval_s", float("nan")), ("interval_s", float("inf")),
                                     ("util_gpu_pct", 250.0), ("util_gpu_pct", -20.0), ("util_gpu_pct", float("nan"))])
def test_rows_out_of_range_reach_no_sum_and_are_counted_with_the_file(tmp_path, col, bad):
    """60 good rows and 10 bad ones: the figures are those of the 60."""
    store = str(tmp_path / "s")
    _write_raw(store, "n1", "good", _raw())
    t = _raw(10)
    t = t.set_column(t.schema.get_field_index("ts"), "ts", pa.array(
        [int((T0 + timedelta(minutes=k, seconds=30)).timestamp() * 1e6) for k in range(10)], pa.timestamp("us", tz="UTC")))
    t = t.set_column(t.schema.get_field_index(col), col, pa.array([bad] * 10, pa.float32()))
    path = _write_raw(store, "n1", "bad", t)
    f = report(store)
    assert_clean(f)
    (r,) = f["data_quality"]["rejected_samples"]
    assert r["file"].endswith("bad.parquet") and r["rows"] == 10 and path.endswith("bad.parquet")


@pytest.mark.parametrize("drop", ["ts", "uuid", "interval_s"])
def test_a_store_file_without_a_required_column_is_named(run_cli, tmp_path, drop):
    store = str(tmp_path / "s")
    _write_raw(store, "n1", "good", _raw())
    _write_raw(store, "n1", "foreign", _raw(**{drop: None}), date="2026-11-29")
    code, _, err = run_cli("report", store, "--pricing", PRICING, "--json", str(tmp_path / "f.json"))
    assert code == 2 and "foreign.parquet" in err and f"'{drop}'" in err and "Traceback" not in err
    assert not (tmp_path / "f.json").exists()


def test_host_from_the_partition_folder_when_a_file_lacks_it(tmp_path):
    store = str(tmp_path / "s")
    _write_raw(store, "n%2F1", "nohost", _raw(host=None))
    f = report(store)
    assert dev(f)["host"] == "n/1"
    assert_clean(f)


def test_import_rejects_utilization_out_of_range_with_the_line(run_cli, tmp_path):
    store = str(tmp_path / "s")
    p = tmp_path / "a.csv"
    p.write_text(HEADER + "".join(line(k) for k in range(60)) + line(61, util=250))
    code, out, _ = imp(run_cli, store, str(p))
    assert code == 0 and f"{p}:62: utilization.gpu: 250 % is outside 0-100 %" in out
    assert_clean(report(store))


@pytest.mark.parametrize("value", ["-60s", "0s"])
def test_import_refuses_a_non_positive_interval(run_cli, tmp_path, value):
    code, _, err = imp(run_cli, str(tmp_path / "s"), log(tmp_path / "a.csv", range(3)), extra=("--interval", value))
    assert code == 2 and "--interval" in err and "Traceback" not in err


def test_an_import_of_only_bad_lines_exits_2(run_cli, tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(HEADER + line(0, util=250))
    code, _, err = imp(run_cli, str(tmp_path / "s"), str(p))
    assert code == 2 and "every row was rejected" in err and ":2:" in err


# -- MIG: invisible is not idle -------------------------------------------------------------------

MIG_CSV = "timestamp, uuid, name, utilization.gpu [%], memory.used [MiB], power.draw [W], mig.mode.current\n"


def test_a_mig_gpu_from_nvidia_smi_csv_is_billed_with_no_claim(run_cli, tmp_path):
    p = tmp_path / "mig.csv"
    p.write_text(MIG_CSV + "".join(f"{T0 + timedelta(minutes=k):%Y/%m/%d %H:%M:%S}.000, GPU-m, {H100}, [N/A], 11125 MiB, 433.78 W, Enabled\n"
                                   for k in range(120)))
    store = str(tmp_path / "s")
    assert imp(run_cli, store, str(p))[0] == 0
    f = report(store)
    d = dev(f, "GPU-m")
    # Billed as a whole GPU for 2 h, with no evidence: no waste, idle or unallocated claim.
    assert d["spend_usd"] == pytest.approx(6.0) and d["gpu_hours"] == pytest.approx(2.0)
    assert not d["waste_usd"] and not d["idle_usd"] and not d["unallocated_usd"] and d["mig_instances_visible"] is False
    assert f["fleet"]["idle_usd"] == 0 and f["fleet"]["unallocated_usd"] == 0 and f["fleet"]["devices"] == 1
    assert f["recommendations"] == []
    (why,) = [x["why"] for x in f["data_quality"]["devices_without_evidence"] if x["uuid"] == "GPU-m"]
    assert "MIG instances are not visible in nvidia-smi CSV" in why and "DCGM" in why


def test_a_dcgm_mig_gpu_at_instants_without_instance_series_is_not_idle(tmp_path):
    """Hour 1: the parent and a 3g instance at 60 %; hour 2: the parent alone (the GPU_I series are
    gone). Hour 1 bills the instance (3/7) and 4/7 unallocated; hour 2 the whole GPU, no evidence."""
    store = str(tmp_path / "s")
    parent = series("n1", "GPU-p", H100, 0, 60, [None] * 120, mig_mode=True, source="dcgm")
    kid = series("n1", "GPU-p/GI-1", H100, 0, 60, [None] * 60, parent_uuid="GPU-p", mig_profile="3g.40gb",
                 gr_engine_active_pct=60.0, source="dcgm")
    write_samples(store, parent + kid)
    f = report(store)
    p, k = dev(f, "GPU-p"), dev(f, "GPU-p/GI-1")
    assert k["spend_usd"] == pytest.approx(3.0 * 3 / 7)
    assert p["unallocated_usd"] == pytest.approx(3.0 * 4 / 7) and p["mig_instances_visible"] is False
    assert p["spend_usd"] == pytest.approx(3.0 * 4 / 7 + 3.0)
    assert f["fleet"]["spend_usd"] == pytest.approx(3.0 + 3.0)
    assert f["fleet"]["idle_usd"] == pytest.approx(3.0 * 4 / 7)


def test_the_real_h100_mig_load_file_gives_no_idle_unallocated_or_mig_claim(run_cli, tmp_path):
    real = shared_or_skip("data/real/nvidia_smi_csv/nvgpuexp_querygpu_load__linux-x86_64__nvidia-h100-mig__590.48.01.csv")
    store = str(tmp_path / "s")
    code, _, err = run_cli("import", "nvidia-smi", str(real), "--host", "h", "--tz", "UTC", "--out", store, "--interval", "60s")
    assert code == 0, err
    f = report(store)
    assert f["fleet"]["idle_usd"] == 0 and f["fleet"]["unallocated_usd"] == 0 and f["fleet"]["waste_usd"] == 0
    assert f["recommendations"] == [] and f["fleet"]["spend_usd"] > 0
    assert any("MIG instances are not visible" in x["why"] for x in f["data_quality"]["devices_without_evidence"])


def test_the_real_dcgm_mig_sample_of_30_seconds_makes_no_claim(run_cli, tmp_path):
    real = shared_or_skip("data/real/dcgm_exporter/nvidia_docs_a100_mig_1g.5gb_dcgm.prom")
    store = str(tmp_path / "s")
    code, _, err = run_cli("import", "prometheus-text", str(real), "--out", store, "--at", "2026-11-28T00:00:00Z", "--interval", "30s")
    assert code == 0, err
    pricing = tmp_path / "p.toml"
    pricing.write_text('[host]\n"ub20-a100-k8s" = 1.80\n')  # the series carry no modelName: priced by host
    f = build(ReportRequest([store], str(pricing), [], None, None))
    # The parent's GR-engine activity (99.6 %) is far above its one visible 1g.5gb instance's share (99.6 % x 1/7):
    # other instances run that the scrape does not show: invisible, not idle (DESIGN.md "MIG slices that can still be allocated")
    assert f["fleet"]["spend_usd"] > 0 and f["fleet"]["unallocated_usd"] == 0 and f["fleet"]["idle_usd"] == 0
    (p,) = [d for d in f["devices"] if d["mig_mode"] and not d["parent_uuid"]]
    assert p["mig_instances_visible"] is False
    assert [r for r in f["recommendations"] if r["kind"] == "mig"] == []  # but 30 s is no month
    assert any("observed 0.01 h < 1 h" in x["why"] for x in f["data_quality"]["devices_not_assessed"])


# -- every rule obeys min_covered_hours and min_coverage_pct --------------------------------------

def _firing_cases():
    from findfix import device, findings, served_model

    h100, a100, l40s = H100, "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"
    api = [{"model": "gpt-4o-mini", "input_per_1m": 0.15, "output_per_1m": 0.60, "as_of": "2026-04-06", "source": "x", "serves": ["m"]}]
    parent = {"host": "h", "uuid": "GPU-p", "name": a100, "mig_mode": True, "parent_uuid": None, "spend_usd": 2.0,
              "unallocated_usd": 2.0, "mean_util_pct": None, "coverage_pct": 100.0, "covered_hours": 24.0}
    return {
        "idle": findings([device("h", "GPU-1", l40s, 2.0, [0] * 10 + [50] * 14, 0)], 24),
        "right_size": findings([device("h", "GPU-1", h100, 12.29, [20] * 24, 10)], 24),
        "mig": findings([device("h", f"GPU-{i}", a100, 5.12, [10] * 24, 8) for i in range(4)], 24),
        "mig_mode": findings([(parent, [])], 24),
        "consolidation": findings([device("h1", "GPU-a", l40s, 1.86, [55] * 12 + [5] * 12, 9.6, total_gib=48),
                                   device("h2", "GPU-b", l40s, 1.86, [5] * 12 + [55] * 12, 9.6, total_gib=48)], 24),
        "batching": findings([device("inf", f"GPU-{i}", h100, 3.0, [15] * 24, 70) for i in range(4)], 24, [served_model("m", ["inf"])]),
        "quantization": findings([device("inf", "GPU-h", h100, 3.0, [60] * 24, 76)], 24,
                                 [served_model("m", ["inf"], engine={"p95_kv_cache_usage_pct": 98.0})]),
        "token_economics": findings([device("inf", "GPU-h", h100, 3.0, [20] * 24, 70)], 24, [served_model("m", ["inf"])], api),
    }


@pytest.mark.parametrize("case", ["idle", "right_size", "mig", "mig_mode", "consolidation", "batching", "quantization", "token_economics"])
@pytest.mark.parametrize("field,value", [(None, None), ("coverage_pct", 40.0), ("covered_hours", 0.5)])
def test_every_rule_obeys_the_evidence_thresholds(case, field, value):
    from gpu_audit.catalog import MODELS
    from gpu_audit.recommend import RULES
    from gpu_audit.recommend.base import RecommendSettings

    s = RecommendSettings(gpu_prices={m.key: (m.price_per_hour, m.provider) for m in MODELS if m.price_per_hour is not None})
    f = _firing_cases()[case]
    for d in f["devices"]:
        d.setdefault("covered_hours", 24.0)
        if field:
            d[field] = value
    rule = RULES["mig" if case == "mig_mode" else case]
    recs = rule(f, s)
    if field is None:
        assert recs, f"{case} should fire on its own case"
    else:
        assert recs == [], f"{case} fired with {field} = {value}"
