#!/usr/bin/env bash
# Real-hardware check, for a machine with an NVIDIA GPU and no network.
# It needs Python 3 with nvidia-ml-py, typer, rich, pyarrow (and PyTorch for a load, optional);
# it runs gpu-audit from the checkout (PYTHONPATH=.), installs nothing.
#
#   bash scripts/device-check.sh OUTDIR
#
# A dry run on a machine without a GPU (to check the script itself, not NVML):
#   DEVICE_CHECK_SIMULATE=examples/scenarios/h200-mig.toml bash scripts/device-check.sh OUTDIR
#
# Writes OUTDIR/doctor.txt, OUTDIR/summary.txt and a few logs (at most 8 files, none in sub-folders,
# so that the device tool brings them all back); the store itself goes to $DEVICE_CHECK_STORE
# (default /tmp/gpu-audit-device-check-store), 60 s of collect at 1 s under load. The summary says:
# which fields real NVML returned as null, GPM values under load, and the collector's CPU time
# against `nvidia-smi --query-gpu=... -l 1` over the same minute.
set -u
out=${1:?usage: device-check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
store=${DEVICE_CHECK_STORE:-/tmp/gpu-audit-device-check-store}
rm -rf "$store"
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
sim=()
if [ -n "${DEVICE_CHECK_SIMULATE:-}" ]; then
  sim=(--simulate "$DEVICE_CHECK_SIMULATE")
  echo "dry run against the virtual NVML ($DEVICE_CHECK_SIMULATE)"
fi

echo "== doctor" | tee "$out/doctor.txt"
$py -m gpu_audit doctor "${sim[@]}" 2>&1 | tee -a "$out/doctor.txt"

echo "== load"
$py - <<'PY' > "$out/load.txt" 2>&1 &
import time
try:
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.time() + 70
    n = 0
    while time.time() < end:
        for _ in range(50):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        n += 50
    print("matmuls", n)
except Exception as e:  # no torch: the collector still runs on an idle GPU
    print("no load:", e)
PY
load=$!
sleep 3

echo "== collect 60 s at 1 s, and nvidia-smi beside it"
fields=timestamp,name,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,power.limit,clocks.sm,clocks.max.sm,temperature.gpu
if command -v nvidia-smi >/dev/null; then
  ( exec nvidia-smi --query-gpu=$fields --format=csv -l 1 > "$out/nvidia-smi.csv" ) &
  smi=$!
fi
rt=()
[ ${#sim[@]} -gt 0 ] && rt=(--realtime)
# The collector's CPU time, measured by its parent (GNU time may not be installed there).
$py - "$out" "$store" "${DEVICE_CHECK_SECONDS:-60}" "${sim[@]}" "${rt[@]}" <<'PY' || true
import resource, subprocess, sys
out, store, secs, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(f"{out}/collect.txt", "w") as o, open(f"{out}/collect.err", "w") as e:
    subprocess.run([sys.executable, "-m", "gpu_audit", "collect", "--interval", "1s", "--duration", f"{secs}s",
                    "--out", store, *extra], stdout=o, stderr=e)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(f"{out}/collect.time", "w").write(f"User time (seconds): {u.ru_utime:.2f}\nSystem time (seconds): {u.ru_stime:.2f}\n")
PY
if [ -n "${smi:-}" ]; then
  smi_ticks=$(awk '{print $14+$15}' /proc/$smi/stat 2>/dev/null)
  kill $smi 2>/dev/null
fi
wait $load 2>/dev/null
cat "$out/collect.txt"

$py - "$out" "$store" "${smi_ticks:-}" <<'PY' | tee "$out/summary.txt"
import glob, os, re, sys
import pyarrow as pa, pyarrow.parquet as pq
out, store, smi_ticks = sys.argv[1], sys.argv[2], sys.argv[3]
files = [f for f in glob.glob(f"{store}/samples/*/*/*.parquet")]
t = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
if t is None:
    print("no samples written"); sys.exit(1)
print(f"rows {t.num_rows}, devices {len(set(t['uuid'].to_pylist()))}")
for name in t.column_names:
    col = t[name]
    nulls = col.null_count
    vals = [v for v in col.to_pylist() if v is not None]
    if name in ("ts", "host", "uuid", "name", "source"):
        continue
    if vals and isinstance(vals[0], (int, float)) and not isinstance(vals[0], bool):
        print(f"{name:22s} nulls {nulls:4d}/{t.num_rows}  min {min(vals):.1f}  mean {sum(vals)/len(vals):.1f}  max {max(vals):.1f}")
    else:
        print(f"{name:22s} nulls {nulls:4d}/{t.num_rows}  {sorted(set(map(str, vals)))[:3]}")
tm = open(f"{out}/collect.time").read()
u = float(re.search(r"User time \(seconds\): ([\d.]+)", tm).group(1)); s = float(re.search(r"System time \(seconds\): ([\d.]+)", tm).group(1))
print(f"gpu-audit collect CPU over the minute: {u + s:.2f} s (user {u:.2f}, system {s:.2f}), including Python start-up")
if smi_ticks:
    print(f"nvidia-smi -l 1 CPU over the same minute: {int(smi_ticks) / os.sysconf('SC_CLK_TCK'):.2f} s")
PY
