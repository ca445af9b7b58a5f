"""The NVML reader's own logic: /proc owners, and faults it must turn into values."""

from conftest import ASSETS
from gpu_audit.collect.nvml import parse_cgroup, proc_owner


def test_kubernetes_pod_and_container_from_cgroup_v2():
    info = proc_owner(101, str(ASSETS / "proc"))
    assert info == {
        "name": "vllm",
        "container_id": "8d3a0f6b2c1e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f",
        "k8s_pod_uid": "3f2c6a1e-9b4d-4e1a-8c2f-0a1b2c3d4e5f",
        "slurm_job_id": None,
        "user": None, "k8s_namespace": None, "k8s_pod": None,  # no status file; no pod index given
    }


def test_slurm_job_from_cgroup_then_environ():
    assert proc_owner(102, str(ASSETS / "proc"))["slurm_job_id"] == "48213"
    assert proc_owner(103, str(ASSETS / "proc"))["slurm_job_id"] == "777"


def test_unreadable_process_is_all_none():
    assert proc_owner(999999, str(ASSETS / "proc")) == {"name": None, "container_id": None, "k8s_pod_uid": None, "slurm_job_id": None,
                                                        "user": None, "k8s_namespace": None, "k8s_pod": None}


def test_docker_cgroup_v1():
    text = "12:memory:/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
    assert parse_cgroup(text)["container_id"] == "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def test_a_longer_hex_run_is_not_a_container_id():
    assert parse_cgroup("0::/x/" + "a" * 66 + "\n")["container_id"] is None
