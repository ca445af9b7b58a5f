"""Reliability: SIGHUP, wall-clock jumps, a full disk."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SCENARIOS, read_table
from gpu_audit.collect.clock import VirtualClock
from gpu_audit.collect.nvml import Nvml
from gpu_audit.collect.sampler import CollectSettings, Sampler
from gpu_audit.collect.virtual.driver import install, uninstall
from gpu_audit.collect.virtual.scenario import load_scenario
from gpu_audit.store.writer import StoreWriter


def start(store, *extra):
    return subprocess.Popen([sys.executable, "-m", "gpu_audit", "collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--realtime",
                             "--out", str(store), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))


def data_files(store):
    return [f for f in glob.glob(f"{store}/samples/*/*/*") if not os.path.basename(f).startswith(".")]


def test_sighup_flushes_and_keeps_running(tmp_path):
    p = start(tmp_path / "s", "--interval", "100ms", "--flush-every", "1h")
    time.sleep(1.5)
    assert data_files(tmp_path / "s") == []
    p.send_signal(signal.SIGHUP)
    time.sleep(0.6)
    assert len(data_files(tmp_path / "s")) == 1 and p.poll() is None
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    ticks = int(out.split(" ticks")[0].split()[-1])
    assert read_table(tmp_path / "s", "samples").num_rows == 4 * ticks


class JumpClock(VirtualClock):
    """Monotonic time moves evenly; the wall clock jumps back an hour at 100 s and forward two at 200 s."""

    def now(self) -> float:
        rel = self.t - self.t0
        return self.t + (-3600 if 100 <= rel < 200 else 7200 - 3600 if rel >= 200 else 0)

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.t0 = start


def test_wall_clock_jumps_neither_stall_nor_burst(tmp_path):
    sc = load_scenario(str(SCENARIOS / "mixed-idle.toml"))
    clock = JumpClock(1795824000.0)
    install(sc, clock, clock.t)
    try:
        nvml = Nvml()
        nvml.init()
        settings = CollectSettings(out=str(tmp_path), host="j", interval_s=10, duration_s=300, read_proc=False, source="virtual")
        stats = Sampler(settings, nvml, clock).run(StoreWriter(str(tmp_path), "j"))
        nvml.shutdown()
    finally:
        uninstall()
    assert stats.ticks == 30 and stats.skipped_ticks == 0
    rows = [r for r in read_table(tmp_path, "samples").to_pylist() if r["index"] == 0]
    assert all(r["interval_s"] == 10 for r in rows)  # the jumps are neither negative nor billed hours
    assert sum(r["interval_s"] for r in rows) == 300


@pytest.fixture
def tmpfs(tmp_path):
    """A 400 KiB tmpfs; unmounted even when a test fails (its collector is killed first)."""
    path = tmp_path / "mnt"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    procs: list[subprocess.Popen] = []
    yield path, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path):
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def wait_for_first_file(store, p, timeout=30):
    """Fill the disk only once the collector runs (it has flushed a first file)."""
    deadline = time.time() + timeout
    while not data_files(store):
        assert p.poll() is None and time.time() < deadline, "the collector did not start"
        time.sleep(0.05)


def readable_and_clean(store):
    for f in glob.glob(f"{store}/**/*", recursive=True):
        assert not f.endswith(".tmp"), f"temp file left: {f}"
        if f.endswith(".parquet"):
            pq.read_table(f)


def test_disk_full_then_freed_keeps_every_row(tmpfs):
    mnt, procs = tmpfs
    p = start(mnt / "s", "--interval", "100ms", "--flush-every", "200ms", "--duration", "4s", "--no-processes")
    procs.append(p)
    wait_for_first_file(mnt / "s", p)
    filler = fill(mnt)
    time.sleep(1.5)
    filler.unlink()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert err.count("warning: cannot write") == 1 and "the disk is full; rows stay buffered" in err
    readable_and_clean(mnt / "s")
    ticks = int(out.split(" ticks")[0].split()[-1])
    assert read_table(mnt / "s", "samples").num_rows == 4 * ticks  # nothing lost


def test_disk_full_to_the_end_is_one_error_line(tmpfs):
    mnt, procs = tmpfs
    p = start(mnt / "s", "--interval", "100ms", "--flush-every", "200ms", "--duration", "3s", "--no-processes")
    procs.append(p)
    wait_for_first_file(mnt / "s", p)
    fill(mnt)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "buffered rows could not be written" in errors[0]
    assert "Traceback" not in err
    readable_and_clean(mnt / "s")
