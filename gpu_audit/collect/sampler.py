"""The sampling loop: one consistent pass over every device per tick, into the store writer.

Ticks are scheduled at ``start + k * interval`` (no drift). A tick that cannot be taken on time
(the previous one overran) is skipped and counted, never taken late in a burst. Each sample's
``interval_s`` (dt) is computed here, once, as DESIGN.md defines it: the gap since the previous
sample of the same device in this run when the gap is at most 3 intervals, else one interval.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from gpu_audit.collect.nvml import Device, DeviceError, Nvml, proc_owner
from gpu_audit.store.writer import StoreWriter

MAX_PROCESS_NAME = 200  # characters of a process name kept in the store


@dataclass
class CollectSettings:
    out: str
    host: str
    interval_s: float = 5.0
    duration_s: float | None = None
    flush_every_s: float = 60.0
    processes: bool = True
    source: str = "nvml"
    read_proc: bool = True  # read /proc/PID for owners (virtual hosts: a fake /proc made for the run)
    proc_root: str = "/proc"
    pods_root: str = "/var/log/pods"
    passwd: str | None = None  # uid -> name from this file (default: the host's own, through pwd)
    scrape: tuple[str, ...] = ()  # inference-engine /metrics URLs


@dataclass
class CollectStats:
    ticks: int = 0
    skipped_ticks: int = 0
    device_samples: int = 0
    error_samples: int = 0
    process_rows: int = 0
    engine_rows: int = 0
    scrape_errors: int = 0
    flushes: int = 0
    failed_flushes: int = 0
    devices: int = 0
    cpu_s: float = 0.0
    uploaded_files: int = 0
    virtual_nvml_s: float = 0.0  # of cpu_s, the time inside the virtual NVML's simulated C functions
    started: float = 0.0
    ended: float = 0.0
    stopped_by: str | None = None
    warnings: list[str] = field(default_factory=list)


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


class Sampler:
    def __init__(self, settings: CollectSettings, nvml: Nvml, clock: Any, system: dict[str, Any] | None = None) -> None:
        self.s = settings
        self.nvml = nvml
        self.clock = clock
        self.stats = CollectStats()
        self.stop_reason: str | None = None
        self.flush_requested = False
        self._last: dict[str, float] = {}  # uuid -> ts of its previous sample in this run
        self._energy: dict[str, int] = {}  # uuid -> its energy counter at its previous sample
        self._mj_kept: dict[str, float] = {}  # uuid -> time its raw energy counter was last written
        self._pods: Any = None  # PodIndex, made on the first process
        self._users: dict[int, str] = {}
        self._first_seen: dict[str, float] = {}
        self._names: dict[int, str | None] = {}
        self._owners: dict[int, dict[str, Any]] = {}
        self.system = system or {}
        self.devices: list[Device] = []
        self.writer: StoreWriter | None = None
        self.scraper: Any = None

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def request_flush(self) -> None:
        self.flush_requested = True

    def _dt(self, uuid: str, t: float) -> float:
        prev = self._last.get(uuid)
        self._last[uuid] = t
        if prev is None:
            return self.s.interval_s
        gap = t - prev
        return gap if 0 < gap <= 3 * self.s.interval_s else self.s.interval_s

    def _energy_j(self, uuid: str, mj: int | None, gap_is_dt: bool) -> float | None:
        """The counter's delta since the previous sample, where that sample's gap is its dt; a counter
        that went back (a driver reload, a wrap) gives None: the analysis takes power x dt there."""
        prev = self._energy.get(uuid)
        if mj is None:
            self._energy.pop(uuid, None)
            return None
        self._energy[uuid] = mj
        if prev is None or not gap_is_dt or mj < prev:
            return None
        return float(round((mj - prev) / 1000))  # whole joules: finer digits mean nothing and cost disk

    def _device_rows(self, t: float) -> None:
        assert self.writer is not None
        for d in self.devices:
            self._first_seen.setdefault(d.uuid, t)
        self._write_inventory(t)

    def _write_inventory(self, t: float) -> None:
        assert self.writer is not None
        for d in self.devices:
            self.writer.add("devices", {
                "ts": _ts(t), "host": self.s.host, "uuid": d.uuid, "parent_uuid": d.parent_uuid,
                "index": d.index, "name": d.name, "mig_profile": d.mig_profile, "mig_mode": d.mig_mode,
                "mig_slices": d.mig_slices, "mig_total_slices": d.mig_total_slices,
                "pci_bus_id": d.pci_bus_id, "mem_total_bytes": d.mem_total_bytes,
                "power_limit_w": d.power_limit_w, "gpm_supported": d.gpm_supported,
                "source": self.s.source, "run_id": self.writer.run_id,
                "first_seen": _ts(self._first_seen.get(d.uuid, t)), "last_seen": _ts(self._last.get(d.uuid, t)),
                **self.system,
            })

    def tick(self, t: float) -> None:
        """One pass over every device at time ``t``."""
        w = self.writer
        assert w is not None
        ts = _ts(t)
        for d in self.devices:
            base = {"ts": ts, "host": self.s.host, "uuid": d.uuid, "parent_uuid": d.parent_uuid, "index": d.index,
                    "name": d.name, "mig_profile": d.mig_profile, "mig_mode": d.mig_mode, "source": self.s.source}
            try:
                row = self.nvml.read(d)
                procs = self.nvml.processes(d) if self.s.processes else []
            except DeviceError as e:
                row, procs = {"error": str(e), "mem_total_bytes": d.mem_total_bytes}, []
                d.gpm_prev = None  # GPM needs two good samples again
                self.stats.error_samples += 1
            row.update(base)
            prev = self._last.get(d.uuid)
            row["interval_s"] = self._dt(d.uuid, t)
            row["energy_j"] = self._energy_j(d.uuid, row.get("energy_mj"), prev is not None and row["interval_s"] == t - prev)
            if row.get("energy_mj") is not None:
                # The raw counter is kept once a minute per device (an audit point; the per-sample energy is
                # energy_j): at 1 s, a counter in every row cost 2.3 B per sample on disk, 30 % of the total.
                kept = self._mj_kept.get(d.uuid)
                if kept is not None and t - kept < 60:
                    row["energy_mj"] = None
                else:
                    self._mj_kept[d.uuid] = t
            w.add("samples", row)
            self.stats.device_samples += 1
            for p in procs:
                p.update(self._owner(p["pid"]))
                p.update(ts=ts, host=self.s.host, uuid=d.uuid)
                w.add("processes", p)
                self.stats.process_rows += 1

    def _owner(self, pid: int) -> dict[str, Any]:
        """Name and owner of a process, looked up once per pid per run."""
        if pid not in self._owners:
            if self._pods is None:
                from gpu_audit.collect.nvml import PodIndex, read_passwd

                self._pods = PodIndex(self.s.pods_root)
                self._users = read_passwd(self.s.passwd) if self.s.passwd else {}
            info = proc_owner(pid, self.s.proc_root, self._pods, self._users) if self.s.read_proc else {}
            if not info.get("name"):
                info["name"] = self.nvml.process_name(pid)
            name = info.get("name")
            if name and len(name) > MAX_PROCESS_NAME:  # a whole command line as a name: cut, marked
                info["name"] = name[:MAX_PROCESS_NAME] + "…[cut]"
            self._owners[pid] = info
        return self._owners[pid]

    def _engine_rows(self, now: float) -> None:
        assert self.writer is not None and self.scraper is not None
        for ts, row in self.scraper.take(now):
            self.writer.add("engine", {**row, "ts": _ts(ts), "host": self.s.host, "source": "scrape"})
            self.stats.engine_rows += 1
            self.stats.scrape_errors += "error" in row

    def run(self, writer: StoreWriter, on_tick: Callable[[CollectStats], None] | None = None) -> CollectStats:
        self.writer = writer
        clock, s = self.clock, self.s
        self.scraper = None
        if s.scrape:
            from gpu_audit.collect.engines import Scraper

            self.scraper = Scraper(list(s.scrape), s.interval_s, clock.virtual)
            self.scraper.start(clock.now)
        try:
            return self._run(writer, on_tick)
        finally:
            if self.scraper is not None:
                self.scraper.stop()

    def _flush(self, writer: StoreWriter, final: bool = False) -> None:
        """Write the buffers. A failed periodic flush (disk full, store gone) keeps the rows buffered
        and is retried at the next flush, with one warning line; a failed final flush is an error."""
        from gpu_audit.store.writer import StoreError

        try:
            writer.flush()
            self.stats.flushes += 1
        except StoreError as e:
            self.stats.failed_flushes += 1
            if final:
                raise StoreError(f"{e.message}; {writer.pending()} buffered rows could not be written") from None
            if self.stats.failed_flushes == 1:
                import sys

                sys.stderr.write(f"warning: {e.message}; rows stay buffered and the write is retried\n")
                sys.stderr.flush()

    def _run(self, writer: StoreWriter, on_tick: Callable[[CollectStats], None] | None) -> CollectStats:
        # Ticks are scheduled on the monotonic clock, so a wall-clock jump (NTP, a manual change)
        # neither stalls the loop nor bursts it; timestamps are the wall clock's.
        clock, s = self.clock, self.s
        cpu0 = time.process_time()
        start = clock.now()
        start_m = clock.monotonic()
        self.stats.started = start
        end_m = start_m + s.duration_s if s.duration_s else math.inf
        self.devices = self.nvml.discover()
        self.stats.devices = len(self.devices)
        self._device_rows(start)
        last_flush = start_m
        k = 0
        while self.stop_reason is None:
            target = start_m + k * s.interval_s
            if target >= end_m:
                break
            now_m = clock.monotonic()
            if now_m < target:
                clock.sleep(target - now_m)
                if self.stop_reason is not None:
                    break
            self.tick(clock.now())
            if self.scraper is not None:
                self._engine_rows(clock.now())
            self.stats.ticks += 1
            if on_tick:
                on_tick(self.stats)
            now_m = clock.monotonic()
            # The next tick is the first scheduled time not yet passed; the ones in between are skipped.
            nxt = max(k + 1, math.ceil((now_m - start_m) / s.interval_s - 1e-9))
            self.stats.skipped_ticks += nxt - k - 1
            k = nxt
            if now_m - last_flush >= s.flush_every_s or self.flush_requested:
                self.flush_requested = False
                self._flush(writer)
                last_flush = now_m
        if self.scraper is not None and not clock.virtual:
            self._engine_rows(clock.now())  # what finished since the last tick
        self.stats.stopped_by = self.stop_reason or "duration"
        self.stats.ended = clock.now()
        self._write_inventory(self.stats.ended)
        self._flush(writer, final=True)
        self.stats.cpu_s = time.process_time() - cpu0
        self.stats.warnings.extend(f"this driver lacks {name}; its fields are null" for name in sorted(self.nvml.missing))
        if self.stats.failed_flushes:
            self.stats.warnings.append(f"{self.stats.failed_flushes} flush(es) failed and were retried")
        return self.stats


def install_signal_handlers(sampler: Sampler, clock: Any) -> None:
    """SIGTERM and SIGINT end the loop cleanly: the buffered rows are flushed, exit code 0. SIGHUP
    flushes now and goes on.

    On the wall clock the loop sleeps in ``time.sleep``, which a signal interrupts only for the
    handler to run; sleeping in short slices keeps the exit prompt.
    """

    def handler(signum: int, frame: Any) -> None:
        sampler.request_stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    # SIGHUP (log rotation, a reload): write what is buffered now and keep running.
    signal.signal(signal.SIGHUP, lambda signum, frame: sampler.request_flush())
    if not clock.virtual:
        orig = clock.sleep

        def sliced(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while sampler.stop_reason is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                orig(min(left, 0.2))

        clock.sleep = sliced

