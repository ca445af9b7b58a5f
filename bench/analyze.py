"""Analysis benchmark: `report --json` on stores of 1M, 10M and 100M samples.

64 GPUs on 8 hosts, 1 s interval, diurnal utilization with noise, idle nights on some GPUs. Each
size is timed in a fresh process (`python -m gpu_audit report --json`), with its peak RSS; a plain
pandas implementation of the same fleet figures runs beside it on the sizes where it fits in memory,
and the two answers are compared.

Targets on the 2-core machine: 100M samples in under 10 s, peak RSS under 1.5 GB, memory that does not
grow with the number of samples.
Usage: python bench/analyze.py [SIZES...]   (default: 1M 10M 100M; stores are cached in /tmp)
A size with ``x2`` (``10Mx2``) is that store with every file stored twice (a store imported twice by
an older version): the analyzer must give the clean store's figures, through its dedup path.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
GPUS, HOSTS = 64, 8
T0 = 1795824000  # 2026-11-28T00:00:00Z


def build_store(path: Path, samples: int, gpus: int = GPUS, hosts: int = HOSTS) -> None:
    if (path / ".complete").exists():
        return
    per_gpu = samples // gpus
    rng = np.random.default_rng(7)
    day = 86400
    for h in range(hosts):
        for d0 in range(0, per_gpu, day):
            n = min(day, per_gpu - d0)
            t = np.arange(d0, d0 + n, dtype=np.int64)
            parts = []
            for g in range(gpus // hosts):
                gi = h * (gpus // hosts) + g
                hour = (t % day) / 3600
                base = 15 + 70 * (0.5 + 0.5 * np.cos(2 * np.pi * (hour - 15) / 24)) if gi % 4 else np.where((hour > 8) & (hour < 20), 60.0, 0.0)
                util = np.clip(base + rng.normal(0, 5, n), 0, 100).round().astype(np.float32)
                parts.append({
                    "ts": pa.array((T0 + t) * 1_000_000, pa.timestamp("us", tz="UTC")),
                    "host": pa.array(np.full(n, f"host-{h}")), "uuid": pa.array(np.full(n, f"GPU-{gi:04d}")),
                    "name": pa.array(np.full(n, "NVIDIA H100 80GB HBM3")),
                    "util_gpu_pct": util, "util_mem_pct": (util * 0.4).astype(np.float32),
                    "mem_used_bytes": np.full(n, (60 + gi % 10) * 2**30, dtype=np.int64),
                    "mem_total_bytes": np.full(n, 81559 * 2**20, dtype=np.int64),
                    "power_w": (70 + util * 6).astype(np.float32),
                    "sm_active_pct": (util * 0.5).round(1).astype(np.float32),
                    "interval_s": np.ones(n, dtype=np.float32), "source": pa.array(np.full(n, "virtual")),
                })
            table = pa.concat_tables([pa.table(p) for p in parts])
            date = time.strftime("%Y-%m-%d", time.gmtime(T0 + d0))
            folder = path / "samples" / f"host=host-{h}" / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f"host-{h}-bench-{d0 // day:05d}.parquet", compression="zstd",
                           use_dictionary=[c for c in table.column_names if c != "ts"],
                           column_encoding={"ts": "DELTA_BINARY_PACKED"})
    (path / ".complete").write_text("ok")


def duplicate_store(store: Path) -> Path:
    """The same store with each file also under a second name (hard links: no extra disk)."""
    out = store.parent / f"{store.name}x2"
    if not (out / ".complete").exists():
        for f in sorted(store.glob("samples/*/*/*.parquet")):
            dest = out / f.relative_to(store)
            dest.parent.mkdir(parents=True, exist_ok=True)
            for name in (dest, dest.with_name("again-" + dest.name)):
                if not name.exists():
                    name.hardlink_to(f)
        (out / ".complete").write_text("ok")
    return out


def run_report(store: Path) -> tuple[float, float, dict]:
    out = store.parent / f"{store.name}.json"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", str(store), "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MiB (max over children so far)
    return wall, rss, json.loads(out.read_text())


def pandas_report(store: Path) -> tuple[float, float, dict]:
    """The same fleet figures in plain pandas (read everything, then group)."""
    code = f"""
import glob, json, resource, time
import pandas as pd
t0 = time.perf_counter()
df = pd.concat([pd.read_parquet(f, columns=["host", "uuid", "name", "util_gpu_pct", "interval_s"]) for f in sorted(glob.glob("{store}/samples/*/*/*.parquet"))])
price = 12.29
dt = df["interval_s"].astype(float)
u = df["util_gpu_pct"].astype(float)
res = {{"spend_usd": float((price * dt).sum() / 3600), "waste_usd": float((price * dt * (1 - u / 100)).sum() / 3600),
        "idle_usd": float((price * dt)[u < 5].sum() / 3600), "mean_util_pct": float((u * dt).sum() / dt.sum())}}
print(json.dumps({{"wall": time.perf_counter() - t0, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "fleet": res}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        return float("nan"), float("nan"), {}
    d = json.loads(r.stdout)
    return d["wall"], d["rss"], d["fleet"]


def main() -> None:
    sizes = [s.upper() for s in sys.argv[1:]] or ["1M", "10M", "100M"]
    print(f"analysis benchmark: {GPUS} GPUs on {HOSTS} hosts, 1 s interval, `gpu-audit report --json` in a fresh process")
    print(f"{'samples':>8} {'gen s':>7} {'report s':>9} {'samples/s':>12} {'peak RSS':>10} {'pandas s':>9} {'pandas RSS':>11} {'ratio':>6}  agree")
    for label in sizes:
        twice = label.endswith("X2")
        base = label[:-2] if twice else label
        n = int(float(base[:-1]) * {"K": 1e3, "M": 1e6}[base[-1]])
        store = Path(f"/tmp/gpu-audit-bench-{base}")
        t0 = time.perf_counter()
        build_store(store, n)
        if twice:
            store = duplicate_store(store)
        gen = time.perf_counter() - t0
        # Each size in its own process family: RUSAGE_CHILDREN is a max, so measure in a child.
        r = subprocess.run([sys.executable, __file__, "--one", str(store), "1" if n <= 20_000_000 else "0"],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            raise SystemExit(r.stderr)
        d = json.loads(r.stdout)
        agree = "-" if not d["pandas_fleet"] else all(
            abs(d["fleet"][k] - d["pandas_fleet"][k]) <= 1e-6 * max(1, abs(d["pandas_fleet"][k])) for k in d["pandas_fleet"])
        ratio = d["pandas_wall"] / d["wall"] if d["pandas_fleet"] else float("nan")
        print(f"{label:>8} {gen:7.1f} {d['wall']:9.2f} {n / d['wall']:12,.0f} {d['rss']:8.0f} MiB "
              f"{d['pandas_wall']:9.2f} {d['pandas_rss']:8.0f} MiB {ratio:6.1f}  {agree}")


def one(store: str, with_pandas: str) -> None:
    wall, rss, f = run_report(Path(store))
    clean = Path(store[:-2]) if store.endswith("x2") else Path(store)  # a duplicated store must give the clean one's figures
    pw, prss, pf = pandas_report(clean) if with_pandas == "1" else (float("nan"), float("nan"), {})
    fleet = {k: f["fleet"][k] for k in ("spend_usd", "waste_usd", "idle_usd", "mean_util_pct")}
    print(json.dumps({"wall": wall, "rss": rss, "fleet": fleet, "pandas_wall": pw, "pandas_rss": prss, "pandas_fleet": pf}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3])
    else:
        main()
