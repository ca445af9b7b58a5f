"""Scenario files: one simulated host, its GPUs, their workloads over time, and faults.

A scenario is TOML (format in docs/virtual-nvml.md). Every value the virtual NVML returns comes from
``Scenario.state(device, t)``: a pure function of the device, the time and the seed, so that a run
is reproducible and a test can compute what the store must hold.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from gpu_audit.catalog import GpuModel, MigProfile, model_by_key, MODELS, MIB
from gpu_audit.errors import GpuAuditError
from gpu_audit.tomlfile import read_toml
from gpu_audit.units import parse_duration, parse_time

GB = 1024**3

# How the GPM metrics relate to "a kernel was running" (util_gpu) for each kind of work: serving
# keeps a kernel running most of the time with few SMs busy, so SM activity is well below util_gpu.
_PROFILE = {
    "idle": (0.0, 0.0, 0.0, 0.0),
    "constant": (0.6, 0.35, 0.3, 0.4),
    "training": (0.85, 0.5, 0.55, 0.45),
    "diurnal": (0.45, 0.25, 0.2, 0.55),
    "notebook": (0.5, 0.3, 0.2, 0.3),
    "memory_bound": (0.35, 0.2, 0.1, 0.95),
}
KINDS = tuple(_PROFILE)
FAULT_FIELDS = ("util", "memory", "power", "temperature", "clocks", "throttle", "processes", "gpm")


class ScenarioError(GpuAuditError):
    pass


_M64 = (1 << 64) - 1


class Rand:
    """A tiny deterministic random stream (splitmix64): same key, same numbers, in any process.

    Python's ``hash()`` of a string is salted per process and ``random.Random(str)`` costs a SHA-512,
    so neither suits a value recomputed for every device at every tick.
    """

    __slots__ = ("s",)

    def __init__(self, *key: int) -> None:
        s = 0x9E3779B97F4A7C15
        for k in key:
            s = ((s ^ (k & _M64)) * 0xBF58476D1CE4E5B9) & _M64
        self.s = s

    def random(self) -> float:
        self.s = (self.s + 0x9E3779B97F4A7C15) & _M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return ((z ^ (z >> 31)) >> 11) / 9007199254740992.0

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def gauss(self, mu: float, sigma: float) -> float:
        # Sum of three uniforms: bell-shaped, bounded, and cheap.
        return mu + sigma * (self.random() + self.random() + self.random() - 1.5) * 2.0


def _key(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class Workload:
    kind: str = "idle"
    util: float = 50.0
    peak_util: float = 80.0
    trough_util: float = 10.0
    peak_hour: float = 15.0
    mem_gb: float = 0.0
    mem_frac: float = 0.97
    burst_util: float = 40.0
    burst_prob: float = 0.02
    hours: tuple[float, float] | None = None  # active UTC hours [start, end); idle outside
    off_memory: str = "release"  # outside `hours`: "release" or "hold" the memory
    process: str = "python3"
    model: str | None = None  # served model name (token logs, engines)
    tokens_per_s: float = 0.0  # output tokens/s at 100% util
    prompt_ratio: float = 3.0  # prompt tokens per output token
    # Who runs it (the collector reads these from a fake /proc and /var/log/pods made for the run):
    user: str | None = None  # the Unix user of its process
    slurm_job: str | None = None  # a Slurm job id
    pod: str | None = None  # a Kubernetes pod, "namespace/name"

    def active(self, t: float) -> bool:
        if self.hours is None:
            return True
        h = (t % 86400) / 3600
        a, b = self.hours
        return a <= h < b if a <= b else (h >= a or h < b)

    def util_at(self, t: float, rng: Rand) -> float:
        if self.kind == "idle" or not self.active(t):
            return 0.0
        noise = rng.gauss(0, 2.0)
        if self.kind == "constant":
            u = self.util + noise
        elif self.kind == "training":
            u = self.util + rng.gauss(0, 1.5) if self.util != 50.0 else 96 + rng.gauss(0, 1.5)
        elif self.kind == "diurnal":
            h = (t % 86400) / 3600
            phase = 0.5 + 0.5 * math.cos(2 * math.pi * (h - self.peak_hour) / 24)
            u = self.trough_util + (self.peak_util - self.trough_util) * phase + noise
        elif self.kind == "notebook":
            u = self.burst_util + noise if rng.random() < self.burst_prob else 0.0
        elif self.kind == "memory_bound":
            u = self.util + noise
        else:  # pragma: no cover - validated at load
            u = 0.0
        return min(100.0, max(0.0, u))

    def mem_at(self, t: float, total_bytes: int) -> int:
        if self.kind == "idle":
            return 0
        if not self.active(t) and self.off_memory == "release":
            return 0
        if self.kind == "memory_bound":
            return int(total_bytes * self.mem_frac)
        return min(int(self.mem_gb * GB), total_bytes)


@dataclass(frozen=True)
class VDevice:
    """One simulated device: a whole GPU, or a MIG device (``parent`` set)."""

    index: int
    uuid: str
    model: GpuModel
    workload: Workload
    pid: int
    parent: int | None = None  # index of the parent GPU for a MIG device
    mig: MigProfile | None = None
    gi_id: int = 0
    children: tuple[int, ...] = ()  # MIG device ids (positions in Scenario.devices)
    pci_bus_id: str = ""

    @property
    def mem_total_bytes(self) -> int:
        return self.mig.memory_mb * MIB if self.mig else self.model.memory_bytes


@dataclass(frozen=True)
class Fault:
    kind: str  # not_supported | lost | slow | no_permission
    gpus: tuple[int, ...]
    field: str | None = None
    at: float = 0.0
    until: float = math.inf
    delay_s: float = 0.0


@dataclass
class Scenario:
    host: str
    devices: list[VDevice]  # whole GPUs first (index order), then MIG devices
    faults: list[Fault] = field(default_factory=list)
    seed: int = 0
    start: float | None = None
    driver_version: str = "550.90.07"
    nvml_version: str = "12.550.90.07"
    cuda_driver_version: int = 12040
    path: str = "<scenario>"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def gpus(self) -> list[VDevice]:
        return [d for d in self.devices if d.parent is None]

    def fault(self, dev: VDevice, t: float, kind: str, fld: str | None = None) -> Fault | None:
        gpu = dev.parent if dev.parent is not None else dev.index
        for f in self.faults:
            if f.kind == kind and gpu in f.gpus and f.at <= t < f.until and (fld is None or f.field == fld):
                return f
        return None

    def state(self, dev: VDevice, t: float) -> dict[str, Any]:
        """Everything NVML would report for ``dev`` at time ``t`` (relative times from run start)."""
        # A deterministic random stream per (seed, device, second) keeps runs reproducible.
        key = (dev.uuid, int(t))
        cached = self._cache.get(dev.uuid)
        if cached is not None and cached[0] == key:
            return cached[1]
        st = self._state(dev, t)
        self._cache[dev.uuid] = (key, st)
        return st

    def _state(self, dev: VDevice, t: float) -> dict[str, Any]:
        rng = Rand(self.seed, _key(dev.uuid), int(t))
        if dev.children:
            kids = [self.state(self.devices[c], t) for c in dev.children]
            mem = sum(k["mem_used_bytes"] for k in kids)
            busy = sum(k["util"] * self.devices[c].mig.slices for k, c in zip(kids, dev.children)) / 7
            st = self._derived(dev, busy, "constant", rng)
            st["mem_used_bytes"] = mem
            return st
        w = dev.workload
        u = w.util_at(t, rng)
        st = self._derived(dev, u, w.kind, rng)
        st["mem_used_bytes"] = w.mem_at(t, dev.mem_total_bytes)
        return st

    @staticmethod
    def _derived(dev: VDevice, u: float, kind: str, rng: Rand) -> dict[str, Any]:
        sm, occ, tensor, dram = _PROFILE[kind]
        limit = dev.model.power_limit_w
        idle_w = 0.1 * limit
        power = idle_w + (0.9 * limit - idle_w) * (u / 100) ** 0.8 + rng.uniform(-2, 2)
        return {
            "util": u,
            "util_mem": min(100.0, u * dram * 0.9),
            "power_mw": int(max(idle_w * 0.8, power) * 1000),
            "sm_clock": int(dev.model.sm_clock_max_mhz * 0.99) if u > 2 else 345,
            "temp": int(30 + 45 * u / 100),
            "throttle": 0x1 if u < 1 else (0x4 if u > 97 else 0x0),
            "sm_active": u * sm,
            "sm_occupancy": u * occ,
            "tensor": u * tensor,
            "dram": min(100.0, u * dram) if kind != "memory_bound" else min(100.0, 40 + u),
        }

    def output_tokens_per_s(self, dev: VDevice, t: float) -> float:
        """Output tokens per second the device's served model produces at ``t`` (0 without one)."""
        if not dev.workload.model or not dev.workload.tokens_per_s:
            return 0.0
        rng = Rand(self.seed, _key(dev.uuid), int(t))
        return dev.workload.tokens_per_s * dev.workload.util_at(t, rng) / 100


def _err(path: str, where: str, what: str) -> ScenarioError:
    return ScenarioError(f"{path}: {where}: {what}")


def _workload(raw: Any, path: str, where: str) -> Workload:
    if raw is None:
        return Workload()
    if not isinstance(raw, dict):
        raise _err(path, where, "expected a table such as { kind = \"idle\" }")
    kind = raw.get("kind", "idle")
    if kind not in KINDS:
        raise _err(path, f"{where}.kind", f"unknown workload {kind!r} (known: {', '.join(KINDS)})")
    known = set(Workload.__dataclass_fields__)
    extra = set(raw) - known
    if extra:
        raise _err(path, where, f"unknown key {sorted(extra)[0]!r}")
    kw = dict(raw)
    if "hours" in kw:
        h = kw["hours"]
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, (int, float)) for x in h)):
            raise _err(path, f"{where}.hours", "expected [start_hour, end_hour]")
        kw["hours"] = (float(h[0]), float(h[1]))
    for k in ("user", "slurm_job", "pod", "process", "model"):
        if k in kw and not isinstance(kw[k], str):
            raise _err(path, f"{where}.{k}", f"expected a string, got {kw[k]!r}")
    for k, v in kw.items():
        default = getattr(Workload, k, None)
        if isinstance(default, float) and not isinstance(v, (int, float)):
            raise _err(path, f"{where}.{k}", f"expected a number, got {v!r}")
    return Workload(**kw)


def _rel(v: Any, path: str, where: str) -> float:
    try:
        return 0.0 if v in (0, "0") else parse_duration(v, where)
    except GpuAuditError as e:
        raise _err(path, where, e.message) from None


def load_scenario(path: str) -> Scenario:
    """Read and validate a scenario file; every mistake names the file and the field."""
    raw, _ = read_toml(path, "scenario file", ScenarioError)
    return parse_scenario(raw, path)


def parse_scenario(raw: dict[str, Any], path: str = "<scenario>") -> Scenario:
    host = raw.get("host", {})
    if not isinstance(host, dict) or not isinstance(host.get("name", ""), str):
        raise _err(path, "host", "expected a [host] table with a string name")
    name = host.get("name") or "virtual-host"
    seed = int(host.get("seed", 0))
    start = parse_time(str(host["start"]), f"{path}: host.start").timestamp() if "start" in host else None
    gpus_raw = raw.get("gpus")
    if not isinstance(gpus_raw, list) or not gpus_raw:
        raise _err(path, "gpus", "at least one [[gpus]] table is needed")

    # GPUs given back (the demo's second day applies the first day's cards): each keeps its uuid,
    # which comes from its place in the file (its slot), and the others keep theirs.
    released = host.get("released", [])
    if not isinstance(released, list) or not all(isinstance(u, str) for u in released):
        raise _err(path, "host.released", "expected a list of GPU uuids")
    whole: list[VDevice] = []
    slots: list[int] = []  # per device in whole, its slot
    slot = 0
    migs: list[tuple[int, dict, int]] = []
    for gi, g in enumerate(gpus_raw):
        where = f"gpus[{gi}]"
        if not isinstance(g, dict):
            raise _err(path, where, "expected a table")
        model = model_by_key(str(g.get("model", "")))
        if model is None:
            known = ", ".join(m.key for m in MODELS)
            raise _err(path, f"{where}.model", f"unknown GPU model {g.get('model')!r} (known: {known})")
        count = g.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise _err(path, f"{where}.count", f"expected a positive integer, got {count!r}")
        w = _workload(g.get("workload"), path, f"{where}.workload")
        mig = g.get("mig")
        if mig is not None and not model.mig_total_slices:
            raise _err(path, f"{where}.mig", f"{model.key} does not support MIG")
        for _ in range(count):
            slot += 1
            if _uuid(seed, name, slot - 1) in released:
                continue
            i, k = len(whole), slot - 1
            whole.append(VDevice(
                index=i, uuid=_uuid(seed, name, k), model=model, workload=w, pid=4000 + 10 * k,
                pci_bus_id=f"00000000:{0x18 + 0x10 * k:02X}:00.0",
            ))
            slots.append(k)
            for mi, m in enumerate(mig or []):
                migs.append((i, m, mi))
    if not whole:
        raise _err(path, "host.released", "every GPU of the host is released")

    devices = list(whole)
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for parent, m, mi in migs:
        where = f"gpus[mig {mi}]"
        if not isinstance(m, dict):
            raise _err(path, where, "expected a table with profile and workload")
        pmodel = whole[parent].model
        prof = next((p for p in pmodel.mig_profiles if p.name == m.get("profile")), None)
        if prof is None:
            names = ", ".join(p.name for p in pmodel.mig_profiles)
            raise _err(path, f"{where}.profile", f"unknown MIG profile {m.get('profile')!r} for {pmodel.key} (known: {names})")
        used[parent] = used.get(parent, 0) + prof.slices
        if used[parent] > pmodel.mig_total_slices:
            raise _err(path, where, f"MIG slices exceed {pmodel.mig_total_slices} on GPU {parent}")
        j = len(devices)
        children.setdefault(parent, []).append(j)
        devices.append(VDevice(
            index=parent, uuid="MIG-" + _uuid(seed, name, 1000 * (slots[parent] + 1) + mi)[4:], model=pmodel,
            workload=_workload(m.get("workload"), path, f"{where}.workload"), pid=5000 + 10 * j,
            parent=parent, mig=prof, gi_id=len(children[parent]), pci_bus_id=whole[parent].pci_bus_id,
        ))
    for parent, kids in children.items():
        d = devices[parent]
        devices[parent] = VDevice(**{**d.__dict__, "children": tuple(kids)})

    faults = []
    for fi, f in enumerate(raw.get("faults", [])):
        where = f"faults[{fi}]"
        kind = f.get("kind") if isinstance(f, dict) else None
        if kind not in ("not_supported", "lost", "slow", "no_permission", "init_no_permission", "init_driver_not_loaded"):
            raise _err(path, f"{where}.kind", f"unknown fault {kind!r} (known: not_supported, lost, slow, no_permission, "
                                               "init_no_permission, init_driver_not_loaded)")
        gpus = f.get("gpus", [f["gpu"]] if "gpu" in f else list(range(slot)))
        if not all(isinstance(x, int) and 0 <= x < slot for x in gpus):
            raise _err(path, f"{where}.gpus", f"expected GPU indices below {slot}")
        gpus = [slots.index(x) for x in gpus if x in slots]  # the file's GPU numbers, as places among those not released
        if not gpus:
            continue
        fld = f.get("field")
        if kind == "not_supported" and fld not in FAULT_FIELDS:
            raise _err(path, f"{where}.field", f"expected one of {', '.join(FAULT_FIELDS)}")
        faults.append(Fault(
            kind=kind, gpus=tuple(gpus), field=fld,
            at=_rel(f.get("at", 0), path, f"{where}.at"),
            until=_rel(f["until"], path, f"{where}.until") if "until" in f else math.inf,
            delay_s=_rel(f["delay"], path, f"{where}.delay") if "delay" in f else 0.0,
        ))
    return Scenario(
        host=name, devices=devices, faults=faults, seed=seed, start=start,
        driver_version=str(host.get("driver_version", "550.90.07")),
        cuda_driver_version=int(host.get("cuda_driver_version", 12040)), path=path,
    )


def _uuid(seed: int, host: str, i: int) -> str:
    r = random.Random(f"{seed}/{host}/{i}")
    h = "%032x" % r.getrandbits(128)
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
