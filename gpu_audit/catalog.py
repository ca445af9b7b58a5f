"""Built-in facts about GPU models: specs, MIG profiles and one dated on-demand price each.

Sources are the project's reference notes (shared/reference/gpus.md, mig.md, prices.md), which cite
NVIDIA datasheet reproductions, NVIDIA's mig-parted and go-nvml tables, and public price lists.
Every price carries its as-of date and source; `gpu-audit prices` prints them. A model with no
sourced price (B200 today) has ``price_per_hour=None``: its devices are reported as unpriced until a
pricing file names them, never billed at $0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class MigProfile:
    name: str  # e.g. "3g.40gb"
    slices: int  # compute slices out of the GPU's total (7, or 4 on an A30)
    memory_mb: int
    max_instances: int


@dataclass(frozen=True)
class GpuModel:
    key: str  # short catalog key, also the pricing key, e.g. "H100 SXM"
    nvml_name: str  # what nvmlDeviceGetName returns
    memory_mib: int  # what nvmlDeviceGetMemoryInfo reports as total, in MiB
    power_limit_w: int
    sm_clock_max_mhz: int
    bf16_dense_tflops: float
    fp8: bool  # FP8 tensor cores (Hopper, Ada, Blackwell)
    gpm: bool  # GPM metrics (Hopper and newer)
    arch: str
    mig_total_slices: int = 0  # 0: no MIG
    mig_profiles: tuple[MigProfile, ...] = ()
    price_per_hour: float | None = None
    price_as_of: str | None = None
    price_source: str | None = None
    match: tuple[str, ...] = field(default=())  # extra name patterns (regex, case-insensitive)
    provider: str = "aws"  # whose list the catalog price is from: prices are compared within one provider
    quoted_gpus: int = 1  # the price is an instance of this many GPUs divided by it: billed whole (per node)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


def _profiles(rows: str) -> tuple[MigProfile, ...]:
    out = []
    for row in rows.split():
        name, slices, mb, inst = row.split(":")
        out.append(MigProfile(name, int(slices), int(mb), int(inst)))
    return tuple(out)


_A100_40 = _profiles("1g.5gb:1:4864:7 1g.10gb:1:9856:4 2g.10gb:2:9856:3 3g.20gb:3:19968:2 4g.20gb:4:19968:1 7g.40gb:7:40192:1")
_A100_80 = _profiles("1g.10gb:1:9856:7 1g.20gb:1:19968:4 2g.20gb:2:19968:3 3g.40gb:3:40192:2 4g.40gb:4:40192:1 7g.80gb:7:80384:1")
_H100_80 = _profiles("1g.10gb:1:10240:7 1g.20gb:1:20480:4 2g.20gb:2:20480:3 3g.40gb:3:40960:2 4g.40gb:4:40960:1 7g.80gb:7:81920:1")
_H200 = _profiles("1g.18gb:1:18432:7 1g.35gb:1:35840:4 2g.35gb:2:35840:3 3g.71gb:3:72704:2 4g.71gb:4:72704:1 7g.141gb:7:144384:1")
_B200 = _profiles("1g.23gb:1:23552:7 1g.45gb:1:46080:4 2g.45gb:2:46080:3 3g.90gb:3:92160:2 4g.90gb:4:92160:1 7g.180gb:7:184320:1")

_AWS = "AWS on-demand us-east-1 list, per GPU (gpuaudit/cli gpu_specs.go @1b4a207d)"

MODELS: tuple[GpuModel, ...] = (
    GpuModel("B200", "NVIDIA B200", 183359, 1000, 1965, 2250, True, True, "blackwell", 7, _B200,
             None, None, None),
    GpuModel("H200", "NVIDIA H200", 143771, 700, 1980, 989, True, True, "hopper", 7, _H200,
             13.40, "2026-05", "AWS p5e.48xlarge ~$107/h / 8, an estimate (awsnegotiations.com)",
             (r"\bH200\b",), quoted_gpus=8),
    GpuModel("H100 SXM", "NVIDIA H100 80GB HBM3", 81559, 700, 1980, 989, True, True, "hopper", 7, _H100_80,
             12.29, "2026-Q1", _AWS + "; p5.48xlarge list before the June 2025 cut, verify",
             (r"\bH100\b(?!.*\b(PCIe|NVL)\b)",), quoted_gpus=8),
    GpuModel("H100 PCIe", "NVIDIA H100 PCIe", 81559, 350, 1755, 756, True, True, "hopper", 7, _H100_80,
             2.79, "2026-05-22", "RunPod H100 PCIe Secure Cloud (spheron.network blog)",
             (r"\bH100\b.*\bPCIe\b",), "runpod"),
    GpuModel("A100 80GB", "NVIDIA A100-SXM4-80GB", 81920, 400, 1410, 312, False, False, "ampere", 7, _A100_80,
             5.12, "2026-Q1", _AWS + "; p4de.24xlarge / 8", (r"\bA100\b.*\b80\s?GB\b",), quoted_gpus=8),
    GpuModel("A100 40GB", "NVIDIA A100-SXM4-40GB", 40960, 400, 1410, 312, False, False, "ampere", 7, _A100_40,
             4.10, "2026-Q1", _AWS + "; p4d.24xlarge / 8", (r"\bA100\b(?!.*\b80\s?GB\b)",), quoted_gpus=8),
    GpuModel("L40S", "NVIDIA L40S", 46068, 350, 2520, 362, True, False, "ada", 0, (),
             1.86, "2026-Q1", _AWS + "; g6e.xlarge", (r"\bL40S\b",)),
    GpuModel("L4", "NVIDIA L4", 23034, 72, 2040, 121, True, False, "ada", 0, (),
             0.80, "2026-Q1", _AWS + "; g6.xlarge", (r"\bL4\b",)),
    GpuModel("A10G", "NVIDIA A10G", 23028, 300, 1710, 70, False, False, "ampere", 0, (),
             1.01, "2026-06", _AWS + "; g5.xlarge, re-confirmed June 2026", (r"\bA10G\b",)),
    GpuModel("T4", "Tesla T4", 15360, 70, 1590, 65, False, False, "turing", 0, (),
             0.53, "2026-Q1", _AWS + "; g4dn.xlarge", (r"\bT4\b",)),
    GpuModel("V100", "Tesla V100-SXM2-32GB", 32768, 300, 1530, 125, False, False, "volta", 0, (),
             3.06, "2026-Q1", _AWS + "; p3.2xlarge (16 GB part)", (r"\bV100\b",)),
)

BY_KEY = {m.key.lower(): m for m in MODELS}


def find_model(nvml_name: str) -> GpuModel | None:
    """The catalog entry for an NVML device name (``NVIDIA H100 80GB HBM3`` -> ``H100 SXM``)."""
    if not nvml_name:
        return None
    for m in MODELS:
        if m.nvml_name.lower() == nvml_name.lower():
            return m
    for m in MODELS:
        for pat in m.match or (rf"\b{re.escape(m.key)}\b",):
            if re.search(pat, nvml_name, re.IGNORECASE):
                return m
    return None


def model_by_key(key: str) -> GpuModel | None:
    return BY_KEY.get(key.lower())


def mig_profile_for(parent_name: str, slices: int, memory_mb: int) -> str:
    """The MIG profile name for a MIG device (``3g.40gb``) from its slice count and memory.

    NVML gives the slices and memory through the device attributes; the name is the known profile
    with that slice count whose memory is nearest, or ``<slices>g.<GB>gb`` for an unknown GPU.
    """
    model = find_model(parent_name)
    candidates = [p for p in (model.mig_profiles if model else ()) if p.slices == slices]
    if candidates:
        return min(candidates, key=lambda p: abs(p.memory_mb - memory_mb)).name
    return f"{slices}g.{round(memory_mb / 1024)}gb"


def mig_profile(parent_name: str, profile: str) -> MigProfile | None:
    model = find_model(parent_name)
    for p in model.mig_profiles if model else ():
        if p.name == profile:
            return p
    return None


# A parameter count in a model name: "llama-3.1-70b", "Qwen2.5-0.5B-Instruct"; not "a3b" (active
# parameters of an MoE) and not "8x7b" (MoE experts share layers: the name does not give the size).
PARAMS_IN_NAME = re.compile(r"(?<![A-Za-z0-9.x])(\d+(?:\.\d+)?)\s*[bB](?![A-Za-z0-9])")


def params_in_name(model: str) -> float | None:
    """Billions of parameters a model's name gives (``llama-3.1-70b`` -> 70.0), or None."""
    if re.search(r"\d\s*x\s*\d", model or ""):
        return None
    m = PARAMS_IN_NAME.search(model or "")
    return float(m.group(1)) if m else None
