"""``report --engine spark`` (issue 22, docs/scale.md): every figure equals the DuckDB engine's.

Each store is reported by both engines, Spark on ``local[2]``; every number of the findings must
agree to a relative difference below 1e-9. The stores hold what the scan must get right: a
hand-computed fleet (one H100 at $3.00/h: 1 GPU-hour, $3.00, waste $1.50, idle $1.00), MIG
instances and their parent, a file imported twice and an overlapping series, a rolled-up day with
late raw rows, Kubernetes namespaces and pods, and processes. Skipped where pyspark or Java is
missing (CI installs both: .ci/run).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import ASSETS, ROOT
from storefix import series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.store.rollup import rollup
from gpu_audit.store.writer import StoreWriter

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
AFTER = datetime(2026, 11, 30, tzinfo=timezone.utc)

needs_spark = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME") or __import__("importlib").util.find_spec("pyspark") is None,
    reason="needs pyspark and Java 17 (pip install 'gpu-audit[spark]'; apt install openjdk-17-jre-headless)")


def both(*stores: str) -> tuple[dict, dict]:
    duck = build(ReportRequest(list(stores), PRICING))
    spark = build(ReportRequest(list(stores), PRICING, engine="spark", spark_master="local[2]"))
    return duck, spark


def same(a, b, path: str = "") -> list[str]:
    """Where two findings differ (numbers: relative difference of 1e-9 or more)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in ("generated_at",):
                out += same(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
            return []
        return [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def hand_fleet(root: Path) -> None:
    write_samples(str(root), series("n1", "GPU-a", H100, 0, 600, [0, 0, 50, 50, 100, 100]))


@needs_spark
def test_hand_computed_fleet_is_the_same_on_both_engines(tmp_path):
    hand_fleet(tmp_path / "s")
    duck, spark = both(str(tmp_path / "s"))
    assert same(duck, spark) == []
    fl = spark["fleet"]
    assert (fl["gpu_hours"], fl["spend_usd"], fl["waste_usd"], fl["idle_usd"]) == pytest.approx((1.0, 3.0, 1.5, 1.0))


@needs_spark
def test_mig_duplicates_overlap_namespaces_and_processes_on_both_engines(tmp_path):
    store = tmp_path / "s"
    rows = series("h", "GPU-p", A100, 0, 600, [None] * 6, mig_mode=True)
    rows += series("h", "MIG-3", A100, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="3g.40gb", sm_active_pct=40.0)
    rows += series("h", "MIG-2", A100, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="2g.20gb")
    rows += series("n1", "GPU-a", H100, 0, 60, [50.0] * 60, k8s_namespace="team-a", k8s_pod="infer-0")
    write_samples(str(store), rows)
    write_samples(str(store), series("n1", "GPU-a", H100, 0, 60, [50.0] * 60, k8s_namespace="team-a", k8s_pod="infer-0"))  # imported twice
    write_samples(str(store), series("n1", "GPU-b", H100, 0, 60, [20.0] * 60))
    write_samples(str(store), series("n1", "GPU-b", H100, 30, 60, [80.0] * 60))  # an overlapping series, 30 s off
    w = StoreWriter(str(store), "n1")
    for k in range(6):
        w.add("processes", {"ts": series("n1", "GPU-b", H100, k * 600, 1, [0])[0]["ts"], "host": "n1", "uuid": "GPU-b", "pid": 42,
                            "name": "python", "used_mem_bytes": 10 * 2**30, "sm_util_pct": 30.0, "user": "alice"})
    w.flush()
    duck, spark = both(str(store))
    assert same(duck, spark) == []
    assert spark["data_quality"]["duplicate_or_overlapping_samples"]  # the repair ran, on the rows Spark handed back
    assert "team-a" in [n["namespace"] for n in spark["namespaces"]]
    assert any(w["kind"] == "process" for w in spark["workloads"])
    p = next(d for d in spark["devices"] if d["uuid"] == "GPU-p")
    assert p["unallocated_usd"] == pytest.approx(2)  # hand: 2 free slices of 7 of a $7/h A100 for an hour


@needs_spark
def test_rollups_and_late_rows_on_both_engines(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), series("n1", "GPU-a", H100, 0, 60, [50.0] * 120))
    rollup(str(store), 86400, now=AFTER)
    write_samples(str(store), series("n1", "GPU-a", H100, 7200, 60, [50.0] * 60))  # late rows for the rolled-up day
    duck, spark = both(str(store))
    assert same(duck, spark) == []
    assert spark["fleet"]["gpu_hours"] == pytest.approx(3.0) and spark["fleet"]["spend_usd"] == pytest.approx(9.0)
    shutil.copytree(store, tmp_path / "copy")  # two copies of the rolled-up store, read together: counted once
    duck, spark = both(str(store), str(tmp_path / "copy"))
    assert same(duck, spark) == []
    assert spark["fleet"]["spend_usd"] == pytest.approx(9.0)


@needs_spark
def test_the_cli_takes_spark_master_and_conf(tmp_path):
    hand_fleet(tmp_path / "s")
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", str(tmp_path / "s"), "--pricing", PRICING, "--engine", "spark",
                        "--spark-master", "local[1]", "--spark-conf", "spark.sql.shuffle.partitions=2", "--json", str(tmp_path / "f.json")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"spend_usd": 3.0' in (tmp_path / "f.json").read_text()


def test_without_pyspark_the_engine_says_how_to_install_it(tmp_path):
    hand_fleet(tmp_path / "s")
    fake = tmp_path / "nopyspark"
    (fake / "pyspark").mkdir(parents=True)
    (fake / "pyspark" / "__init__.py").write_text("raise ImportError('no pyspark here')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", str(tmp_path / "s"), "--engine", "spark"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2
    assert "pip install 'gpu-audit[spark]'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("pyspark") is None, reason="needs pyspark")
def test_without_java_the_engine_says_so_in_one_line(tmp_path):
    hand_fleet(tmp_path / "s")
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)  # python, and no java
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", str(tmp_path / "s"), "--engine", "spark"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2
    assert "Java 17" in r.stderr and "Traceback" not in r.stderr


def test_a_bad_engine_or_spark_conf_is_one_line(tmp_path, run_cli):
    hand_fleet(tmp_path / "s")
    code, _, err = run_cli("report", str(tmp_path / "s"), "--engine", "presto")
    assert code == 2 and "--engine: expected duckdb or spark" in err


@needs_spark
def test_the_demo_fleet_is_the_same_on_both_engines(tmp_path):
    """Four simulated hosts: MIG on two, engine counters, processes with owners and pods, token logs."""
    from gpu_audit.demo import run_demo

    res = run_demo(str(tmp_path / "demo"), hours=6, interval_s=120, html=False, days=1)
    duck = build(ReportRequest([res.store], res.pricing, [res.tokens]))
    spark = build(ReportRequest([res.store], res.pricing, [res.tokens], engine="spark", spark_master="local[2]"))
    assert same(duck, spark) == []
    assert spark["models"] and spark["recommendations"] and any(d["mig_profile"] for d in spark["devices"])


@needs_spark
def test_engine_counters_come_back_from_spark_the_same(tmp_path):
    """The engine table (a small one) is read by Spark and handed to the driver: counter resets and
    the cost per model as the DuckDB engine computes them (hand: 350 output tokens, $6.00)."""
    from storefix import at

    store = str(tmp_path / "s")
    write_samples(store, series("inf", "GPU-a", H100, 0, 600, [40] * 12))
    w = StoreWriter(store, "inf")
    for t, gen in ((0, 100.0), (1800, 300.0), (3600, 50.0), (5400, 150.0)):
        w.add("engine", {"host": "inf", "endpoint": "http://127.0.0.1:8000/metrics", "engine": "vllm", "source": "scrape",
                         "ts": at(t), "model": "m", "generation_tokens_total": gen, "prompt_tokens_total": 10 * gen})
    w.flush()
    duck, spark = both(store)
    assert same(duck, spark) == []
    (m,) = spark["models"]
    assert spark["token_source"] == "engine counters" and m["completion_tokens"] == 350 and m["cost_usd"] == pytest.approx(6.0)


@needs_spark
def test_windows_rejected_rows_host_from_folder_and_rows_before_2000_on_both_engines(tmp_path):
    """The scan's less travelled paths: --since/--until, rows out of range (counted per file, with the
    file named), a foreign file without a host column (the host from its folder), rows before 2000."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from storefix import T0, at

    store = tmp_path / "s"
    write_samples(str(store), series("n1", "GPU-a", H100, 0, 60, [50.0] * 120))
    write_samples(str(store), [{"host": "n1", "uuid": "GPU-a", "name": H100, "ts": at(-T0 + 5), "interval_s": 10.0, "util_gpu_pct": 50.0}])
    folder = store / "samples" / "host=n%2F2" / "date=2026-11-28"
    folder.mkdir(parents=True)
    n = 30
    ts = pa.array([int((T0 + 60 * k) * 1e6) for k in range(n)], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"ts": ts, "uuid": ["GPU-z"] * n, "name": [H100] * n, "interval_s": pa.array([60.0] * n, pa.float32()),
                             "util_gpu_pct": pa.array([250.0] * 5 + [20.0] * (n - 5), pa.float32())}), folder / "foreign.parquet")
    for window in ((None, None), ("2026-11-28T00:30:00Z", "2026-11-28T01:30:00Z")):
        duck = build(ReportRequest([str(store)], PRICING, since=window[0], until=window[1]))
        spark = build(ReportRequest([str(store)], PRICING, since=window[0], until=window[1], engine="spark", spark_master="local[2]"))
        assert same(duck, spark) == []
        if window[0] is None:
            assert {d["host"] for d in spark["devices"]} == {"n1", "n/2"}
            rejected = {os.path.basename(r["file"]): r["rows"] for r in spark["data_quality"]["rejected_samples"]}
            assert rejected["foreign.parquet"] == 5 and len(rejected) == 2  # and the file with the row of 1970
    assert spark["window"]["hours"] == pytest.approx(1.0) and spark["devices"][0]["gpu_hours"] == pytest.approx(1.0)
