"""Token-log benchmark: `report --json` with per-request token logs of 1M and 10M records.

A small store (16 GPUs on 4 hosts, one day at 60 s) and token logs of N requests over that day
(4 models, gpu_uuid on every record), as Parquet and, for the smaller sizes, as JSONL and CSV. Each report
runs in a fresh process; its wall time and peak RSS are printed. The per-request records are
aggregated in DuckDB over the Arrow table (model, host and GPU strings dictionary-encoded), so memory
should grow with the log's own size, not with Python objects per record.

Usage: python bench/tokens.py [SIZES...]   (default: 1M 10M; files are cached in /tmp)
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
HOSTS, GPUS_PER_HOST = 4, 4
MODELS = ["llama-3.1-70b", "qwen2.5-7b", "mistral-7b-instruct", "llama-3.1-8b"]
T0 = 1795824000  # 2026-11-28T00:00:00Z
DAY = 86400


def build_store(path: Path) -> None:
    if (path / ".complete").exists():
        return
    t = np.arange(0, DAY, 60, dtype=np.int64)
    for h in range(HOSTS):
        parts = []
        for g in range(GPUS_PER_HOST):
            util = np.clip(40 + 35 * np.cos(2 * np.pi * (t / 3600 - 15) / 24), 0, 100).astype(np.float32)
            parts.append(pa.table({
                "ts": pa.array((T0 + t) * 1_000_000, pa.timestamp("us", tz="UTC")), "host": [f"host-{h}"] * len(t),
                "uuid": [f"GPU-{h}-{g}"] * len(t), "name": ["NVIDIA H100 80GB HBM3"] * len(t), "util_gpu_pct": util,
                "mem_used_bytes": np.full(len(t), 70 * 2**30, dtype=np.int64), "mem_total_bytes": np.full(len(t), 80 * 2**30, dtype=np.int64),
                "interval_s": np.full(len(t), 60.0, dtype=np.float32), "source": ["virtual"] * len(t)}))
        folder = path / "samples" / f"host=host-{h}" / "date=2026-11-28"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(parts), folder / f"host-{h}-bench-0.parquet")
    (path / ".complete").write_text("ok")


def build_tokens(n: int, parquet: Path, jsonl: Path | None, csv_path: Path | None = None) -> None:
    rng = np.random.default_rng(3)
    if not parquet.exists():
        gpu = rng.integers(0, HOSTS * GPUS_PER_HOST, n)
        table = pa.table({
            "timestamp": pa.array(((T0 + rng.uniform(0, DAY, n)) * 1e6).astype(np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "model": np.array(MODELS, dtype=object)[gpu % len(MODELS)], "host": np.array([f"host-{g // GPUS_PER_HOST}" for g in range(16)], dtype=object)[gpu],
            "prompt_tokens": rng.lognormal(7, 0.5, n).astype(np.int64), "completion_tokens": rng.lognormal(5, 0.8, n).astype(np.int64),
            "gpu_uuid": np.array([f"GPU-{g // GPUS_PER_HOST}-{g % GPUS_PER_HOST}" for g in range(16)], dtype=object)[gpu]})
        pq.write_table(table, parquet, compression="zstd")
    if csv_path is not None and not csv_path.exists():
        import pyarrow.csv as pcsv

        pcsv.write_csv(pq.read_table(parquet), csv_path)
    if jsonl is not None and not jsonl.exists():
        t = pq.read_table(parquet)
        t = t.set_column(0, "timestamp", pa.array(t["timestamp"].cast(pa.int64()).to_numpy() / 1e6))
        with open(jsonl, "w") as f:
            for batch in t.to_batches(200_000):
                for r in batch.to_pylist():
                    f.write(json.dumps(r) + "\n")


def one(store: str, tokens: str) -> None:
    out = Path(tokens).with_suffix(".findings.json")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gpu_audit", "report", store, "--tokens", tokens, "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    wall = time.perf_counter() - t0
    f = json.loads(out.read_text())
    print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "output_tokens": sum(m["completion_tokens"] for m in f["models"])}))


def main() -> None:
    sizes = [s.upper() for s in sys.argv[1:]] or ["1M", "10M"]
    store = Path("/tmp/gpu-audit-bench-tokens-store")
    build_store(store)
    print(f"token-log benchmark: {HOSTS * GPUS_PER_HOST} GPUs, one day; `gpu-audit report --tokens` in a fresh process")
    print(f"{'requests':>9} {'format':>8} {'file MiB':>9} {'report s':>9} {'records/s':>12} {'peak RSS':>10}")
    for label in sizes:
        n = int(float(label[:-1]) * {"K": 1e3, "M": 1e6}[label[-1]])
        pq_path = Path(f"/tmp/gpu-audit-bench-tokens-{label}.parquet")
        js_path = Path(f"/tmp/gpu-audit-bench-tokens-{label}.jsonl") if n <= 2_000_000 else None
        csv_path = Path(f"/tmp/gpu-audit-bench-tokens-{label}.csv") if n <= 2_000_000 else None
        build_tokens(n, pq_path, js_path, csv_path)
        results = {}
        for fmt, path in (("parquet", pq_path), ("jsonl", js_path), ("csv", csv_path)):
            if path is None:
                continue
            r = subprocess.run([sys.executable, __file__, "--one", str(store), str(path)], capture_output=True, text=True, cwd=ROOT)
            if r.returncode:
                raise SystemExit(r.stderr)
            d = json.loads(r.stdout)
            results[fmt] = d["output_tokens"]
            print(f"{label:>9} {fmt:>8} {path.stat().st_size / 2**20:9.1f} {d['wall']:9.2f} {n / d['wall']:12,.0f} {d['rss']:8.0f} MiB")
        if len(set(results.values())) > 1:
            raise SystemExit(f"the formats disagree on output tokens: {results}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3])
    else:
        main()
