"""The virtual NVML driver.

pynvml reaches every C function through its module global ``nvmlLib`` and caches what it found in
``_nvmlGetFunctionPointer_cache``. ``install(scenario, clock)`` sets ``nvmlLib`` to an object whose
attributes are ctypes ``CFUNCTYPE`` callbacks with the NVML C signatures, then clears the cache: every
ordinary pynvml call runs pynvml's own marshalling against the simulated host, and errors come back
as the real ``NVMLError_*`` classes. Only functions the collector calls are implemented; any other
is absent, so pynvml raises ``NVMLError_FunctionNotFound`` exactly as with an older driver.

A Python exception inside a callback would be printed by ctypes and leave pynvml a garbage return
code, so every callback is wrapped: an exception becomes NVML_ERROR_UNKNOWN.
"""

from __future__ import annotations

import ctypes
import functools
import time
from ctypes import POINTER, c_double, c_int, c_uint, c_ulonglong, c_void_p
from typing import Any, Callable

from gpu_audit.collect.nvml import pynvml

from gpu_audit.collect.virtual.scenario import Scenario, VDevice

OK = pynvml.NVML_SUCCESS
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
INVALID = pynvml.NVML_ERROR_INVALID_ARGUMENT
INSUFFICIENT = pynvml.NVML_ERROR_INSUFFICIENT_SIZE
LOST = pynvml.NVML_ERROR_GPU_IS_LOST
NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
UNINIT = pynvml.NVML_ERROR_UNINITIALIZED
UNKNOWN = pynvml.NVML_ERROR_UNKNOWN

_BASE = 0x7A000000  # handles are small fake pointers: _BASE + position in Scenario.devices + 1
_PROC = getattr(pynvml, "c_nvmlProcessInfo_v3_t", None) or pynvml.c_nvmlProcessInfo_v2_t
_GPM_IDS = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: "sm_active",
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: "sm_occupancy",
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: "tensor",
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: "dram",
}


def _write_str(buf: int, length: int, value: str) -> int:
    data = value.encode()[: max(0, length - 1)] + b"\0"
    if len(data) > length:
        return INSUFFICIENT
    ctypes.memmove(buf, data, len(data))
    return OK


def _handle(value: int) -> Any:
    return ctypes.cast(c_void_p(value), pynvml.c_nvmlDevice_t)


class _Lib:
    """The object that stands in for libnvidia-ml.so: attributes are the C functions."""


class VirtualNvml:
    def __init__(self, scenario: Scenario, clock: Any, start: float) -> None:
        self.sc = scenario
        self.clock = clock
        self.start = start
        self.initialized = 0
        self.calls = 0
        self.callback_s = 0.0  # time spent inside the simulated C functions (benchmarks)
        self._gpm: dict[int, tuple[int, int, float]] = {}  # sample handle -> (device pos, gi, time)
        self._next_sample = 1
        self._err_strings: dict[int, Any] = {}
        self.lib = _Lib()
        self._keep: list[Any] = []  # callbacks must outlive every call
        self._define()

    # -- helpers -------------------------------------------------------------------------------
    def _dev(self, handle: int | None) -> VDevice | None:
        if not handle:
            return None
        pos = handle - _BASE - 1
        return self.sc.devices[pos] if 0 <= pos < len(self.sc.devices) else None

    def _now(self) -> float:
        return self.clock.now()

    def _check(self, dev: VDevice | None, fld: str | None = None) -> int:
        """The error a call on ``dev`` must return now (OK when none)."""
        if not self.initialized:
            return UNINIT
        if dev is None:
            return INVALID
        rel = self._now() - self.start
        if self.sc.fault(dev, rel, "lost"):
            return LOST
        if fld is not None:
            if self.sc.fault(dev, rel, "not_supported", fld):
                return NOT_SUPPORTED
            if fld == "processes" and self.sc.fault(dev, rel, "no_permission"):
                return NO_PERMISSION
        return OK

    def _st(self, dev: VDevice) -> dict[str, Any]:
        return self.sc.state(dev, self._now())

    def _fn(self, name: str, restype: Any, *argtypes: Any) -> Callable:
        def deco(impl: Callable) -> Callable:
            @functools.wraps(impl)
            def safe(*args: Any) -> Any:
                self.calls += 1
                t0 = time.perf_counter()
                try:
                    return impl(*args)
                except Exception:  # noqa: BLE001 - must never cross into C
                    return UNKNOWN
                finally:
                    self.callback_s += time.perf_counter() - t0

            cb = ctypes.CFUNCTYPE(restype, *argtypes)(safe)
            self._keep.append(cb)
            setattr(self.lib, name, cb)
            return impl

        return deco

    # -- the C functions -------------------------------------------------------------------------
    def _define(self) -> None:  # noqa: C901 - one flat list of NVML functions reads best
        fn = self._fn
        P = POINTER

        @fn("nvmlInitWithFlags", c_int, c_uint)
        def init_flags(flags: int) -> int:
            for f in self.sc.faults:  # NVML refusing to start at all
                if f.kind == "init_no_permission":
                    return NO_PERMISSION
                if f.kind == "init_driver_not_loaded":
                    return pynvml.NVML_ERROR_DRIVER_NOT_LOADED
            self.initialized += 1
            return OK

        @fn("nvmlInit_v2", c_int)
        def init_v2() -> int:
            self.initialized += 1
            return OK

        @fn("nvmlShutdown", c_int)
        def shutdown() -> int:
            if not self.initialized:
                return UNINIT
            self.initialized -= 1
            return OK

        @fn("nvmlErrorString", c_void_p, c_int)
        def error_string(code: int) -> int:
            if code not in self._err_strings:
                self._err_strings[code] = ctypes.create_string_buffer(f"virtual NVML error {code}".encode())
            return ctypes.addressof(self._err_strings[code])

        @fn("nvmlSystemGetDriverVersion", c_int, c_void_p, c_uint)
        def driver_version(buf: int, n: int) -> int:
            return _write_str(buf, n, self.sc.driver_version)

        @fn("nvmlSystemGetNVMLVersion", c_int, c_void_p, c_uint)
        def nvml_version(buf: int, n: int) -> int:
            return _write_str(buf, n, self.sc.nvml_version)

        def cuda_version(out: Any) -> int:
            out[0] = self.sc.cuda_driver_version
            return OK

        fn("nvmlSystemGetCudaDriverVersion", c_int, P(c_int))(cuda_version)
        fn("nvmlSystemGetCudaDriverVersion_v2", c_int, P(c_int))(cuda_version)

        @fn("nvmlSystemGetProcessName", c_int, c_uint, c_void_p, c_uint)
        def process_name(pid: int, buf: int, n: int) -> int:
            for d in self.sc.devices:
                if d.pid == pid:
                    return _write_str(buf, n, d.workload.process)
            return NOT_FOUND

        @fn("nvmlDeviceGetCount_v2", c_int, P(c_uint))
        def count(out: Any) -> int:
            if not self.initialized:
                return UNINIT
            out[0] = len(self.sc.gpus)
            return OK

        @fn("nvmlDeviceGetHandleByIndex_v2", c_int, c_uint, P(pynvml.c_nvmlDevice_t))
        def by_index(i: int, out: Any) -> int:
            if not self.initialized:
                return UNINIT
            if i >= len(self.sc.gpus):
                return INVALID
            out[0] = _handle(_BASE + i + 1)
            return OK

        def string_attr(getter: Callable[[VDevice], str]) -> Callable:
            def impl(h: int, buf: int, n: int) -> int:
                d = self._dev(h)
                err = self._check(d)
                return err or _write_str(buf, n, getter(d))

            return impl

        fn("nvmlDeviceGetName", c_int, c_void_p, c_void_p, c_uint)(string_attr(lambda d: d.model.nvml_name if not d.mig else f"{d.model.nvml_name} MIG {d.mig.name}"))
        fn("nvmlDeviceGetUUID", c_int, c_void_p, c_void_p, c_uint)(string_attr(lambda d: d.uuid))

        @fn("nvmlDeviceGetIndex", c_int, c_void_p, P(c_uint))
        def index(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if not err:
                out[0] = d.index
            return err

        @fn("nvmlDeviceGetPciInfo_v3", c_int, c_void_p, P(pynvml.nvmlPciInfo_t))
        def pci(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if not err:
                bus = d.pci_bus_id.encode()
                out[0].busId = bus
                out[0].busIdLegacy = bus[-16:]
                out[0].bus = int(d.pci_bus_id.split(":")[1], 16)
                out[0].pciDeviceId = 0x233010DE
            return err

        @fn("nvmlDeviceGetUtilizationRates", c_int, c_void_p, P(pynvml.c_nvmlUtilization_t))
        def utilization(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d, "util")
            if err:
                return err
            slow = self.sc.fault(d, self._now() - self.start, "slow")
            if slow:
                self.clock.sleep(slow.delay_s)
            if d.mig or d.children:
                return NOT_SUPPORTED  # NVML gives no utilization for MIG devices or a MIG-mode parent
            st = self._st(d)
            out[0].gpu = int(round(st["util"]))
            out[0].memory = int(round(st["util_mem"]))
            return OK

        def memory(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d, "memory")
            if not err:
                total = d.mem_total_bytes
                used = self._st(d)["mem_used_bytes"]
                out[0].total = total
                out[0].used = used
                out[0].free = total - used
            return err

        fn("nvmlDeviceGetMemoryInfo", c_int, c_void_p, P(pynvml.c_nvmlMemory_t))(memory)
        fn("nvmlDeviceGetMemoryInfo_v2", c_int, c_void_p, P(pynvml.c_nvmlMemory_v2_t))(memory)

        def uint_metric(fld: str, value: Callable[[VDevice], int], mig_ok: bool = False) -> Callable:
            def impl(h: int, out: Any) -> int:
                d = self._dev(h)
                err = self._check(d, fld)
                if err:
                    return err
                if d.mig and not mig_ok:
                    return NOT_SUPPORTED
                out[0] = value(d)
                return OK

            return impl

        fn("nvmlDeviceGetPowerUsage", c_int, c_void_p, P(c_uint))(uint_metric("power", lambda d: self._st(d)["power_mw"]))
        energy: dict[int, tuple[float, float]] = {}  # device -> (virtual time, mJ) of the last reading

        def energy_mj(d: VDevice) -> int:
            """The total energy counter, consistent with the power readings: it advances by the power at
            each reading times the time since the previous one (mW x s = mJ), from an offset as if the
            driver had loaded long before."""
            now, p = self._now(), self._st(d)["power_mw"]
            t0, e = energy.get(id(d), (now, 1e9 * (1 + d.index)))
            e += p * max(0.0, now - t0)
            energy[id(d)] = (now, e)
            return int(e)

        fn("nvmlDeviceGetTotalEnergyConsumption", c_int, c_void_p, P(c_ulonglong))(uint_metric("energy", energy_mj))
        fn("nvmlDeviceGetEnforcedPowerLimit", c_int, c_void_p, P(c_uint))(uint_metric("power", lambda d: d.model.power_limit_w * 1000))
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn(name, c_int, c_void_p, P(c_ulonglong))(uint_metric("throttle", lambda d: self._st(d)["throttle"]))

        def clock_info(kind: str) -> Callable:
            def impl(h: int, typ: int, out: Any) -> int:
                d = self._dev(h)
                err = self._check(d, "clocks")
                if err:
                    return err
                if d.mig:
                    return NOT_SUPPORTED
                if typ != pynvml.NVML_CLOCK_SM and typ != pynvml.NVML_CLOCK_GRAPHICS:
                    return NOT_SUPPORTED
                out[0] = d.model.sm_clock_max_mhz if kind == "max" else self._st(d)["sm_clock"]
                return OK

            return impl

        fn("nvmlDeviceGetClockInfo", c_int, c_void_p, c_uint, P(c_uint))(clock_info("cur"))
        fn("nvmlDeviceGetMaxClockInfo", c_int, c_void_p, c_uint, P(c_uint))(clock_info("max"))

        @fn("nvmlDeviceGetTemperature", c_int, c_void_p, c_uint, P(c_uint))
        def temperature(h: int, sensor: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d, "temperature")
            if err:
                return err
            if d.mig:
                return NOT_SUPPORTED
            out[0] = self._st(d)["temp"]
            return OK

        if hasattr(pynvml, "c_nvmlTemperature_v1_t"):

            @fn("nvmlDeviceGetTemperatureV", c_int, c_void_p, P(pynvml.c_nvmlTemperature_v1_t))
            def temperature_v(h: int, out: Any) -> int:
                d = self._dev(h)
                err = self._check(d, "temperature")
                if err:
                    return err
                if d.mig:
                    return NOT_SUPPORTED
                out[0].temperature = self._st(d)["temp"]
                return OK

        @fn("nvmlDeviceGetMigMode", c_int, c_void_p, P(c_uint), P(c_uint))
        def mig_mode(h: int, cur: Any, pending: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if err:
                return err
            if not d.model.mig_total_slices or d.mig:
                return NOT_SUPPORTED
            cur[0] = pending[0] = 1 if d.children else 0
            return OK

        @fn("nvmlDeviceGetMaxMigDeviceCount", c_int, c_void_p, P(c_uint))
        def max_mig(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if err:
                return err
            if not d.model.mig_total_slices:
                return NOT_SUPPORTED
            out[0] = d.model.mig_total_slices
            return OK

        @fn("nvmlDeviceGetMigDeviceHandleByIndex", c_int, c_void_p, c_uint, P(pynvml.c_nvmlDevice_t))
        def mig_by_index(h: int, i: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if err:
                return err
            if i >= len(d.children):
                return NOT_FOUND
            out[0] = _handle(_BASE + d.children[i] + 1)
            return OK

        @fn("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", c_int, c_void_p, P(pynvml.c_nvmlDevice_t))
        def parent_of(h: int, out: Any) -> int:
            d = self._dev(h)
            if d is None or d.parent is None:
                return INVALID
            out[0] = _handle(_BASE + d.parent + 1)
            return OK

        @fn("nvmlDeviceIsMigDeviceHandle", c_int, c_void_p, P(c_uint))
        def is_mig(h: int, out: Any) -> int:
            d = self._dev(h)
            if d is None:
                return INVALID
            out[0] = 1 if d.mig else 0
            return OK

        @fn("nvmlDeviceGetGpuInstanceId", c_int, c_void_p, P(c_uint))
        def gi_id(h: int, out: Any) -> int:
            d = self._dev(h)
            if d is None or not d.mig:
                return INVALID if d is None else NOT_SUPPORTED
            out[0] = d.gi_id
            return OK

        @fn("nvmlDeviceGetAttributes_v2", c_int, c_void_p, P(pynvml.c_nvmlDeviceAttributes))
        def attributes(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if err:
                return err
            slices = d.mig.slices if d.mig else d.model.mig_total_slices or 1
            out[0].gpuInstanceSliceCount = slices
            out[0].computeInstanceSliceCount = slices
            out[0].memorySizeMB = d.mig.memory_mb if d.mig else d.model.memory_mib
            out[0].multiprocessorCount = 16 * slices
            return OK

        def processes(graphics: bool) -> Callable:
            def impl(h: int, count: Any, arr: Any) -> int:
                d = self._dev(h)
                err = self._check(d, "processes")
                if err:
                    return err
                procs = [] if graphics else self._procs(d)
                if not arr or count[0] < len(procs):
                    count[0] = len(procs)
                    return INSUFFICIENT if procs else OK
                for i, (pid, mem) in enumerate(procs):
                    arr[i].pid = pid
                    arr[i].usedGpuMemory = mem
                    arr[i].gpuInstanceId = d.gi_id if d.mig else 0xFFFFFFFF
                    arr[i].computeInstanceId = 0 if d.mig else 0xFFFFFFFF
                count[0] = len(procs)
                return OK

            return impl

        for v in ("_v2", "_v3"):
            fn("nvmlDeviceGetComputeRunningProcesses" + v, c_int, c_void_p, P(c_uint), P(_PROC))(processes(False))
            fn("nvmlDeviceGetGraphicsRunningProcesses" + v, c_int, c_void_p, P(c_uint), P(_PROC))(processes(True))

        @fn("nvmlDeviceGetProcessUtilization", c_int, c_void_p, P(pynvml.c_nvmlProcessUtilizationSample_t), P(c_uint), c_ulonglong)
        def process_util(h: int, arr: Any, count: Any, last_seen: int) -> int:
            d = self._dev(h)
            err = self._check(d, "processes")
            if err:
                return err
            if d.mig or d.children:
                return NOT_SUPPORTED
            procs = self._procs(d)
            st = self._st(d)
            if not procs or st["util"] <= 0:
                return NOT_FOUND  # what NVML says when no process ran since last_seen
            if not arr or count[0] < len(procs):
                count[0] = len(procs)
                return INSUFFICIENT
            for i, (pid, _) in enumerate(procs):
                arr[i].pid = pid
                arr[i].timeStamp = int(self._now() * 1e6)
                arr[i].smUtil = int(round(st["util"]))
                arr[i].memUtil = int(round(st["util_mem"]))
            count[0] = len(procs)
            return OK

        # -- GPM: two samples, metrics computed between them ----------------------------------
        @fn("nvmlGpmQueryDeviceSupport", c_int, c_void_p, P(pynvml.c_nvmlGpmSupport_t))
        def gpm_support(h: int, out: Any) -> int:
            d = self._dev(h)
            err = self._check(d)
            if err:
                return err
            out[0].isSupportedDevice = 1 if d.model.gpm and not self.sc.fault(d, self._now() - self.start, "not_supported", "gpm") else 0
            return OK

        @fn("nvmlGpmSampleAlloc", c_int, P(pynvml.c_nvmlGpmSample_t))
        def gpm_alloc(out: Any) -> int:
            out[0] = ctypes.cast(c_void_p(0x5A000000 + self._next_sample), pynvml.c_nvmlGpmSample_t)
            self._next_sample += 1
            return OK

        @fn("nvmlGpmSampleFree", c_int, c_void_p)
        def gpm_free(s: int) -> int:
            self._gpm.pop(s, None)
            return OK

        def gpm_take(d: VDevice | None, gi: int, s: int) -> int:
            err = self._check(d, "gpm")
            if err:
                return err
            if not d.model.gpm:
                return NOT_SUPPORTED
            if gi:
                kid = next((c for c in d.children if self.sc.devices[c].gi_id == gi), None)
                if kid is None:
                    return NOT_FOUND
                pos = kid
            else:
                pos = self.sc.devices.index(d)
            self._gpm[s] = (pos, gi, self._now())
            return OK

        @fn("nvmlGpmSampleGet", c_int, c_void_p, c_void_p)
        def gpm_sample(h: int, s: int) -> int:
            return gpm_take(self._dev(h), 0, s)

        @fn("nvmlGpmMigSampleGet", c_int, c_void_p, c_uint, c_void_p)
        def gpm_mig_sample(h: int, gi: int, s: int) -> int:
            return gpm_take(self._dev(h), gi, s)

        @fn("nvmlGpmMetricsGet", c_int, P(pynvml.c_nvmlGpmMetricsGet_t))
        def gpm_metrics(req: Any) -> int:
            r = req[0]
            s1 = ctypes.cast(r.sample1, c_void_p).value
            s2 = ctypes.cast(r.sample2, c_void_p).value
            if s1 not in self._gpm or s2 not in self._gpm:
                return INVALID
            pos, _, t2 = self._gpm[s2]
            if self._gpm[s1][0] != pos or self._gpm[s1][2] >= t2:
                return INVALID
            st = self.sc.state(self.sc.devices[pos], t2)
            for i in range(r.numMetrics):
                m = r.metrics[i]
                key = _GPM_IDS.get(m.metricId)
                if key is None:
                    m.nvmlReturn = NOT_SUPPORTED
                else:
                    m.value = c_double(st[key]).value
                    m.nvmlReturn = OK
            return OK

    def _procs(self, d: VDevice) -> list[tuple[int, int]]:
        """(pid, used bytes) of the processes on a device: one per running workload."""
        if d.children:
            return []  # processes of a MIG-mode GPU are listed on its MIG devices
        used = self._st(d)["mem_used_bytes"]
        return [(d.pid, used)] if used > 0 else []


def install(scenario: Scenario, clock: Any, start: float) -> VirtualNvml:
    """Point pynvml at a virtual NVML for ``scenario``; returns the driver (for call counts)."""
    v = VirtualNvml(scenario, clock, start)
    with pynvml.libLoadLock:
        pynvml.nvmlLib = v.lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
    return v


def uninstall() -> None:
    with pynvml.libLoadLock:
        pynvml.nvmlLib = None
        pynvml._nvmlGetFunctionPointer_cache.clear()
