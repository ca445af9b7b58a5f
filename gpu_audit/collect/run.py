"""``collect`` and ``doctor`` as library functions: what the CLI calls."""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Callable

from gpu_audit.collect.clock import VirtualClock, WallClock
from gpu_audit.collect.nvml import DeviceError, Nvml
from gpu_audit.collect.sampler import CollectSettings, CollectStats, Sampler, install_signal_handlers
from gpu_audit.errors import GpuAuditError
from gpu_audit.store.writer import StoreWriter, check_writable, keep_pandas_out


def default_store() -> str:
    """``$GPU_AUDIT_STORE``, else ``$XDG_DATA_HOME/gpu-audit/store`` (``~/.local/share/...``)."""
    env = os.environ.get("GPU_AUDIT_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "gpu-audit", "store")


def _virtual(simulate: str, realtime: bool, duration_s: float | None, interval_s: float) -> tuple[Any, Any, Any]:
    from gpu_audit.collect.virtual.driver import install
    from gpu_audit.collect.virtual.scenario import load_scenario

    scenario = load_scenario(simulate)
    if realtime:
        clock: Any = WallClock()
        start = clock.now()
    else:
        if duration_s is None:
            raise GpuAuditError("--simulate runs on a virtual clock and needs --duration",
                                hint="add --duration 24h, or --realtime to run on the wall clock until stopped")
        if scenario.start is not None:
            start = scenario.start
        else:  # end the simulated window now, on an interval boundary
            start = math.floor((WallClock().now() - duration_s) / interval_s) * interval_s
        clock = VirtualClock(start)
    driver = install(scenario, clock, start)
    return scenario, clock, driver


def _owner_roots(scenario: Any) -> dict[str, Any]:
    """A virtual host whose scenario names owners gets a fake /proc and pod folders to read them from."""
    if scenario is None:
        return {}
    from gpu_audit.collect.virtual.owners import fake_roots

    roots = fake_roots(scenario.devices)
    return {"read_proc": True, **roots} if roots else {}


def collect(
    out: str,
    host: str | None = None,
    interval_s: float = 5.0,
    duration_s: float | None = None,
    flush_every_s: float | None = None,
    processes: bool = True,
    simulate: str | None = None,
    realtime: bool = False,
    on_tick: Callable[[CollectStats], None] | None = None,
    handle_signals: bool = True,
    scrape: tuple[str, ...] | list[str] = (),
    s3_endpoint: str | None = None,
    spool_max_bytes: int = 1 << 30,
) -> tuple[CollectSettings, CollectStats]:
    """Sample every device into the store at ``out`` until ``duration_s`` passes or a signal stops it."""
    if interval_s <= 0 or (duration_s is not None and duration_s <= 0):
        raise GpuAuditError("--interval and --duration must be positive")
    for url in scrape:
        if not url.startswith(("http://", "https://")):
            raise GpuAuditError(f"--scrape: {url!r} is not an http(s) URL", hint="e.g. --scrape http://127.0.0.1:8000/metrics")
    uploader = None
    local = out
    if "://" in out:  # an object store: complete files go through a local spool
        from gpu_audit.store.remote import Uploader, filesystem, spool_dir

        fs, base = filesystem(out, s3_endpoint)
        local = spool_dir(out)
        check_writable(local)
        uploader = Uploader(local, fs, base, spool_max_bytes)
    else:
        check_writable(out)
    keep_pandas_out()
    clock: Any = WallClock()
    scenario = driver = None
    if simulate:
        scenario, clock, driver = _virtual(simulate, realtime, duration_s, interval_s)
    from gpu_audit.store.layout import check_host

    settings = CollectSettings(
        out=out, host=check_host(host or (scenario.host if scenario else socket.gethostname())),
        interval_s=interval_s, duration_s=duration_s,
        # A virtual day flushed every minute would be 1,440 tiny files per table: flush hourly there.
        flush_every_s=flush_every_s or (3600.0 if clock.virtual else 60.0),
        processes=processes, source="virtual" if scenario else "nvml",
        scrape=tuple(scrape), **{"read_proc": scenario is None, **_owner_roots(scenario)},
    )
    from gpu_audit.store.lock import CollectorLock

    lock = CollectorLock(local, settings.host)
    lock.acquire()  # AlreadyRunning: the CLI says so and exits 0
    lease = None
    if uploader is not None:
        from gpu_audit.store.lock import RemoteLease

        lease = RemoteLease(uploader.fs, uploader.base, settings.host, ttl_s=max(300.0, 3 * settings.flush_every_s))
        try:
            lease.acquire()
        except Exception:
            lock.release()
            raise
    nvml = Nvml()
    try:
        nvml.init()
        sampler = Sampler(settings, nvml, clock, nvml.system())
        if handle_signals:
            install_signal_handlers(sampler, clock)
        from datetime import datetime, timezone

        writer: Any = StoreWriter(local, settings.host, datetime.fromtimestamp(clock.now(), tz=timezone.utc))
        if uploader is not None:
            from gpu_audit.store.remote import SpoolingWriter

            uploader.upload()  # what earlier runs left in the spool
            writer = SpoolingWriter(writer, uploader, lease)
        stats = sampler.run(writer, on_tick)
        if uploader is not None:
            stats.uploaded_files = uploader.uploaded
            stats.warnings.extend(uploader.warnings)
            left = len(uploader.pending())
            if uploader.dropped:
                stats.warnings.append(f"{uploader.dropped} spooled file(s) dropped (over --spool-max)")
            if left:
                stats.warnings.append(f"{left} file(s) remain spooled in {local} ({uploader.last_error}); the next run uploads them")
        if driver is not None:
            stats.virtual_nvml_s = driver.callback_s
    finally:
        nvml.shutdown()
        if lease is not None:
            lease.release()
        lock.release()
        if scenario is not None:
            from gpu_audit.collect.virtual.driver import uninstall

            uninstall()
    return settings, stats


FIELDS = ("utilization", "memory", "power", "temperature", "sm clock", "throttle reasons", "processes",
          "process utilization", "GPM")


def doctor(simulate: str | None = None) -> dict[str, Any]:
    """What the collector will and will not be able to read on this machine, and why."""
    scenario = None
    if simulate:
        scenario, _, _ = _virtual(simulate, True, None, 1.0)
    n = Nvml()
    try:
        n.init()
        report: dict[str, Any] = {"system": n.system(), "devices": [], "notes": []}
        for d in n.discover():
            support: dict[str, Any] = {}
            try:
                row = n.read(d)
                row2 = row
                if d.gpm_supported:  # GPM metrics need two samples some time apart
                    time.sleep(0.2)
                    row2 = n.read(d)
                procs = n.processes(d)
            except DeviceError as e:
                report["devices"].append({"uuid": d.uuid, "name": d.name, "error": str(e)})
                continue
            support["utilization"] = row.get("util_gpu_pct") is not None
            support["memory"] = row.get("mem_used_bytes") is not None
            support["power"] = row.get("power_w") is not None
            support["temperature"] = row.get("temp_c") is not None
            support["sm clock"] = row.get("sm_clock_mhz") is not None
            support["throttle reasons"] = row.get("throttle_reasons") is not None
            support["processes"] = n._q(("nvmlDeviceGetComputeRunningProcesses_v3",
                                          "nvmlDeviceGetComputeRunningProcesses"), d.handle) is not None
            support["process utilization"] = any("sm_util_pct" in p for p in procs) or None
            support["GPM"] = row2.get("sm_active_pct") is not None
            report["devices"].append({
                "uuid": d.uuid, "name": d.name, "index": d.index, "mig_profile": d.mig_profile,
                "mig_mode": d.mig_mode, "parent_uuid": d.parent_uuid, "support": support,
            })
            if d.parent_uuid and not support["utilization"]:
                note = ("MIG devices have no NVML utilization; "
                        + ("GPM SM activity stands in" if support["GPM"] else "without GPM (pre-Hopper) they are 'no evidence'"))
                if note not in report["notes"]:
                    report["notes"].append(note)
        report["notes"].extend(f"driver lacks {m}" for m in sorted(n.missing))
        if scenario is None:
            report["notes"].extend(_environment_notes())
        return report
    finally:
        n.shutdown()
        if scenario is not None:
            from gpu_audit.collect.virtual.driver import uninstall

            uninstall()



def _environment_notes() -> list[str]:
    notes = []
    if os.geteuid() != 0:
        notes.append("not root: /proc/PID/environ of other users' processes is unreadable, so Slurm job ids may be missing")
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        notes.append("inside a container: GPU processes of other PID namespaces show no name or owner")
    return notes
