"""Collector benchmark: our CPU per device-sample, and bytes on disk per device-sample.

Runs the real sampling loop and writer against the virtual NVML: 8 x H100 with processes, 1 s
interval, HOURS simulated hours (default 4). The CPU time includes the virtual NVML's callbacks, so
it is an upper bound of gpu-audit's own overhead. Disk size is measured on the day's compacted
file(s) and compared with the same samples written as `nvidia-smi --query-gpu=... --format=csv`.

Targets: < 100 us of CPU per device-sample; < 10 bytes per device-sample on disk at 1 s.
Usage: python bench/collector.py [HOURS]
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_audit.collect.run import collect  # noqa: E402
from gpu_audit.store.compact import compact_store  # noqa: E402

CSV_FIELDS = "timestamp,name,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,power.limit,clocks.sm,clocks.max.sm,temperature.gpu"


def nvidia_smi_csv_bytes(rows: list[dict]) -> int:
    """Size of the same samples as nvidia-smi's CSV (with units, as it writes by default)."""
    n = len(CSV_FIELDS.replace(",", ", ")) + 1
    for r in rows:
        line = (f"{r['ts']:%Y/%m/%d %H:%M:%S}.000, {r['name']}, {r['uuid']}, {r['util_gpu_pct']:.0f} %, {r['util_mem_pct']:.0f} %, "
                f"{r['mem_used_bytes'] // 2**20} MiB, {r['mem_total_bytes'] // 2**20} MiB, {r['power_w']:.2f} W, "
                f"{r['power_limit_w']:.2f} W, {r['sm_clock_mhz']} MHz, {r['sm_clock_max_mhz']} MHz, {r['temp_c']}")
        n += len(line) + 1
    return n


def main() -> None:
    hours = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    scenario = ROOT / "gpu_audit" / "scenarios" / "h100-inference.toml"
    with tempfile.TemporaryDirectory() as tmp:
        text = scenario.read_text().replace("[host]\n", '[host]\nstart = "2026-11-28T00:00:00Z"\n', 1)
        sc = Path(tmp) / "s.toml"
        sc.write_text(text)
        store = os.path.join(tmp, "store")
        t0 = time.perf_counter()
        _, stats = collect(store, interval_s=1.0, duration_s=hours * 3600, simulate=str(sc), handle_signals=False,
                           flush_every_s=60.0)
        wall = time.perf_counter() - t0
        n = stats.device_samples
        raw = sum(os.path.getsize(f) for f in glob.glob(f"{store}/samples/**/*.parquet", recursive=True))
        compact_store(store, ("samples",))
        files = glob.glob(f"{store}/samples/**/*.parquet", recursive=True)
        compacted = sum(os.path.getsize(f) for f in files)
        rows = pq.read_table(files[0]).to_pylist()
        csv = nvidia_smi_csv_bytes(rows) * n / len(rows)
        print(f"collector benchmark: 8 x H100 (virtual NVML) with processes, 1 s interval, {hours:g} simulated hours")
        print(f"  device-samples:                 {n:,} (+{stats.process_rows:,} process rows)")
        print(f"  wall time:                      {wall:.1f} s ({n / wall:,.0f} device-samples/s)")
        ours = stats.cpu_s - stats.virtual_nvml_s
        print(f"  CPU per device-sample, all:     {1e6 * stats.cpu_s / n:.1f} us (the simulated C functions: {1e6 * stats.virtual_nvml_s / n:.1f} us)")
        print(f"  CPU per device-sample, ours:    {1e6 * ours / n:.1f} us  (target < 100 us; gpu-audit + pynvml marshalling)")
        print(f"  disk per device-sample, flushed every 60 s: {raw / n:.1f} B ({len(glob.glob(f'{store}/processes/**/*.parquet', recursive=True))} process files)")
        print(f"  disk per device-sample, compacted day:      {compacted / n:.2f} B  (target < 10 B)")
        print(f"  nvidia-smi CSV of the same fields:          {csv / n:.1f} B  ({csv / compacted:.0f}x larger)")


if __name__ == "__main__":
    main()
