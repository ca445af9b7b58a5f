"""The scan writes sums over columns that no file has, or that every row holds NULL in, as constants
(issue 21, docs/benchmarks.md): the figures must be those of the full expressions."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storefix import series, write_samples

def _figures(store: str, tmp_path, name: str, monkeypatch=None, full: bool = False) -> dict:
    from gpu_audit.analyze.findings import ReportRequest, build, write_json
    from gpu_audit.store import query

    if full:  # the full expressions: nothing is known to be NULL
        monkeypatch.setattr(query, "all_null_columns", lambda con, files: set())
    f = build(ReportRequest([store]))
    if full:
        monkeypatch.undo()
    out = tmp_path / f"{name}.json"
    write_json(f, str(out))
    f = json.loads(out.read_text())
    keys = ("gpu_hours", "spend_usd", "waste_usd", "idle_usd", "idle_hours", "mean_util_pct", "energy_kwh", "unallocated_usd")
    return {"fleet": {k: f["fleet"][k] for k in keys},
            "devices": [{k: d[k] for k in ("host", "uuid", "gpu_hours", "spend_usd", "waste_usd", "idle_usd", "mean_util_pct",
                                            "p95_util_pct", "p95_memory_bytes", "energy_kwh", "utilization_metric", "share")}
                        for d in f["devices"]]}


def _same(a: dict, b: dict) -> None:
    assert a["fleet"] == pytest.approx(b["fleet"], rel=1e-12)
    assert len(a["devices"]) == len(b["devices"])
    for x, y in zip(a["devices"], b["devices"]):
        for k in x:
            assert x[k] == (pytest.approx(y[k], rel=1e-12) if isinstance(y[k], float) else y[k]), k


def test_all_null_columns_are_known_from_the_footers_and_give_the_full_figures(tmp_path, monkeypatch):
    store = str(tmp_path / "s")
    rows = (series("h1", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 60, [0, 0, 40, 90, 100, 3] * 20, power_w=300.0)
            + series("h1", "GPU-b", "NVIDIA H100 80GB HBM3", 0, 60, [10, None, 55] * 40))
    write_samples(store, rows)
    import glob

    from gpu_audit.store import query

    files = sorted(glob.glob(f"{store}/samples/*/*/*.parquet"))
    absent = query.samples_source(duckdb.connect(), files).absent
    # The writer writes every column: these hold NULL in every row, power_w and util_gpu_pct do not.
    assert {"parent_uuid", "mig_mode", "mig_profile", "energy_j", "gr_engine_active_pct", "sm_active_pct", "error"} <= absent
    assert not {"power_w", "util_gpu_pct", "mem_used_bytes"} & absent
    fast = _figures(store, tmp_path, "fast")
    full = _figures(store, tmp_path, "full", monkeypatch, full=True)
    _same(fast, full)
    assert fast["fleet"]["energy_kwh"] == pytest.approx(300 * 60 * 120 / 3.6e6)  # power x dt of GPU-a only
    assert fast["fleet"]["gpu_hours"] == pytest.approx(4.0)


def test_a_foreign_file_without_the_optional_columns_reads_as_the_writers_store(tmp_path, monkeypatch):
    """The same samples written by another tool with only ts, host, uuid, name, interval_s, utilization
    and memory: the absent columns are constants, and every figure equals the full store's."""
    mine = str(tmp_path / "mine")
    rows = series("h1", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 30, [5, 80, 0, 100, 50] * 24)
    write_samples(mine, rows)
    foreign = tmp_path / "foreign" / "samples" / "host=h1" / "date=2026-11-28"
    foreign.mkdir(parents=True)
    pq.write_table(pa.table({
        "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz="UTC")), "host": [r["host"] for r in rows],
        "uuid": [r["uuid"] for r in rows], "name": [r["name"] for r in rows],
        "util_gpu_pct": pa.array([r["util_gpu_pct"] for r in rows], pa.float32()),
        "mem_used_bytes": pa.array([r["mem_used_bytes"] for r in rows], pa.int64()),
        "mem_total_bytes": pa.array([r["mem_total_bytes"] for r in rows], pa.int64()),
        "interval_s": pa.array([r["interval_s"] for r in rows], pa.float32())}), foreign / "other-tool.parquet")
    a = _figures(str(tmp_path / "foreign"), tmp_path, "foreign")
    b = _figures(mine, tmp_path, "mine-full", monkeypatch, full=True)
    _same(a, b)
    # hand-computed: 1 h of an H100; u = 5, 80, 0, 100, 50 each for 12 min -> mean 47 %, idle (< 5 %) 12 min
    assert a["fleet"]["gpu_hours"] == pytest.approx(1.0)
    assert a["fleet"]["mean_util_pct"] == pytest.approx(47.0)
    assert a["fleet"]["idle_hours"] == pytest.approx(0.2)
    assert a["devices"][0]["p95_util_pct"] == 100
