"""The report against its floor, side by side in one run (docs/benchmarks.md "Report speed").

    python bench/speed.py [--runs N] [--code DIR] [PARTS...]     parts: 10M 100M one fleet demo imports spark
                                                                  (default: all but spark)

``--code DIR`` times the gpu-audit of another checkout (a worktree of an older commit: the
before/after tables of docs/benchmarks.md), the stores and the floor staying the same.

Every figure is a whole process (Python start-up and imports included), the median of N runs
(default 3), the report and its floor alternating so that both see the same machine:

- ``10M``, ``100M``: 64 and 640 H100s at 1 s for 43.4 hours. The floor is one DuckDB query of the
  per-(device, clock hour) sums the report's hourly table needs (GPU-seconds, waste, idle, peak
  memory) with integer hours, fetched as Arrow. Targets: report <= 2.5x (10M), <= 2x and <= 1 GB
  peak RSS (100M).
- ``one``: a store of one device for one hour; terminal-only report against
  ``python -c "import duckdb, pyarrow.parquet"`` (target <= 2.5x), and ``gpu-audit --help``.
- ``fleet``: 10,000 GPUs x 30 days kept as hourly rollups (``gpu-audit rollup --resolution 1h``,
  7.2M rows); target < 60 s and < 2 GB.
- ``demo``: ``gpu-audit demo`` end to end.
- ``imports``: ``python -X importtime`` of the terminal-only report: the slowest imports, and whether
  plotly, jinja2 or pandas were imported.
- ``spark``: the 100M store on both engines, ``--engine spark --spark-master local[2]`` beside
  ``--engine duckdb`` (one run each; Spark's JVM start-up included), their figures compared, and
  what came back to the driver (rows of the hourly table).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

CLI = [sys.executable, "-m", "gpu_audit"]
FLOOR = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
t = con.sql(f'''SELECT host, uuid, epoch_us(ts) // 3600000000 AS hour, sum(interval_s) AS gpu_s,
                       sum(interval_s * (1 - util_gpu_pct / 100)) AS waste_s,
                       sum(interval_s) FILTER (WHERE util_gpu_pct < 5) AS idle_s, max(mem_used_bytes) AS mem_max
                FROM read_parquet('{sys.argv[1]}/samples/*/*/*.parquet') GROUP BY ALL''').to_arrow_table()
assert t.num_rows
"""
RUSAGE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
          "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); w = time.perf_counter() - t; "
          "sys.stderr.write(r.stderr.decode()[-2000:]) if r.returncode else None; "
          "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)")


CODE = ROOT  # the checkout whose gpu-audit is timed (``python -m gpu_audit`` runs in it)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``cmd`` in a fresh process family."""
    r = subprocess.run([sys.executable, "-c", RUSAGE, *cmd], capture_output=True, text=True, cwd=CODE)
    wall, rss, rc = r.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()[-2000:]}")
    return float(wall), float(rss)


def side_by_side(label: str, ours: list[str], floor: list[str], runs: int, target: float, note: str = "") -> dict:
    a, b = [], []
    for _ in range(runs):  # alternating, so that both see the same machine
        a.append(timed(ours))
        b.append(timed(floor))
    wa, ra = statistics.median(w for w, _ in a), max(r for _, r in a)
    wb = statistics.median(w for w, _ in b)
    ratio = wa / wb
    print(f"{label:<34} {wa:8.2f} s {ra:7.0f} MiB {wb:8.2f} s {ratio:6.2f}x  (target <= {target}x{note})"
          f"  {'met' if ratio <= target else 'NOT MET'}", flush=True)
    return {"ours": wa, "rss": ra, "floor": wb, "ratio": ratio}


def samples_store(label: str) -> Path:
    from analyze import build_store

    gpus = {"10M": 64, "100M": 640}[label]
    path = Path(f"/tmp/gpu-audit-speed-{label}")
    build_store(path, int(float(label[:-1]) * 1e6), gpus=gpus, hosts=gpus // 8)
    return path


def one_device_store() -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path("/tmp/gpu-audit-speed-one")
    f = path / "samples" / "host=h1" / "date=2026-11-28" / "h1-0.parquet"
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        n = 3600
        ts = (1795824000 + np.arange(n)) * 1_000_000
        pq.write_table(pa.table({
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "host": ["h1"] * n, "uuid": ["GPU-1"] * n,
            "name": ["NVIDIA H100 80GB HBM3"] * n, "util_gpu_pct": pa.array(np.linspace(0, 90, n), pa.float32()),
            "mem_used_bytes": pa.array(np.full(n, 40 * 2**30), pa.int64()), "mem_total_bytes": pa.array(np.full(n, 80 * 2**30), pa.int64()),
            "power_w": pa.array(np.full(n, 300.0), pa.float32()), "interval_s": pa.array(np.ones(n), pa.float32()),
        }), f)
    return path


def fleet_store(devices: int = 10_000, days: int = 30) -> Path:
    from fleet import PER_HOST, host_files

    path = Path(f"/tmp/gpu-audit-speed-fleet-{devices}x{days}-1h")
    if not (path / ".complete").exists():
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            rows = sum(ex.map(host_files, [(str(path), h, days, 3600) for h in range(devices // PER_HOST)], chunksize=32))
        (path / ".complete").write_text(str(rows))
    return path


def imports(store: Path) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpu_audit", "report", str(store)],
                       capture_output=True, text=True, cwd=CODE)
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cum, name = line[len("import time:"):].split("|")
            rows.append((int(cum), name[1:].rstrip()))
    top = {name.strip() for _, name in rows}
    total = sum(c for c, n in rows if not n.startswith(" "))  # top-level imports only (no leading space)
    print(f"imports of a terminal-only report: {total / 1e6:.2f} s in all; "
          + ", ".join(f"{m}: {'imported' if m in top else 'not imported'}" for m in ("plotly", "jinja2", "pandas")))
    for cum, name in sorted((x for x in rows if not x[1].startswith(" ")), reverse=True)[:8]:
        print(f"  {cum / 1e3:8.1f} ms  {name}")


def main() -> None:
    args = sys.argv[1:]
    runs = 3
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i:i + 2]
    global CODE
    if "--code" in args:
        i = args.index("--code")
        CODE = Path(args[i + 1]).resolve()
        del args[i:i + 2]
        subprocess.run([sys.executable, "-m", "compileall", "-q", "gpu_audit"], cwd=CODE, capture_output=True)
    parts = args or ["10M", "100M", "one", "fleet", "demo", "imports"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "gpu_audit"], cwd=CODE, capture_output=True)  # as pip installs it
    print(f"report speed, {runs} runs each, medians; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code: {CODE}")
    print(f"{'work':<34} {'report':>10} {'peak RSS':>11} {'floor':>10} {'ratio':>7}")
    out = tempfile.mkdtemp(prefix="gpu-audit-speed-")
    for part in parts:
        if part in ("10M", "100M"):
            store = samples_store(part)
            side_by_side(f"{part} samples ({ {'10M': 64, '100M': 640}[part]} GPUs, 43 h)",
                         [*CLI, "report", str(store), "--json", f"{out}/f.json"],
                         [sys.executable, "-c", FLOOR, str(store)], runs, 2.5 if part == "10M" else 2.0,
                         ", <= 1024 MiB" if part == "100M" else "")
        elif part == "one":
            store = one_device_store()
            side_by_side("one device, terminal report", [*CLI, "report", str(store)],
                         [sys.executable, "-c", "import duckdb, pyarrow.parquet"], runs, 2.5)
            side_by_side("  gpu-audit --help", [*CLI, "--help"], [sys.executable, "-c", "import duckdb, pyarrow.parquet"], runs, 2.5)
        elif part == "fleet":
            t0 = time.perf_counter()
            store = fleet_store()
            gen = time.perf_counter() - t0
            wall, rss = timed([*CLI, "report", str(store), "--json", f"{out}/fleet.json"])
            ok = wall < 60 and rss < 2048
            print(f"{'10k GPUs x 30 days (1 h rollups)':<34} {wall:8.2f} s {rss:7.0f} MiB {'':>10} {'':>7}  "
                  f"(target < 60 s, < 2048 MiB; generated in {gen:.0f} s)  {'met' if ok else 'NOT MET'}", flush=True)
        elif part == "demo":
            wall, rss = timed([*CLI, "demo", "--out", f"{out}/demo", "--start", "2026-11-28T00:00:00Z"])
            print(f"{'gpu-audit demo':<34} {wall:8.2f} s {rss:7.0f} MiB", flush=True)
        elif part == "spark":
            store = samples_store("100M")
            outs = {}
            for engine in ("duckdb", "spark"):
                wall, rss = timed([*CLI, "report", str(store), "--json", f"{out}/{engine}.json", "--engine", engine,
                                   "--spark-master", "local[2]"])
                outs[engine] = json.loads(Path(f"{out}/{engine}.json").read_text())
                print(f"{'100M on --engine ' + engine:<34} {wall:8.2f} s {rss:7.0f} MiB (driver process)", flush=True)
            a, b = outs["duckdb"]["fleet"], outs["spark"]["fleet"]
            worst = max(abs(a[k] - b[k]) / max(1e-12, abs(a[k])) for k in ("spend_usd", "waste_usd", "idle_usd", "gpu_hours"))
            f = outs["spark"]
            rows = len(f["devices"]) * math.ceil(f["window"]["hours"])
            print(f"  fleet figures agree to {worst:.1e} (relative); back to the driver: the hourly table (~{rows:,} device-hours) "
                  f"and {len(f['devices'])} devices' histograms", flush=True)
        elif part == "imports":
            imports(one_device_store())
        else:
            raise SystemExit(f"unknown part {part!r}: 10M 100M one fleet demo imports")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
