"""The NVML reader: the one module of gpu-audit that imports ``pynvml`` (nvidia-ml-py).

Every call goes through ``_q``: NOT_SUPPORTED (and NO_DATA, NOT_FOUND) become ``None``, never 0;
a function missing from an older driver (FUNCTION_NOT_FOUND) becomes ``None`` and is remembered
once for one warning at the end; anything else (GPU lost, unknown error) raises ``DeviceError`` so
that the sampler records an error row for that device and goes on with the others.

Functions are resolved by name with fallbacks (``nvmlDeviceGetCurrentClocksEventReasons`` before
``...ThrottleReasons``), so newer bindings degrade on older drivers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml

from gpu_audit.catalog import mig_profile_for
from gpu_audit.errors import GpuAuditError

_QUIET = (
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_DATA,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_NO_PERMISSION,
)


GPM_COLUMNS = ("sm_active_pct", "sm_occupancy_pct", "tensor_active_pct", "dram_active_pct")

class NvmlUnavailable(GpuAuditError):
    """NVML cannot be used on this machine at all (no driver, no permission)."""


class DeviceError(Exception):
    """One device could not be read at this tick; the message goes into the row's ``error``."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Device:
    """A device the collector samples: a whole GPU, or a MIG device (``parent_uuid`` set)."""

    handle: Any
    uuid: str
    index: int
    name: str
    mem_total_bytes: int | None
    pci_bus_id: str | None = None
    parent_uuid: str | None = None
    parent_handle: Any = None
    mig_profile: str | None = None
    mig_mode: bool | None = None
    mig_slices: int | None = None
    mig_total_slices: int | None = None
    gi_id: int | None = None
    power_limit_w: float | None = None
    sm_clock_max_mhz: int | None = None
    gpm_supported: bool = False
    gpm_prev: Any = None  # the previous GPM sample handle
    gpm_next: Any = None  # the spare one, reused


@dataclass
class Nvml:
    """A lazily initialised NVML session."""

    missing: set[str] = field(default_factory=set)  # functions the driver lacks (warn once)
    _up: bool = False

    def init(self) -> None:
        if self._up:
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            raise NvmlUnavailable(
                "NVML is not available: is the NVIDIA driver installed?",
                hint="on a machine without a GPU, try: gpu-audit collect --simulate SCENARIO.toml --duration 1h",
            ) from None
        except pynvml.NVMLError_NoPermission:
            raise NvmlUnavailable("NVML refused access: no permission to the NVIDIA device files",
                                  hint="run as a user in the group that owns /dev/nvidia*") from None
        except pynvml.NVMLError_DriverNotLoaded:
            raise NvmlUnavailable("NVML is installed but the NVIDIA kernel driver is not loaded") from None
        except pynvml.NVMLError as e:
            raise NvmlUnavailable(f"NVML failed to initialise: {e}") from None
        self._up = True

    def shutdown(self) -> None:
        if self._up:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self._up = False

    # -- one query function for every call --------------------------------------------------------
    def _q(self, names: tuple[str, ...] | str, *args: Any) -> Any:
        """Call the first pynvml function of ``names`` that the driver has; see module docstring."""
        for name in (names,) if isinstance(names, str) else names:
            f: Callable | None = getattr(pynvml, name, None)
            if f is None or name in self.missing:
                continue
            try:
                return f(*args)
            except pynvml.NVMLError_FunctionNotFound:
                self.missing.add(name)
                continue
            except pynvml.NVMLError as e:
                if e.value in _QUIET:
                    return None
                raise DeviceError(f"{name}: {e}") from None
        return None

    # -- inventory --------------------------------------------------------------------------------
    def system(self) -> dict[str, str | None]:
        cuda = self._q(("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        return {
            "driver_version": _opt_text(self._q("nvmlSystemGetDriverVersion")),
            "nvml_version": _opt_text(self._q("nvmlSystemGetNVMLVersion")),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
        }

    def discover(self) -> list[Device]:
        """Every GPU, and every MIG device of a GPU in MIG mode, in index order."""
        out: list[Device] = []
        n = self._q("nvmlDeviceGetCount") or 0
        for i in range(n):
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
            except pynvml.NVMLError:
                continue  # a GPU lost at start: nothing to identify it by
            try:
                gpu = self._describe(h, i)
            except DeviceError:
                continue
            out.append(gpu)
            if gpu.mig_mode:
                out.extend(self._mig_devices(gpu))
        return out

    def _describe(self, h: Any, i: int) -> Device:
        name = _text(self._q("nvmlDeviceGetName", h) or "")
        mem = self._q(("nvmlDeviceGetMemoryInfo",), h, *self._mem_args())
        pci = self._q(("nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo"), h)
        mode = self._q("nvmlDeviceGetMigMode", h)
        limit = self._q("nvmlDeviceGetEnforcedPowerLimit", h)
        gpm = self._q("nvmlGpmQueryDeviceSupport", h) if hasattr(pynvml, "nvmlGpmQueryDeviceSupport") else None
        dev = Device(
            handle=h, uuid=_text(self._q("nvmlDeviceGetUUID", h)), index=i, name=name,
            mem_total_bytes=mem.total if mem else None,
            pci_bus_id=_text(pci.busId) if pci else None,
            mig_mode=bool(mode[0]) if mode else None,
            power_limit_w=limit / 1000 if limit is not None else None,
            sm_clock_max_mhz=self._q("nvmlDeviceGetMaxClockInfo", h, pynvml.NVML_CLOCK_SM),
            gpm_supported=bool(gpm and gpm.isSupportedDevice),
        )
        if dev.mig_mode:
            dev.mig_total_slices = self._q("nvmlDeviceGetMaxMigDeviceCount", h)
        return dev

    def _mig_devices(self, gpu: Device) -> list[Device]:
        out = []
        for j in range(gpu.mig_total_slices or 7):
            try:
                mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, j)
            except pynvml.NVMLError:
                continue  # NOT_FOUND: no MIG device at this position
            attrs = self._q("nvmlDeviceGetAttributes_v2", mh) or self._q("nvmlDeviceGetAttributes", mh)
            mem = self._q("nvmlDeviceGetMemoryInfo", mh, *self._mem_args())
            slices = attrs.gpuInstanceSliceCount if attrs else None
            mem_mb = attrs.memorySizeMB if attrs else (mem.total // 2**20 if mem else 0)
            out.append(Device(
                handle=mh, uuid=_text(self._q("nvmlDeviceGetUUID", mh)), index=gpu.index,
                name=gpu.name, mem_total_bytes=mem.total if mem else None, pci_bus_id=gpu.pci_bus_id,
                parent_uuid=gpu.uuid, parent_handle=gpu.handle,
                mig_profile=mig_profile_for(gpu.name, slices, mem_mb) if slices else None,
                mig_slices=slices, mig_total_slices=gpu.mig_total_slices,
                gi_id=self._q("nvmlDeviceGetGpuInstanceId", mh), gpm_supported=gpu.gpm_supported,
            ))
        return out

    @staticmethod
    def _mem_args() -> tuple:
        # nvmlDeviceGetMemoryInfo_v2 (reserved memory counted apart) on bindings that have it.
        v2 = getattr(pynvml, "nvmlMemory_v2", None)
        return (v2,) if v2 else ()

    # -- one consistent pass over a device -------------------------------------------------------
    def read(self, d: Device) -> dict[str, Any]:
        """The sample columns NVML gives for ``d`` now. Raises DeviceError if the device fails.

        nvidia-smi twins: utilization.gpu, utilization.memory, memory.used, memory.total,
        power.draw, power.limit, clocks.sm, clocks.max.sm, temperature.gpu,
        clocks_event_reasons.active.
        """
        h = d.handle
        q = self._q
        mem = q("nvmlDeviceGetMemoryInfo", h, *self._mem_args())
        row: dict[str, Any] = {
            "mem_used_bytes": mem.used if mem else None,
            "mem_total_bytes": mem.total if mem else d.mem_total_bytes,
        }
        util = q("nvmlDeviceGetUtilizationRates", h)
        row["util_gpu_pct"] = float(util.gpu) if util else None
        row["util_mem_pct"] = float(util.memory) if util else None
        if d.parent_uuid is None:
            power = q("nvmlDeviceGetPowerUsage", h)
            row["power_w"] = round(power / 1000, 2) if power is not None else None  # 10 mW resolution
            # mJ since the driver loaded (Volta and newer); nvidia-smi has no --query-gpu twin
            row["energy_mj"] = q("nvmlDeviceGetTotalEnergyConsumption", h)
            row["power_limit_w"] = d.power_limit_w
            row["sm_clock_mhz"] = q("nvmlDeviceGetClockInfo", h, pynvml.NVML_CLOCK_SM)
            row["sm_clock_max_mhz"] = d.sm_clock_max_mhz
            row["temp_c"] = q(("nvmlDeviceGetTemperature",), h, pynvml.NVML_TEMPERATURE_GPU)
            row["throttle_reasons"] = q(("nvmlDeviceGetCurrentClocksEventReasons",
                                         "nvmlDeviceGetCurrentClocksThrottleReasons"), h)
        if d.gpm_supported and not d.mig_mode:
            try:
                row.update(self._gpm(d))
            except DeviceError:
                # A GPM failure (e.g. after a clock step) loses the GPM columns of this tick, not the
                # NVML fields read above; GPM needs two good samples again.
                d.gpm_prev = None
                row.update(dict.fromkeys(GPM_COLUMNS))
        return row

    def _gpm(self, d: Device) -> dict[str, float | None]:
        """GPM metrics between the previous tick's sample and this one (empty on the first tick)."""
        try:
            cur = d.gpm_next or pynvml.nvmlGpmSampleAlloc()
            if d.parent_uuid is None:
                pynvml.nvmlGpmSampleGet(d.handle, cur)
            else:
                pynvml.nvmlGpmMigSampleGet(d.parent_handle, d.gi_id, cur)
        except pynvml.NVMLError as e:
            if e.value in _QUIET:
                return {}
            raise DeviceError(f"GPM sample: {e}") from None
        prev, d.gpm_prev, d.gpm_next = d.gpm_prev, cur, d.gpm_prev
        if prev is None:
            return {}
        req = pynvml.c_nvmlGpmMetricsGet_t()
        req.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        req.sample1, req.sample2 = prev, cur
        ids = (pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
               pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL)
        req.numMetrics = len(ids)
        for k, mid in enumerate(ids):
            req.metrics[k].metricId = mid
        try:
            pynvml.nvmlGpmMetricsGet(req)
        except pynvml.NVMLError as e:
            if e.value in _QUIET:
                return {}
            raise DeviceError(f"GPM metrics: {e}") from None
        # 0.1 % resolution: finer digits mean nothing for a share of a tick and cost disk.
        vals = [round(req.metrics[k].value, 1) if req.metrics[k].nvmlReturn == 0 else None for k in range(len(ids))]
        return dict(zip(GPM_COLUMNS, vals))

    def processes(self, d: Device) -> list[dict[str, Any]]:
        """Compute and graphics processes on ``d``: pid, name, type, used memory, SM utilization."""
        if d.mig_mode:
            return []
        out: dict[int, dict[str, Any]] = {}
        for kind, names in (("C", ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses")),
                            ("G", ("nvmlDeviceGetGraphicsRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses"))):
            for p in self._q(names, d.handle) or []:
                row = out.setdefault(p.pid, {"pid": p.pid, "type": "", "used_mem_bytes": None})
                row["type"] += kind
                if p.usedGpuMemory is not None:
                    row["used_mem_bytes"] = (row["used_mem_bytes"] or 0) + p.usedGpuMemory
        if out and d.parent_uuid is None:
            for s in self._q("nvmlDeviceGetProcessUtilization", d.handle, 0) or []:
                if s.pid in out:
                    out[s.pid]["sm_util_pct"] = float(s.smUtil)
        return list(out.values())

    def process_name(self, pid: int) -> str | None:
        return _opt_text(self._q("nvmlSystemGetProcessName", pid))


def _opt_text(v: Any) -> str | None:
    return None if v is None else _text(v)


# -- /proc: who owns a GPU process ------------------------------------------------------------------
_CONTAINER = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_SLURM = re.compile(r"job_(\d+)")


def parse_cgroup(text: str) -> dict[str, str | None]:
    """Container id, Kubernetes pod UID and Slurm job id from the text of /proc/PID/cgroup."""
    c = _CONTAINER.search(text)
    p = _POD.search(text)
    s = _SLURM.search(text)
    return {
        "container_id": c.group(1) if c else None,
        "k8s_pod_uid": p.group(1).replace("_", "-") if p else None,
        "slurm_job_id": s.group(1) if s else None,
    }


def proc_owner(pid: int, proc_root: str = "/proc", pods: "PodIndex | None" = None, users: "dict[int, str] | None" = None) -> dict[str, str | None]:
    """What /proc says about ``pid``; fields that cannot be read (permissions, gone) are None: its
    name, container, pod UID (and, with ``pods``, the pod's namespace and name), Slurm job, Unix user."""
    info: dict[str, str | None] = {"name": None, "container_id": None, "k8s_pod_uid": None, "slurm_job_id": None,
                                   "user": None, "k8s_namespace": None, "k8s_pod": None}
    try:
        with open(f"{proc_root}/{pid}/comm") as f:
            info["name"] = f.read().strip() or None
    except OSError:
        pass
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            info.update(parse_cgroup(f.read()))
    except OSError:
        pass
    if info["slurm_job_id"] is None:
        try:
            with open(f"{proc_root}/{pid}/environ", "rb") as f:
                for var in f.read().split(b"\0"):
                    if var.startswith(b"SLURM_JOB_ID="):
                        info["slurm_job_id"] = var.split(b"=", 1)[1].decode() or None
        except OSError:
            pass
    try:
        with open(f"{proc_root}/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                    info["user"] = (users or {}).get(uid) or _user_name(uid)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if info["k8s_pod_uid"] and pods is not None:
        info["k8s_namespace"], info["k8s_pod"] = pods.lookup(info["k8s_pod_uid"])
    return info


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_passwd(path: str) -> dict[int, str]:
    """uid -> name from a passwd file (a fake one for virtual hosts)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    out[int(parts[2])] = parts[0]
    except OSError:
        pass
    return out


class PodIndex:
    """Pod UID -> (namespace, name), from the kubelet's log folders ``<root>/<namespace>_<pod>_<uid>``:
    no API server needed. Listed again (at most once a minute) when a UID is not found."""

    def __init__(self, root: str = "/var/log/pods") -> None:
        self.root = root
        self._map: dict[str, tuple[str, str]] = {}
        self._listed = -1e18

    def lookup(self, uid: str) -> tuple[str | None, str | None]:
        import os
        import time

        if uid not in self._map and time.monotonic() - self._listed > 60:
            self._listed = time.monotonic()
            try:
                for name in os.listdir(self.root):
                    parts = name.rsplit("_", 1)
                    if len(parts) == 2 and "_" in parts[0]:
                        ns, pod = parts[0].split("_", 1)
                        self._map[parts[1]] = (ns, pod)
            except OSError:
                pass
        return self._map.get(uid, (None, None))
