"""Object-store stores against moto's S3 server on 127.0.0.1 (moto[server], from PyPI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from conftest import ASSETS, ROOT, SCENARIOS
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.collect.run import collect

BUCKET = "audit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, port: int) -> None:
        self.port, self.proc = port, None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        s3().create_dir(BUCKET)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def s3() -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=os.environ["GPU_AUDIT_S3_ENDPOINT"].split("://")[1], scheme="http",
                             region="us-east-1", allow_bucket_creation=True)


@pytest.fixture
def moto(tmp_path, monkeypatch):
    try:
        import moto.server  # noqa: F401 - only whether moto's server mode is installed
    except ImportError:
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    port = free_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                 "GPU_AUDIT_S3_ENDPOINT": f"http://127.0.0.1:{port}", "XDG_CACHE_HOME": str(tmp_path / "cache"),
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    m = Moto(port)
    m.start()
    yield m
    if m.proc and m.proc.poll() is None:
        m.stop()


def objects(prefix: str) -> list[pafs.FileInfo]:
    return [i for i in s3().get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
            if i.type == pafs.FileType.File]


def scenario(tmp_path, name, start="2026-11-28T00:00:00Z"):
    p = tmp_path / name
    p.write_text((SCENARIOS / name).read_text().replace("[host]\n", f'[host]\nstart = "{start}"\n', 1))
    return str(p)


def test_two_hosts_into_one_bucket_and_report_equals_a_local_copy(moto, tmp_path):
    uri = f"s3://{BUCKET}/store"
    for name in ("mixed-idle.toml", "h200-mig.toml"):
        _, stats = collect(uri, interval_s=60, duration_s=4 * 3600, simulate=scenario(tmp_path, name), handle_signals=False,
                           flush_every_s=3600)
        assert stats.uploaded_files >= 4 and not stats.warnings
    keys = [i.path for i in objects("store")]
    assert any("/samples/host=mixed-01/date=2026-11-28/" in k for k in keys)
    assert any("/samples/host=h200-01/date=2026-11-28/" in k for k in keys)
    assert not [k for k in keys if os.path.basename(k).startswith(".")]  # nothing half-written
    local = tmp_path / "copy"
    pafs.copy_files(f"{BUCKET}/store", str(local), source_filesystem=s3(), destination_filesystem=pafs.LocalFileSystem())
    remote_f = build(ReportRequest([uri], str(ASSETS / "pricing.toml"), [], None, None))
    local_f = build(ReportRequest([str(local)], str(ASSETS / "pricing.toml"), [], None, None))
    from test_rollup import numbers

    a, b = dict(numbers(remote_f)), dict(numbers(local_f))
    a.pop(".inputs.stores[0]"), b.pop(".inputs.stores[0]")
    assert a.keys() == b.keys()
    # Equal up to the order of floating-point sums (the files come in another order).
    assert all(a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12) if isinstance(a[k], float) else a[k] == b[k] for k in a)
    assert not os.listdir(os.path.join(os.environ["XDG_CACHE_HOME"], "gpu-audit", "spool", os.listdir(
        os.path.join(os.environ["XDG_CACHE_HOME"], "gpu-audit", "spool"))[0], "samples", "host=h200-01", "date=2026-11-28"))


def test_store_stopped_mid_run_and_restarted(moto, tmp_path):
    uri = f"s3://{BUCKET}/live"
    env = {**os.environ}
    p = subprocess.Popen([sys.executable, "-m", "gpu_audit", "collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--realtime",
                          "--interval", "100ms", "--flush-every", "300ms", "--duration", "7s", "--out", uri],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT), env=env)
    time.sleep(2.0)
    moto.stop()
    down = time.time()
    time.sleep(2.0)
    moto.start()  # moto keeps nothing across a restart: the bucket comes back empty
    up = time.time()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    rows = []
    for info in objects("live"):
        if "/samples/" in info.path:
            with s3().open_input_file(info.path) as f:
                rows.extend(pq.read_table(f).to_pylist())  # every object is a complete, readable file
    ts = [r["ts"].timestamp() for r in rows]
    assert any(down + 0.3 < t < up - 0.3 for t in ts), "samples taken while the store was down were uploaded later"
    assert max(ts) > up
    spool = os.path.join(os.environ["XDG_CACHE_HOME"], "gpu-audit", "spool")
    left = [f for d, _, fs in os.walk(spool) for f in fs if f.endswith(".parquet")]
    assert left == []


def test_spool_is_bounded_while_the_store_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("GPU_AUDIT_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    _, stats = collect("s3://nowhere/store", interval_s=60, duration_s=3 * 3600, simulate=scenario(tmp_path, "mixed-idle.toml"),
                       handle_signals=False, flush_every_s=300, spool_max_bytes=40_000)
    assert stats.device_samples == 4 * 180  # sampling went on
    assert any("dropped (over --spool-max)" in w for w in stats.warnings)
    assert any("remain spooled" in w for w in stats.warnings)
    spool = tmp_path / "cache" / "gpu-audit" / "spool"
    assert sum(f.stat().st_size for f in spool.rglob("*.parquet")) <= 40_000 + 30_000  # bound + the last flush


def test_import_into_a_bucket_and_unreachable_report(moto, tmp_path, run_cli):
    uri = f"s3://{BUCKET}/imp"
    code, out, err = run_cli("import", "nvidia-smi", str(ASSETS / "nvsmi_quirks.csv"), "--host", "n1", "--tz", "UTC", "--out", uri)
    assert code == 0, err
    assert "uploaded 2 file(s) to s3://audit/imp" in out
    f = build(ReportRequest([uri], str(ASSETS / "pricing.toml"), [], None, None))
    assert f["fleet"]["devices"] == 2
    moto.stop()
    code, _, err = run_cli("report", uri)
    assert code == 2 and err.startswith(f"Error: cannot list {uri}")


def test_a_live_lease_on_the_bucket_stops_a_collector_on_another_machine(moto, tmp_path, run_cli):
    import json as _json

    uri = f"s3://{BUCKET}/leased"
    lease = f"{BUCKET}/leased/.locks/mixed-01.lease"
    with s3().open_output_stream(lease) as f:
        f.write(_json.dumps({"holder": "gpu-host-7 pid 4242", "expires": time.time() + 600}).encode())
    code, out, _ = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "10m", "--out", uri)
    assert code == 0 and out.startswith("a collector already runs for this host and store (lease held by gpu-host-7 pid 4242")
    assert not objects("leased/samples")
    with s3().open_output_stream(lease) as f:  # an expired lease is taken over
        f.write(_json.dumps({"holder": "gpu-host-7 pid 4242", "expires": time.time() - 1}).encode())
    code, out, _ = run_cli("collect", "--simulate", str(SCENARIOS / "mixed-idle.toml"), "--duration", "10m", "--out", uri)
    assert code == 0 and "uploaded" in out and objects("leased/samples")
    assert not [i for i in objects("leased/.locks")]  # released at the end
