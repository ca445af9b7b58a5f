"""`import prometheus` against a real Prometheus (Debian's package) backfilled with promtool, and
`import prometheus-text` on saved scrapes. Programs missing here skip with "needs program:"."""

from __future__ import annotations

import json

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import read_table, shared_or_skip
from gpu_audit.analyze.findings import ReportRequest, build

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
STEP = 60
N = 120  # two hours of minute points
GAP = range(30, 46)  # minutes with no point for gpu-a GPU 0
BLANK = 9223372036854775794


def util(host: int, gpu: int, k: int) -> float:
    return float((host * 37 + gpu * 11 + k) % 101)


def openmetrics(t0: int) -> str:
    lines = []
    def fam(name, typ="gauge"):
        lines.append(f"# TYPE {name} {typ}")
    uuids = {(h, g): f"GPU-{h}{g}000000-0000-0000-0000-000000000000" for h in range(2) for g in range(2)}
    fam("DCGM_FI_DEV_GPU_UTIL")
    for (h, g), u in uuids.items():
        if (h, g) == (1, 1):
            continue  # in MIG mode: no GPU_UTIL for that GPU
        for k in range(N):
            if (h, g) == (0, 0) and k in GAP:
                continue
            pod = ',pod="infer-7",namespace="prod"' if (h, g) == (0, 1) else ""
            lines.append(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{g}",UUID="{u}",Hostname="gpu-{"ab"[h]}",modelName="NVIDIA H100 80GB HBM3"{pod}}} {util(h, g, k)} {t0 + k * STEP}')
    fam("DCGM_FI_DEV_FB_USED")
    for (h, g), u in uuids.items():
        for k in range(N):
            if (h, g) == (0, 0) and k in GAP:
                continue
            v = BLANK if (h, g) == (1, 0) and k == 5 else 1024 * (h + g + 1)
            lines.append(f'DCGM_FI_DEV_FB_USED{{gpu="{g}",UUID="{u}",Hostname="gpu-{"ab"[h]}",modelName="NVIDIA H100 80GB HBM3"}} {v} {t0 + k * STEP}')
    fam("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    for k in range(N):
        lines.append(f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{gpu="1",UUID="{uuids[(1, 1)]}",GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",Hostname="gpu-b",modelName="NVIDIA H100 80GB HBM3"}} {0.25 + (k % 4) / 100} {t0 + k * STEP}')
    fam("vllm:generation_tokens", "counter")
    for k in range(N):
        v = 1000 * k if k < 60 else 1000 * (k - 60)  # the server restarts at minute 60
        lines.append(f'vllm:generation_tokens_total{{model_name="m",engine="0",instance="gpu-a:8000",Hostname="gpu-a"}} {v} {t0 + k * STEP}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    if not (PROMETHEUS and PROMTOOL):
        pytest.skip("needs program: prometheus (Debian: apt-get install --no-install-recommends prometheus)")
    d = tmp_path_factory.mktemp("prom")
    t0 = (int(time.time()) // 3600 - 6) * 3600  # six hours ago, on the hour
    (d / "data.om").write_text(openmetrics(t0))
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(d / "data.om"), str(d / "tsdb")],
                   check=True, capture_output=True)
    (d / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/-/ready", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url, t0
    proc.terminate()
    proc.wait(timeout=10)


def test_import_matches_the_file(prometheus, tmp_path, run_cli):
    url, t0 = prometheus
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "prometheus", "--url", url, "--since", str(t0), "--until", str(t0 + (N - 1) * STEP + 1),
                             "--step", "60s", "--out", store)
    assert code == 0, err
    rows = read_table(store, "samples").to_pylist()
    by = {}
    for r in rows:
        by.setdefault(r["uuid"], []).append(r)
    assert {r["host"] for r in rows} == {"gpu-a", "gpu-b"} and all(r["source"] == "dcgm" for r in rows)
    a1 = by["GPU-01000000-0000-0000-0000-000000000000"]
    assert [r["util_gpu_pct"] for r in a1] == [util(0, 1, k) for k in range(N)]
    assert a1[0]["k8s_pod"] == "infer-7" and a1[0]["k8s_namespace"] == "prod"
    assert a1[0]["mem_used_bytes"] == 2048 * 2**20 and a1[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert all(r["interval_s"] == 60 for r in a1)
    # The gap: Prometheus' 5-minute lookback repeats the last point through minute 34; 35..45 are missing.
    a0 = by["GPU-00000000-0000-0000-0000-000000000000"]
    minutes = [round((r["ts"].timestamp() - t0) / 60) for r in a0]
    assert 34 in minutes and not set(range(35, 46)) & set(minutes) and 46 in minutes
    assert a0[minutes.index(46)]["interval_s"] == 60  # 12 minutes > 3 steps: one step, the rest is a gap
    # The blank sentinel is null.
    b0 = by["GPU-10000000-0000-0000-0000-000000000000"]
    assert b0[5]["mem_used_bytes"] is None and b0[6]["mem_used_bytes"] == 2048 * 2**20
    # The MIG instance: a device of its own, utilization from GR_ENGINE_ACTIVE.
    mig = by["GPU-11000000-0000-0000-0000-000000000000/GI-2"]
    assert mig[0]["parent_uuid"] == "GPU-11000000-0000-0000-0000-000000000000" and mig[0]["mig_profile"] == "3g.40gb"
    assert mig[0]["util_gpu_pct"] is None and mig[1]["gr_engine_active_pct"] == pytest.approx(26)
    parent = by["GPU-11000000-0000-0000-0000-000000000000"]
    assert parent[0]["mig_mode"] is True
    # The engine counter is stored as scraped; the report's deltas handle the reset.
    eng = read_table(store, "engine").to_pylist()
    assert [e["generation_tokens_total"] for e in eng][:3] == [0, 1000, 2000] and eng[0]["model"] == "m"
    f = build(ReportRequest([store], None, [], None, None))
    assert f["token_source"] == "engine counters"
    # 1000 per minute for minutes 1..59, then the reset at 60 (delta 0), then 1000 per minute 61..119.
    assert f["models"][0]["completion_tokens"] == 59 * 1000 + 0 + 59 * 1000
    mig_dev = next(d for d in f["devices"] if d["uuid"].endswith("/GI-2"))
    assert mig_dev["utilization_metric"] == "gr_engine_active_pct" and mig_dev["share"] == pytest.approx(3 / 7)
    # The pod's namespace label: every sample of that GPU names "prod", so it holds exactly that GPU's cost.
    prod = next(n for n in f["namespaces"] if n["namespace"] == "prod")
    gpu = next(d for d in f["devices"] if d["uuid"] == "GPU-01000000-0000-0000-0000-000000000000")
    assert prod["devices"] == 1 and prod["spend_usd"] == pytest.approx(gpu["spend_usd"]) and prod["waste_usd"] == pytest.approx(gpu["waste_usd"])


def test_chunks_respect_the_points_limit(prometheus, tmp_path, monkeypatch):
    from gpu_audit.sources import prometheus as prom

    url, t0 = prometheus
    monkeypatch.setattr(prom, "MAX_POINTS", 50)  # force several chunks over the two hours
    from datetime import datetime, timezone

    res = prom.import_prometheus(url, str(tmp_path / "s"), datetime.fromtimestamp(t0, timezone.utc),
                                 datetime.fromtimestamp(t0 + (N - 1) * STEP + 1, timezone.utc), 60)
    rows = read_table(tmp_path / "s", "samples").to_pylist()
    a1 = [r for r in rows if r["uuid"] == "GPU-01000000-0000-0000-0000-000000000000"]
    assert len(a1) == N and len({r["ts"] for r in a1}) == N  # chunks neither lose nor repeat a point
    assert res.queries == 3 * (len(prom.DCGM) + len(__import__("gpu_audit.collect.engines", fromlist=["x"]).engine_metric_names()))


def test_errors_are_one_line(prometheus, tmp_path, run_cli):
    url, t0 = prometheus
    code, _, err = run_cli("import", "prometheus", "--url", url, "--match", 'Hostname=~"(', "--since", str(t0), "--until", str(t0 + 600),
                           "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"Error: Prometheus at {url} rejected the query")
    code, _, err = run_cli("import", "prometheus", "--url", url, "--since", "2001-01-01", "--until", "2001-01-02", "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"Error: no DCGM series in Prometheus at {url}")


def test_unreachable_prometheus(run_cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli("import", "prometheus", "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"Error: cannot reach Prometheus at http://127.0.0.1:{port}")


def test_saved_dcgm_scrapes(run_cli, tmp_path):
    path = shared_or_skip("data/real/dcgm_exporter/nvidia_docs_a100_mig_1g.5gb_dcgm.prom")
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "prometheus-text", str(path), "--at", "2026-11-28T00:00:00Z", "--interval", "60s", "--out", store)
    assert code == 0, err
    rows = {r["uuid"]: r for r in read_table(store, "samples").to_pylist()}
    mig = rows["GPU-34319582-d595-d1c7-d1d2-179bcfa61660/GI-13"]
    assert mig["mig_profile"] == "1g.5gb" and mig["gr_engine_active_pct"] == pytest.approx(99.5687, abs=1e-3)
    parent = rows["GPU-34319582-d595-d1c7-d1d2-179bcfa61660"]
    assert parent["mig_mode"] is True and parent["mem_used_bytes"] == 4845 * 2**20 and parent["power_w"] == pytest.approx(409.692)


def test_saved_scrape_with_nothing_known(run_cli, tmp_path):
    p = tmp_path / "x.prom"
    p.write_text("# TYPE foo gauge\nfoo 1\n")
    code, _, err = run_cli("import", "prometheus-text", str(p), "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"Error: no DCGM or inference-engine series in {p}")


def test_saved_scrape_that_is_not_text(run_cli, tmp_path):
    p = tmp_path / "x.prom"
    p.write_bytes(b"# TYPE foo gauge\nfoo 1\n\x7fELF\x02\x01\x01\x00\x00\x00 garbage \x1b[31m" + b"x" * 300 + b"\n")
    code, _, err = run_cli("import", "prometheus-text", str(p), "--out", str(tmp_path / "s"))
    (line, *_) = err.splitlines()
    assert code == 2 and line.startswith(f"Error: {p}:3: not Prometheus text or OpenMetrics: ")
    assert "\x1b" not in err and "\x00" not in err and len(line) < len(str(p)) + 140
    assert not (tmp_path / "s" / "samples").exists()


NO_MODEL_NAME = """# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaaaaaaa-0000-0000-0000-000000000000",device="nvidia0",Hostname="node-1"} 0
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-aaaaaaaa-0000-0000-0000-000000000000",device="nvidia0",Hostname="node-1"} 0
"""


def test_a_single_scrape_without_a_model_name_reports_without_a_claim(run_cli, tmp_path):
    """A series with no modelName label is unpriced, not a crash; one point without --interval is said to
    stand for no time; with --interval 30 s it is 30 s of evidence: too little for any monthly claim."""
    p = tmp_path / "x.prom"
    p.write_text(NO_MODEL_NAME)
    store = str(tmp_path / "s")
    code, _, err = run_cli("import", "prometheus-text", str(p), "--at", "2026-11-28T00:00:00Z", "--out", store)
    assert code == 0 and "warning: 1 device(s) have one point in time" in err and "give --interval" in err
    out = tmp_path / "f.json"
    code, _, err = run_cli("report", store, "--json", str(out))
    assert code == 0 and "Traceback" not in err, err
    f = json.loads(out.read_text())
    assert f["data_quality"]["devices_without_evidence"][0]["why"].startswith("its samples stand for no time")
    assert f["data_quality"]["unpriced_devices"] == [{"host": "node-1", "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "name": None,
                                                      "why": "its source gives no GPU name: price it with [host]"}]

    store2 = str(tmp_path / "s2")
    code, _, err = run_cli("import", "prometheus-text", str(p), "--at", "2026-11-28T00:00:00Z", "--interval", "30s", "--out", store2)
    assert code == 0 and "warning" not in err
    pricing = tmp_path / "p.toml"
    pricing.write_text('[host]\n"node-1" = 2.0\n')
    code, _, err = run_cli("report", store2, "--pricing", str(pricing), "--json", str(out))
    assert code == 0, err
    f = json.loads(out.read_text())
    assert f["recommendations"] == [] and f["fleet"]["spend_usd"] == pytest.approx(2.0 * 30 / 3600)
    assert f["data_quality"]["devices_not_assessed"] == [
        {"host": "node-1", "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "why": "observed 0.01 h < 1 h"}]
