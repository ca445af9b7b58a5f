"""Rollups: a report from rollups agrees with the report from raw samples."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import ASSETS, SCENARIOS
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.collect.run import collect
from gpu_audit.store.rollup import rollup

# Figures that need sub-minute detail: from minute means after a rollup (documented).
SUB_MINUTE = {"p95_util_pct", "p95_memory_bytes", "utilization_histogram", "generated_at", "recommendations",
              "savings_by_device", "potential_monthly_savings_usd", "devices_not_assessed"}


def numbers(o, path=""):
    """Every number in a findings object, by path, leaving out what needs sub-minute detail."""
    if isinstance(o, dict):
        for k, v in o.items():
            if k not in SUB_MINUTE:
                yield from numbers(v, f"{path}.{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(o, (int, float)) and not isinstance(o, bool):
        yield path, float(o)
    else:
        yield path, o


@pytest.fixture
def store(tmp_path):
    out = str(tmp_path / "store")
    for name in ("mixed-idle.toml", "h200-mig.toml", "a100-mig.toml"):
        p = tmp_path / name
        p.write_text((SCENARIOS / name).read_text().replace("[host]\n", '[host]\nstart = "2026-11-27T00:00:00Z"\n', 1))
        collect(out, interval_s=30, duration_s=2 * 86400, simulate=str(p), handle_signals=False)
    return out


def test_report_from_rollups_agrees_with_raw(store, tmp_path):
    before = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    done = rollup(store, 0, 60, now=datetime(2026, 11, 29, 0, 0, 1, tzinfo=timezone.utc))
    assert len(done) == 6 and all(raw > rows for _, _, raw, rows in done)  # 3 hosts x 2 days
    assert not list(Path(store).glob("samples/*/*/*.parquet"))
    after = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    a, b = dict(numbers(before)), dict(numbers(after))
    assert a.keys() == b.keys()
    diffs = [(k, a[k], b[k]) for k in a if isinstance(a[k], float)
             and not math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9)]
    assert not diffs, diffs[:5]
    assert [(k, a[k]) for k in a if not isinstance(a[k], float)] == [(k, b[k]) for k in b if not isinstance(b[k], float)]


def test_only_whole_days_past_the_cutoff_and_raw_kept_until_written(store):
    done = rollup(store, 0, 60, now=datetime(2026, 11, 28, 12, tzinfo=timezone.utc))
    assert {d for _, d, _, _ in done} == {"2026-11-27"}
    assert list(Path(store).glob("samples/*/date=2026-11-28/*.parquet"))
    f = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))  # raw and rollups together
    assert f["window"]["hours"] == pytest.approx(48, abs=0.01)


def test_rollup_errors(run_cli, tmp_path):
    code, _, err = run_cli("rollup", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("Error: store not found")
    (tmp_path / "s").mkdir()
    code, _, err = run_cli("rollup", str(tmp_path / "s"), "--resolution", "7m")
    assert code == 2 and err.startswith("Error: --resolution must divide a day")


def test_a_damaged_file_is_one_line_and_the_day_stays_raw(run_cli, tmp_path):
    out = str(tmp_path / "store")
    p = tmp_path / "m.toml"
    p.write_text((SCENARIOS / "mixed-idle.toml").read_text().replace("[host]\n", '[host]\nstart = "2026-11-27T00:00:00Z"\n', 1))
    collect(out, interval_s=60, duration_s=3600, simulate=str(p), handle_signals=False)
    (victim,) = Path(out).glob("samples/*/date=2026-11-27/*.parquet")
    victim.write_bytes(victim.read_bytes()[:200])  # truncated, as by a half-finished copy
    code, _, err = run_cli("rollup", out, "--older-than", "1m")
    assert code == 2 and err.splitlines()[0].startswith(f"Error: cannot read {victim}: ")
    assert victim.exists() and not list(Path(out).glob("rollups/*/*/*.parquet"))


def test_a_version_1_rollup_without_k8s_namespace_is_read(store):
    """Schema version 1 rollups have no k8s_namespace column: they read as before, with no namespaces."""
    import pyarrow.parquet as pq

    before = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    rollup(store, 0, 60, now=datetime(2026, 11, 29, 0, 0, 1, tzinfo=timezone.utc))
    for f in Path(store, "rollups").rglob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.drop_columns(["k8s_namespace"]), f)
    after = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    assert after["namespaces"] == [] and after["fleet"]["spend_usd"] == pytest.approx(before["fleet"]["spend_usd"], rel=1e-9)
