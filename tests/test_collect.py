"""The real collector against the virtual NVML: values read back from real Parquet files."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SCENARIOS, cli, read_table
from gpu_audit.collect.run import collect
from gpu_audit.collect.virtual.scenario import load_scenario
from gpu_audit.store.schema import DEVICES, PROCESSES, SAMPLES

START = "2026-11-28T00:00:00Z"
T0 = 1795824000.0


def with_start(src: str, tmp_path, extra: str = "") -> str:
    """A copy of a shipped scenario with a fixed start time (and extra TOML appended)."""
    text = (SCENARIOS / src).read_text().replace("[host]\n", f'[host]\nstart = "{START}"\n', 1) + extra
    p = tmp_path / src
    p.write_text(text)
    return str(p)


def run(tmp_path, scenario: str, hours: float = 1, interval: float = 10, **kw):
    out = str(tmp_path / "store")
    settings, stats = collect(out, interval_s=interval, duration_s=hours * 3600, simulate=scenario, handle_signals=False, **kw)
    return out, stats


@pytest.mark.parametrize("name", ["h100-inference.toml", "a100-mig.toml", "mixed-idle.toml", "h200-mig.toml"])
def test_every_shipped_scenario_writes_the_scenario_values(tmp_path, name):
    path = with_start(name, tmp_path)
    out, stats = run(tmp_path, path)
    sc = load_scenario(path)
    samples = read_table(out, "samples")
    assert samples.schema.remove_metadata() == SAMPLES
    assert stats.ticks == 360 and stats.skipped_ticks == 0
    assert samples.num_rows == 360 * len(sc.devices) == stats.device_samples
    by_uuid = {d.uuid: d for d in sc.devices}
    rows = samples.to_pylist()
    checked = 0
    for r in rows[::37]:
        d = by_uuid[r["uuid"]]
        st = sc.state(d, r["ts"].timestamp())
        if r["error"]:
            continue
        if d.mig or d.children:
            assert r["util_gpu_pct"] is None  # NVML gives no utilization for MIG: null, never 0
        else:
            assert r["util_gpu_pct"] == round(st["util"])
            assert r["power_w"] is None or r["power_w"] == pytest.approx(round(st["power_mw"] / 1000, 2), abs=1e-4)  # 10 mW resolution
        assert r["mem_used_bytes"] == st["mem_used_bytes"]
        assert r["mem_total_bytes"] == d.mem_total_bytes
        assert r["interval_s"] == 10.0
        assert r["source"] == "virtual" and r["host"] == sc.host
        checked += 1
    assert checked > 20
    assert read_table(out, "devices").schema.remove_metadata() == DEVICES


def test_timestamps_are_on_the_schedule(tmp_path):
    out, _ = run(tmp_path, with_start("h100-inference.toml", tmp_path), hours=0.5, interval=30)
    ts = sorted({t.timestamp() for t in read_table(out, "samples")["ts"].to_pylist()})
    assert ts == [T0 + 30 * k for k in range(60)]


def test_mig_devices_are_rows_of_their_own(tmp_path):
    out, _ = run(tmp_path, with_start("a100-mig.toml", tmp_path))
    s = read_table(out, "samples").to_pylist()
    migs = {r["uuid"]: r for r in s if r["parent_uuid"]}
    assert sorted(r["mig_profile"] for r in migs.values()) == ["1g.10gb", "2g.20gb", "3g.40gb"]
    assert all(r["uuid"].startswith("MIG-") and r["util_gpu_pct"] is None for r in migs.values())
    # A100 has no GPM: MIG slices carry no SM activity either ("no evidence").
    assert all(r["sm_active_pct"] is None for r in migs.values())
    mem = {r["mig_profile"]: r["mem_total_bytes"] for r in migs.values()}
    assert mem == {"3g.40gb": 40192 * 2**20, "2g.20gb": 19968 * 2**20, "1g.10gb": 9856 * 2**20}
    parent = next(r for r in s if r["uuid"] == next(iter(migs.values()))["parent_uuid"])
    assert parent["mig_mode"] is True and parent["util_gpu_pct"] is None and parent["power_w"] is not None
    # The parent's memory is the sum of its slices' memory.
    at = parent["ts"]
    assert parent["mem_used_bytes"] == sum(r["mem_used_bytes"] for r in s if r["parent_uuid"] == parent["uuid"] and r["ts"] == at)


def test_gpm_on_hopper_including_mig_slices(tmp_path):
    path = with_start("h200-mig.toml", tmp_path)
    out, _ = run(tmp_path, path)
    sc = load_scenario(path)
    rows = read_table(out, "samples").to_pylist()
    by_uuid = {d.uuid: d for d in sc.devices}
    first = {}
    for r in rows:
        d = by_uuid[r["uuid"]]
        if d.children:
            continue
        if r["uuid"] not in first:
            first[r["uuid"]] = r
            assert r["sm_active_pct"] is None  # GPM needs two samples: the first tick has none
            continue
        st = sc.state(d, r["ts"].timestamp())
        assert r["sm_active_pct"] == pytest.approx(round(st["sm_active"], 1), abs=1e-4)  # 0.1 % resolution
        assert r["dram_active_pct"] == pytest.approx(round(st["dram"], 1), abs=1e-4)
    mig = [r for r in rows if r["mig_profile"] == "3g.71gb"]
    assert mig[5]["sm_active_pct"] > 0 and mig[5]["util_gpu_pct"] is None


def test_not_supported_is_null_and_a_lost_gpu_comes_back(tmp_path):
    path = with_start("mixed-idle.toml", tmp_path)
    out, stats = run(tmp_path, path, hours=8, interval=60)
    rows = read_table(out, "samples").to_pylist()
    l4 = [r for r in rows if r["name"] == "NVIDIA L4"]
    others = [r for r in rows if r["name"] != "NVIDIA L4"]
    assert all(r["power_w"] is None for r in l4)  # NOT_SUPPORTED on this GPU only
    assert all(r["power_w"] is not None for r in others)
    lost = [r for r in l4 if r["error"]]
    assert len(lost) == 60 == stats.error_samples
    assert {r["ts"].timestamp() - T0 for r in lost} == {6 * 3600 + 60 * k for k in range(60)}
    assert "GPU is lost" in lost[0]["error"] or "Lost" in lost[0]["error"]
    assert all(r["util_gpu_pct"] is None and r["interval_s"] == 60 for r in lost)
    back = [r for r in l4 if r["ts"].timestamp() - T0 >= 7 * 3600]
    assert back and all(r["error"] is None and r["util_gpu_pct"] is not None for r in back)
    assert all(r["error"] is None for r in others)


def test_slow_calls_skip_ticks_and_dt_follows_the_gap(tmp_path):
    extra = '\n[[faults]]\nkind = "slow"\ngpu = 0\nat = "10m"\nuntil = "10m10s"\ndelay = "15s"\n'
    path = with_start("mixed-idle.toml", tmp_path, extra)
    out, stats = run(tmp_path, path, hours=0.5, interval=10)
    # The tick at 600 s: GPU 0's call takes 15 s, so the pass ends at 615 s (every sample of a pass
    # carries the tick's time). The tick at 610 s has passed: skipped. The next is at 620 s.
    assert stats.skipped_ticks == 1
    assert stats.ticks + stats.skipped_ticks == 180
    rows = [r for r in read_table(out, "samples").to_pylist() if r["index"] == 1]
    dt = {round(r["ts"].timestamp() - T0): r["interval_s"] for r in rows}
    assert 610 not in dt
    assert dt[600] == 10
    assert dt[620] == 20  # 600 -> 620: a gap of 20 s <= 3 intervals counts in full
    assert sum(dt.values()) == pytest.approx(1800)  # every second of the half hour is counted once


def test_dt_of_a_long_gap_is_one_interval(tmp_path):
    extra = '\n[[faults]]\nkind = "slow"\ngpu = 0\nat = "10m"\nuntil = "10m5s"\ndelay = "95s"\n'
    path = with_start("mixed-idle.toml", tmp_path, extra)
    out, stats = run(tmp_path, path, hours=0.5, interval=10)
    rows = [r for r in read_table(out, "samples").to_pylist() if r["index"] == 2]
    gaps = {round(r["ts"].timestamp() - T0): r["interval_s"] for r in rows}
    assert 690 not in gaps and gaps[700] == 10  # 600 -> 700 is 100 s > 30 s: dt is one interval


def test_processes_table(tmp_path):
    out, _ = run(tmp_path, with_start("h100-inference.toml", tmp_path), hours=0.1)
    p = read_table(out, "processes")
    assert p.schema.remove_metadata() == PROCESSES
    rows = p.to_pylist()
    assert {r["name"] for r in rows} == {"vllm", "text-embeddings-router"}
    vllm = [r for r in rows if r["name"] == "vllm"]
    assert all(r["used_mem_bytes"] > 60 * 2**30 and r["type"] == "C" for r in vllm)
    assert any(r["sm_util_pct"] is not None for r in rows)


def test_no_processes_flag(tmp_path):
    out, _ = run(tmp_path, with_start("h100-inference.toml", tmp_path), hours=0.1, processes=False)
    assert not glob.glob(f"{out}/processes/*/*/*.parquet")


def test_file_layout_and_names(tmp_path):
    path = with_start("h100-inference.toml", tmp_path).replace("", "")
    text = open(path).read().replace('name = "infer-h100-01"', 'name = "node/../7 <x>"')
    open(path, "w").write(text)
    out, _ = run(tmp_path, path, hours=3, flush_every_s=3600)
    files = glob.glob(f"{out}/samples/*/*/*.parquet")
    assert {os.path.basename(os.path.dirname(os.path.dirname(f))) for f in files} == {"host=node%2F..%2F7%20%3Cx%3E"}
    assert {os.path.basename(os.path.dirname(f)) for f in files} == {"date=2026-11-28"}
    assert len(files) == 3
    assert read_table(out, "samples")["host"].unique().to_pylist() == ["node/../7 <x>"]


def test_rows_split_at_midnight(tmp_path):
    text = (SCENARIOS / "mixed-idle.toml").read_text().replace("[host]\n", '[host]\nstart = "2026-11-28T23:30:00Z"\n', 1)
    p = tmp_path / "m.toml"
    p.write_text(text)
    out, _ = run(tmp_path, str(p), hours=1)
    dates = sorted({os.path.basename(os.path.dirname(f)) for f in glob.glob(f"{out}/samples/*/*/*.parquet")})
    assert dates == ["date=2026-11-28", "date=2026-11-29"]
    for f in glob.glob(f"{out}/samples/*/date=2026-11-29/*.parquet"):
        assert all(t.hour == 0 for t in pq.read_table(f)["ts"].to_pylist())


# -- subprocesses: signals, crashes, two collectors ------------------------------------------------

def _start(tmp_path, *extra: str, host: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "gpu_audit", "collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--realtime",
            "--out", str(tmp_path / "store"), *extra]
    if host:
        args += ["--host", host]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_and_exits_0(tmp_path, sig):
    p = _start(tmp_path, "--interval", "100ms", "--flush-every", "1h")
    time.sleep(2.0)
    p.send_signal(sig)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert f"stopped by {sig.name}" in out
    s = read_table(tmp_path / "store", "samples")
    assert s.num_rows >= 4 * 5  # everything was in the buffer until the signal
    ticks = int(out.split(" ticks")[0].split()[-1])
    assert s.num_rows == 4 * ticks


def test_kill_9_loses_at_most_one_flush_and_leaves_readable_files(tmp_path):
    p = _start(tmp_path, "--interval", "100ms", "--flush-every", "500ms")
    time.sleep(4.0)
    p.kill()
    p.wait(timeout=10)
    files = glob.glob(str(tmp_path / "store" / "**" / "*"), recursive=True)
    data = [f for f in files if f.endswith(".parquet") and not os.path.basename(f).startswith(".")]
    assert data
    rows = sum(pq.read_table(f).num_rows for f in data if "/samples/" in f)  # every file is readable
    # Started ~0.5-1.5 s after launch (interpreter start); 4 devices at 10 ticks/s, flushed every
    # 0.5 s: at most one flush (~5 ticks, 20 rows) plus the start-up time are missing.
    assert rows >= 4 * 10 * 1.5
    assert all(pq.read_table(f).num_rows > 0 for f in data)


def test_two_collectors_share_one_store(tmp_path):
    a = _start(tmp_path, "--interval", "100ms", "--duration", "2s", host="host-a")
    b = _start(tmp_path, "--interval", "100ms", "--duration", "2s", host="host-b")
    outs = []
    for p in (a, b):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out)
    # A second run on one host, after the first: file names never collide.
    c = _start(tmp_path, "--interval", "100ms", "--duration", "1s", host="host-a")
    c.communicate(timeout=60)
    s = read_table(tmp_path / "store", "samples")
    assert sorted(s["host"].unique().to_pylist()) == ["host-a", "host-b"]
    assert s.num_rows == 2 * 4 * 20 + 4 * 10
    names = [os.path.basename(f) for f in glob.glob(str(tmp_path / "store" / "samples" / "*" / "*" / "*.parquet"))]
    assert len(names) == len(set(names)) == 3


def test_a_second_collector_for_the_same_host_exits_politely(tmp_path):
    a = _start(tmp_path, "--interval", "100ms", "--duration", "3s", host="host-a")
    time.sleep(1.5)
    b = _start(tmp_path, "--interval", "100ms", "--duration", "3s", host="host-a")
    out_b, err_b = b.communicate(timeout=60)
    a.communicate(timeout=60)
    assert b.returncode == 0 and a.returncode == 0
    assert out_b.startswith("a collector already runs for this host and store (pid ") and err_b == ""


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path):
    a = _start(tmp_path, "--interval", "100ms", host="host-a")
    time.sleep(1.5)
    a.kill()
    a.wait(timeout=10)
    b = _start(tmp_path, "--interval", "100ms", "--duration", "1s", host="host-a")
    out, err = b.communicate(timeout=60)
    assert b.returncode == 0 and "stopped by duration" in out, err


# -- bad input: one line, exit 2 -----------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--interval", "-5s"], "Error: --interval must be positive, got '-5s'"),
    (["--interval", "5x"], "Error: --interval: cannot read '5x' as a duration"),
    (["--duration", "0"], "Error: --duration must be positive, got '0'"),
])
def test_bad_options(run_cli, tmp_path, args, message):
    code, out, err = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "1m", "--out", str(tmp_path), *args)
    assert code == 2
    assert err.splitlines()[0] == message


def test_unwritable_store(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "1m", "--out", str(blocker / "store"))
    assert code == 2
    assert err.startswith(f"Error: cannot write to store '{blocker}/store'")
    assert "Traceback" not in err


@pytest.mark.parametrize("text,message", [
    ("[host\nname='x'", "not valid TOML"),
    ("[host]\nname='x'\n", "gpus: at least one [[gpus]] table is needed"),
    ("[[gpus]]\nmodel='H101'\n", "gpus[0].model: unknown GPU model 'H101'"),
    ("[[gpus]]\nmodel='L4'\nworkload={kind='busy'}\n", "gpus[0].workload.kind: unknown workload 'busy'"),
    ("[[gpus]]\nmodel='L4'\n[[gpus.mig]]\nprofile='1g.5gb'\n", "gpus[0].mig: L4 does not support MIG"),
    ("[[gpus]]\nmodel='L4'\n[[faults]]\nkind='lost'\ngpu=3\n", "faults[0].gpus: expected GPU indices below 1"),
    ("[[gpus]]\nmodel='L4'\nworkload={kind='constant', util='high'}\n", "gpus[0].workload.util: expected a number"),
])
def test_malformed_scenario(run_cli, tmp_path, scenario_file, text, message):
    path = scenario_file(text)
    code, out, err = run_cli("collect", "--simulate", path, "--duration", "1m", "--out", str(tmp_path / "s"))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"Error: {path}") and message in lines[0], err
    assert not glob.glob(str(tmp_path / "s" / "*" / "*"))


def test_simulate_without_duration_says_how(run_cli, tmp_path):
    code, _, err = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--out", str(tmp_path))
    assert code == 2 and "needs --duration" in err and "Hint:" in err


def test_no_nvml_is_one_line(tmp_path):
    # This machine has no NVIDIA driver (skip where one exists): the real loader fails cleanly.
    try:
        import ctypes

        ctypes.CDLL("libnvidia-ml.so.1")
        pytest.skip("this machine has NVML")
    except OSError:
        pass
    r = cli("collect", "--duration", "1s", "--out", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "Error: NVML is not available: is the NVIDIA driver installed?"


def test_collect_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys\nfrom gpu_audit.cli import run\n"
        f"rc = run(['collect', '--simulate', {str(SCENARIOS / 'mixed-idle.toml')!r}, '--duration', '10m', '--out', {str(tmp_path)!r}])\n"
        "heavy = [m for m in ('pandas', 'duckdb', 'plotly', 'jinja2') if m in sys.modules]\n"
        "assert rc == 0 and not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr


def test_doctor_on_a_virtual_host(run_cli):
    code, out, err = run_cli("doctor", "--simulate", str(SCENARIOS / "h200-mig.toml"))
    assert code == 0, err
    assert "driver 550.90.07" in out
    assert "MIG 3g.71gb" in out
    assert "MIG devices have no NVML utilization; GPM SM activity stands in" in out


def test_doctor_reports_a_field_not_supported(run_cli):
    code, out, _ = run_cli("doctor", "--simulate", str(SCENARIOS / "mixed-idle.toml"))
    assert code == 0
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("3 NVIDIA L4 "))
    assert lines[i + 2] == "  cannot read: power, GPM"  # power NOT_SUPPORTED; GPM is Hopper+
    j = next(k for k, line in enumerate(lines) if line.startswith("0 NVIDIA L40S "))
    assert lines[j + 2] == "  cannot read: GPM"


@pytest.mark.gpu
def test_real_gpu_collect(tmp_path):
    out = str(tmp_path / "store")
    settings, stats = collect(out, interval_s=1, duration_s=3, handle_signals=False)
    assert stats.device_samples > 0
    s = read_table(out, "samples").to_pylist()
    assert any(r["util_gpu_pct"] is not None or r["mig_profile"] for r in s)


@pytest.mark.parametrize("kind,message", [
    ("init_no_permission", "Error: NVML refused access: no permission to the NVIDIA device files"),
    ("init_driver_not_loaded", "Error: NVML is installed but the NVIDIA kernel driver is not loaded"),
])
def test_nvml_refusing_to_start_is_one_line(run_cli, tmp_path, scenario_file, kind, message):
    path = scenario_file(f"[[gpus]]\nmodel='L4'\n[[faults]]\nkind='{kind}'\n")
    code, _, err = run_cli("collect", "--simulate", path, "--duration", "1m", "--out", str(tmp_path / "s"))
    assert code == 2 and err.splitlines()[0] == message and "Traceback" not in err


def test_summary_prints_host_and_long_paths_verbatim_on_one_line(run_cli, tmp_path):
    # rich markup in a host name or a path is text; a path longer than the console does not wrap.
    out = tmp_path / ("[bold]" + "x" * 150) / "store"
    code, text, _ = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "1m",
                            "--host", "[red]evil[/red]", "--out", str(out))
    assert code == 0
    assert text.splitlines()[0] == f"gpu-audit collect host [red]evil[/red] -> {out}"
