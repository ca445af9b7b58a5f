"""Cost per workload (docs/metrics.md "Cost per workload"), hand-computed. H100 at $3/h; one hour of
10-minute samples unless said."""

from __future__ import annotations

import pytest

from conftest import ASSETS, fixed_start
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.store.writer import StoreWriter
from storefix import at, series, write_samples

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"


def procs(store, host, uuid, rows):
    """rows: (seconds, pid, name, mem GiB, sm %, pod uid, slurm job)"""
    w = StoreWriter(store, host)
    for t, pid, name, mem, sm, pod, job in rows:
        w.add("processes", {"ts": at(t), "host": host, "uuid": uuid, "pid": pid, "name": name, "used_mem_bytes": int(mem * 2**30),
                            "sm_util_pct": sm, "k8s_pod_uid": pod, "slurm_job_id": job})
    w.flush()


def by_id(f):
    return {w["id"]: w for w in f["workloads"]}


def test_two_pods_share_a_gpu_by_sm_share_then_memory_then_evenly(tmp_path):
    """Hour 0: pods a (60 % SM) and b (20 %): 3/4 and 1/4 of $3. Hour 1: no SM readings, a holds 30 GiB
    and b 10 GiB: 3/4 and 1/4 again. Hour 2: neither SM nor memory: evenly. a: 2.25 + 2.25 + 1.5 = $6."""
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [80] * 18))
    rows = []
    for k in range(6):
        rows += [(600 * k, 1, "srv", 30, 60.0, "pod-a", None), (600 * k, 2, "srv", 10, 20.0, "pod-b", None)]
        rows += [(3600 + 600 * k, 1, "srv", 30, None, "pod-a", None), (3600 + 600 * k, 2, "srv", 10, None, "pod-b", None)]
        rows += [(7200 + 600 * k, 1, "srv", 0, None, "pod-a", None), (7200 + 600 * k, 2, "srv", 0, None, "pod-b", None)]
    procs(store, "h", "GPU-a", rows)
    f = build(ReportRequest([store], PRICING))
    w = by_id(f)
    assert w["pod-a"]["spend_usd"] == pytest.approx(2.25 + 2.25 + 1.5) and w["pod-b"]["spend_usd"] == pytest.approx(0.75 + 0.75 + 1.5)
    assert w["pod-a"]["kind"] == "pod" and w["pod-a"]["peak_memory_bytes"] == 30 * 2**30
    assert w["pod-a"]["waste_usd"] == pytest.approx(0.2 * 6.0)  # 80 % busy: waste is 20 % of its spend


def test_a_slurm_job_over_four_gpus_and_idle_time_held_by_its_owner(tmp_path):
    """Job 4512 holds four GPUs for an hour, three at 10 % and GPU-3 idle (0 %): $12 of spend, $11.10 of
    waste (3 x $3 x 0.9 + $3), 7.5 % mean utilization; GPU-3's idle hour is held by the job: 1 idle-held
    hour, $3 of idle cost charged to it."""
    store = str(tmp_path / "s")
    write_samples(store, [r for i in range(4) for r in series("n", f"GPU-{i}", H100, 0, 600, [0 if i == 3 else 10] * 6)])
    for i in range(4):
        procs(store, "n", f"GPU-{i}", [(600 * k, 100 + i, "python", 40, None, None, "4512") for k in range(6)])
    f = build(ReportRequest([store], PRICING))
    job = by_id(f)["4512"]
    assert job["kind"] == "slurm_job" and job["gpus"] == 4 and job["gpu_hours"] == pytest.approx(4)
    assert job["spend_usd"] == pytest.approx(12.0) and job["waste_usd"] == pytest.approx(3 * 3 * 0.9 + 3.0)
    assert job["idle_held_hours"] == pytest.approx(1.0) and job["idle_usd"] == pytest.approx(3.0)
    assert job["mean_util_pct"] == pytest.approx(7.5)


def test_device_time_with_no_process_is_no_workload_and_totals_add_up(tmp_path):
    """GPU-a has a process in hour 0 only; GPU-b never: hour 1 of GPU-a and both hours of GPU-b are no
    workload ($9 of $12)."""
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 12) + series("h", "GPU-b", H100, 0, 600, [0] * 12))
    procs(store, "h", "GPU-a", [(600 * k, 7, "train", 5, 50.0, None, None) for k in range(6)])
    f = build(ReportRequest([store], PRICING))
    w = by_id(f)
    assert w["h:train"]["spend_usd"] == pytest.approx(3.0) and w["h:train"]["kind"] == "process"
    (none,) = [x for x in f["workloads"] if x["kind"] == "none"]
    assert none["spend_usd"] == pytest.approx(9.0) and none["gpus"] == 2
    assert sum(x["spend_usd"] for x in f["workloads"]) == pytest.approx(f["fleet"]["spend_usd"])


def test_mig_instance_workloads_split_by_memory(tmp_path):
    """A 3g instance (3/7 of $3/h) with two processes holding 6 and 2 GiB (no per-process utilization on
    MIG): 3/4 and 1/4 of its $1.2857."""
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-p", H100, 0, 600, [None] * 6, mig_mode=True)
                  + series("h", "GPU-p/GI-1", H100, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="3g.40gb", sm_active_pct=50.0))
    procs(store, "h", "GPU-p/GI-1", [(600 * k, p, n, m, None, None, None) for k in range(6) for p, n, m in ((1, "a", 6), (2, "b", 2))])
    f = build(ReportRequest([store], PRICING))
    w = by_id(f)
    assert w["h:a"]["spend_usd"] == pytest.approx(3.0 * 3 / 7 * 0.75) and w["h:b"]["spend_usd"] == pytest.approx(3.0 * 3 / 7 * 0.25)
    assert sum(x["spend_usd"] for x in f["workloads"]) == pytest.approx(f["fleet"]["spend_usd"])


def test_the_collector_names_users_pods_and_jobs_as_on_a_real_node(tmp_path):
    """The shipped scenarios name owners; the collector reads them from a fake /proc, kubelet pod
    folders and passwd made for the run, the way it reads a real node."""
    from conftest import SCENARIOS, read_table
    from gpu_audit.collect.run import collect

    store = str(tmp_path / "s")
    collect(store, interval_s=60, duration_s=3600, simulate=fixed_start("mixed-idle.toml", tmp_path), handle_signals=False)
    rows = {(r["name"], r["user"], r["k8s_namespace"], r["k8s_pod"]) for r in read_table(store, "processes").to_pylist()}
    assert ("python3", "alice", None, None) in rows
    assert ("text-generation-launcher", "root", "inference", "tgi-mistral-7b") in rows
    f = build(ReportRequest([store], PRICING))
    w = by_id(f)
    assert w["inference/tgi-mistral-7b"]["kind"] == "pod" and w["inference/tgi-mistral-7b"]["namespace"] == "inference"
    assert w["mixed-01:alice:python3"]["user"] == "alice"


def test_proc_owner_reads_the_user_and_resolves_the_pod(tmp_path):
    from gpu_audit.collect.nvml import PodIndex, proc_owner

    proc = tmp_path / "proc" / "7"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("vllm\n")
    (proc / "status").write_text("Name:\tvllm\nUid:\t1001\t1001\t1001\t1001\n")
    uid = "3f2c6a1e-9b4d-4e1a-8c2f-0a1b2c3d4e5f"
    (proc / "cgroup").write_text(f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-{'a' * 64}.scope\n")
    (tmp_path / "pods" / f"serving_vllm-0_{uid}").mkdir(parents=True)
    info = proc_owner(7, str(tmp_path / "proc"), PodIndex(str(tmp_path / "pods")), {1001: "svc"})
    assert (info["user"], info["k8s_pod_uid"], info["k8s_namespace"], info["k8s_pod"]) == ("svc", uid, "serving", "vllm-0")


def test_group_by_csv_and_the_workload_card(run_cli, tmp_path):
    """Job 4512 (bob) holds 4 GPUs for 6 h at 3 %: the workload card names it and its owner; the CSV
    has one row per workload; --group-by user sums per user."""
    import csv

    store = str(tmp_path / "s")
    write_samples(store, [r for i in range(4) for r in series("n", f"GPU-{i}", H100, 0, 3600, [3] * 6)])
    w = StoreWriter(store, "n")
    for i in range(4):
        for k in range(6):
            w.add("processes", {"ts": at(3600 * k), "host": "n", "uuid": f"GPU-{i}", "pid": 10 + i, "name": "python",
                                "used_mem_bytes": 2**30, "slurm_job_id": "4512", "user": "bob"})
    w.flush()
    out = tmp_path / "w.csv"
    code, text, err = run_cli("report", store, "--pricing", PRICING, "--workloads-csv", str(out), "--group-by", "user")
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["4512", ""] and float(rows[0]["spend_usd"]) == pytest.approx(72.0)
    assert "Workloads (top 1 of 1 by user)" in text and "bob" in text
    f = build(ReportRequest([store], PRICING))
    (card,) = [r for r in f["recommendations"] if r["kind"] == "workload"]
    assert card["title"].startswith("Slurm job 4512 (bob): 4 GPU(s) x 6.0 h at 3% mean utilization, $72.00")
    assert card["savings_class"] == "behaviour"
    idle = [r for r in f["recommendations"] if r["kind"] == "idle"]
    assert idle and all(r["evidence"]["workloads"] == ["4512"] for r in idle)  # the idle cards name the job
    code, _, err = run_cli("report", store, "--pricing", PRICING, "--group-by", "team")
    assert code == 2 and "--group-by" in err


def test_dcgm_pod_labels_map_to_the_same_pod_identity(tmp_path):
    """A DCGM-imported GPU whose samples name pod serving/vllm-0 for the first half hour and
    batch/etl-1 for the second: $1.50 each, the same namespace/name identity the collector gives."""
    store = str(tmp_path / "s")
    rows = series("k8s", "GPU-d", H100, 0, 600, [50] * 6, source="dcgm")
    for k, r in enumerate(rows):
        r["k8s_namespace"], r["k8s_pod"] = ("serving", "vllm-0") if k < 3 else ("batch", "etl-1")
    write_samples(store, rows)
    f = build(ReportRequest([store], PRICING))
    w = by_id(f)
    assert w["serving/vllm-0"]["kind"] == "pod" and w["serving/vllm-0"]["spend_usd"] == pytest.approx(1.5)
    assert w["batch/etl-1"]["namespace"] == "batch" and w["batch/etl-1"]["spend_usd"] == pytest.approx(1.5)
