"""Fleet-scale benchmark: `report --json` on a store of minute rollups.

    python bench/fleet.py [DEVICES] [DAYS]      (default 10000 devices, 30 days = 432M rollup rows)

Devices sit 8 to a host; each host-day is one compacted rollup file (what `rollup` and `compact`
leave), with diurnal utilization, some idle GPUs and per-minute sums as `gpu-audit rollup` writes
them. Prints the generation time, the report's wall time and peak RSS, and the JSON's size.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
T0 = 1795824000 - 30 * 86400
PER_HOST = 8


def host_files(args: tuple) -> int:
    """One host's rollup files, one per day; ``res`` seconds a row (60: minute rollups, 3600: hourly)."""
    from gpu_audit.store.schema import ROLLUPS, with_version

    root, h, days, res = (*args, 60)[:4]
    rng = np.random.default_rng(h)
    per_day = 86400 // res
    n = per_day * PER_HOST
    minute = np.tile(np.arange(per_day), PER_HOST) * (res // 60)  # the row's start, in minutes of the day
    gpu = np.repeat(np.arange(PER_HOST), per_day)
    rows = 0
    for d in range(days):
        day0 = T0 + d * 86400
        ts = (day0 + minute * 60) * 1_000_000
        hour = minute / 60 + (res / 7200 if res > 60 else 0)
        idle_gpu = (gpu + h) % 7 == 0
        util = np.clip(15 + 70 * (0.5 + 0.5 * np.cos(2 * np.pi * (hour - 15) / 24)) + rng.normal(0, 5, n), 0, 100)
        util = np.where(idle_gpu, 0.0, util)
        dt = np.full(n, float(res))
        t = pa.table({
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "host": np.full(n, f"node-{h:05d}"),
            "uuid": np.array([f"GPU-{h:05d}-{g}" for g in range(PER_HOST)])[gpu], "parent_uuid": pa.nulls(n, pa.string()),
            "index": gpu.astype(np.int32), "name": np.full(n, "NVIDIA H100 80GB HBM3"), "mig_profile": pa.nulls(n, pa.string()),
            "mig_mode": np.zeros(n, bool), "k8s_namespace": pa.nulls(n, pa.string()), "resolution_s": np.full(n, float(res), np.float32), "idle_below_pct": np.full(n, 5.0, np.float32),
            "n": np.full(n, res), "dt_s": dt, "ev_dt_s": dt, "u_dt": util * dt, "idle_dt_s": np.where(util < 5, dt, 0.0),
            "sm_dt_s": dt, "sm_u_dt": 0.5 * util * dt, "error_dt_s": np.zeros(n), "util_gpu_dt_s": dt, "gr_engine_dt_s": np.zeros(n),
            "sm_active_dt_s": np.zeros(n), "free_dt_s": np.zeros(n), "mem_max_bytes": np.full(n, 70 * 2**30),
            "mem_total_bytes": np.full(n, 81559 * 2**20), "first_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "end_ts": pa.array(ts + res * 1_000_000, pa.timestamp("us", tz="UTC")),
        })
        schema = with_version(ROLLUPS)
        for f in schema:  # columns of later rollup schema versions (MIG, energy): zero here
            if f.name not in t.column_names:
                t = t.append_column(f.name, pa.array(np.zeros(n)).cast(f.type))
        t = t.select(schema.names).cast(schema)
        folder = Path(root) / "rollups" / f"host=node-{h:05d}" / f"date={time.strftime('%Y-%m-%d', time.gmtime(day0))}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, folder / f"rollup-{res}s.parquet", compression="zstd",
                       use_dictionary=[c for c in t.column_names if c not in ("ts", "first_ts", "end_ts")])
        rows += n
    return rows


def main() -> None:
    devices = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    days = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    hosts = devices // PER_HOST
    root = f"/tmp/gpu-audit-bench-fleet-{devices}x{days}"
    t0 = time.perf_counter()
    if not os.path.exists(f"{root}/.complete"):
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            rows = sum(ex.map(host_files, [(root, h, days) for h in range(hosts)], chunksize=16))
        Path(f"{root}/.complete").write_text(str(rows))
    rows = int(Path(f"{root}/.complete").read_text())
    gen = time.perf_counter() - t0
    out = f"{root}.json"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", root, "--json", out], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    f = json.loads(Path(out).read_text())
    print(f"fleet benchmark: {devices:,} devices on {hosts:,} hosts, {days} days of minute rollups = {rows:,} rows")
    print(f"  generation:        {gen:.0f} s")
    print(f"  report --json:     {wall:.1f} s, peak RSS {rss:,.0f} MiB")
    print(f"  findings JSON:     {os.path.getsize(out) / 2**20:.1f} MiB (hourly series per {f['series']['device_hourly_level']})")
    print(f"  fleet: spend ${f['fleet']['spend_usd']:,.0f}, mean util {f['fleet']['mean_util_pct']:.1f}%, "
          f"{len(f['recommendations'])} recommendations")
    from gpu_audit.report.html import write_html

    t0 = time.perf_counter()
    write_html(f, f"{root}.html")
    print(f"  HTML report:       {os.path.getsize(f'{root}.html') / 2**20:.1f} MiB, rendered in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
