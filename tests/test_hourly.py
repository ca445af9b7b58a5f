"""The device-hourly series as columns (what the rules read) agrees with the same rows as lists."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import ASSETS
from gpu_audit.analyze.engine import AnalyzeSettings, analyze
from gpu_audit.analyze.findings import add_recommendations, aggregate_series
from gpu_audit.hourly import COLUMNS, HourlyColumns, per_host
from gpu_audit.analyze.pricing import load_pricing
from gpu_audit.recommend.base import HourlyIndex
from storefix import series, write_samples

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"
H0 = 1795824000 // 3600


def small() -> HourlyColumns:
    nan = np.nan
    return HourlyColumns(["b", "a", "a", "b"], ["GPU-2", "GPU-1", "GPU-1", "GPU-3"], [H0, H0, H0 + 1, H0 + 1], {
        "mean_util_pct": [10.0, nan, 30.0, 50.0], "mem_max_bytes": [1.0, 2.0, nan, 4.0], "spend_usd": [3.0, 3.0, 3.0, nan],
        "covered_s": [3600.0, 1800.0, 3600.0, 3600.0], "idle_s": [0.0, nan, 0.0, 0.0], "evidence_s": [3600.0, 0.0, 3600.0, 1800.0]})


def test_rows_are_sorted_lists_with_iso_hours_and_nulls():
    h = small()
    assert len(h) == 4
    assert [r[:3] for r in h] == [["a", "GPU-1", "2026-11-28T00:00:00Z"], ["a", "GPU-1", "2026-11-28T01:00:00Z"],
                                  ["b", "GPU-2", "2026-11-28T00:00:00Z"], ["b", "GPU-3", "2026-11-28T01:00:00Z"]]
    assert h[0] == ["a", "GPU-1", "2026-11-28T00:00:00Z", None, 2.0, 3.0, 1800.0, None, 0.0]
    assert h[3] == ["b", "GPU-3", "2026-11-28T01:00:00Z", 50.0, 4.0, None, 3600.0, 0.0, 1800.0]
    assert h.rows() == [h[i] for i in range(4)] == list(h)
    assert h[1:3] == [h[1], h[2]]


def test_groups_and_device_rows():
    h = small()
    g = h.groups()
    assert {k: v.tolist() for k, v in g.items()} == {("a", "GPU-1"): [0, 1], ("b", "GPU-2"): [2], ("b", "GPU-3"): [3]}
    rows = h.device_rows(g[("a", "GPU-1")])
    assert [r["h"] for r in rows] == [H0, H0 + 1]
    assert rows[1] == {**dict(zip(COLUMNS, h[1])), "h": H0 + 1}


def test_per_host_is_the_same_from_columns_and_from_lists():
    h = small()
    from_cols = per_host({"columns": COLUMNS, "rows": h})
    from_lists = per_host({"columns": COLUMNS, "rows": h.rows()})
    assert from_cols == from_lists
    # host b, hour H0+1: only GPU-3 (50 % over 1800 s of evidence); spend all null sums to 0
    b1 = next(r for r in from_cols if r[0] == "b" and r[2] == "2026-11-28T01:00:00Z")
    assert b1 == ["b", "*", "2026-11-28T01:00:00Z", 50.0, 4.0, 0.0, 3600.0, 0.0, 1800.0]
    # host a, hour H0: no evidence, mean null
    a0 = next(r for r in from_cols if r[0] == "a" and r[2] == "2026-11-28T00:00:00Z")
    assert a0[3] is None and a0[8] == 0.0


@pytest.fixture
def fleet(tmp_path):
    store = str(tmp_path / "store")
    rows = []
    for h in range(3):
        for g in range(3):
            utils = [0] * 36 + [40 + 10 * g] * 36 if (h + g) % 2 else [5 * g] * 72
            rows += series(f"node-{h}", f"GPU-{h}{g}", H100, 0, 600, utils)
    write_samples(store, rows)
    return store


def test_the_rules_read_columns_as_they_read_lists(fleet):
    pricing = load_pricing(PRICING)
    f = analyze([fleet], pricing, None, AnalyzeSettings())
    assert isinstance(f["series"]["device_hourly"]["rows"], HourlyColumns)
    as_lists = copy.deepcopy(f)
    as_lists["series"]["device_hourly"]["rows"] = f["series"]["device_hourly"]["rows"].rows()
    a = add_recommendations(f, pricing)
    b = add_recommendations(as_lists, pricing)
    assert a["recommendations"] and a["recommendations"] == b["recommendations"]
    idx = HourlyIndex(f)
    assert idx.columnar and not HourlyIndex(as_lists).columnar
    assert idx.get(("node-0", "GPU-01")) == HourlyIndex(as_lists).get(("node-0", "GPU-01"))
    assert aggregate_series(a)["series"]["device_hourly"]["rows"] == aggregate_series(b)["series"]["device_hourly"]["rows"]


def test_a_large_fleet_aggregates_from_columns(fleet, monkeypatch):
    from gpu_audit.analyze import findings as fmod

    pricing = load_pricing(PRICING)
    f = analyze([fleet], pricing, None, AnalyzeSettings())
    lists = f["series"]["device_hourly"]["rows"].rows()
    monkeypatch.setattr(fmod, "AGGREGATE_ABOVE", 2)
    out = aggregate_series(f)
    assert out["series"]["device_hourly_level"] == "host"
    assert out["series"]["device_hourly"]["rows"] == per_host({"columns": COLUMNS, "rows": lists})
    assert len(out["series"]["device_hourly"]["rows"]) == 3 * 12  # 3 hosts x 12 hours
