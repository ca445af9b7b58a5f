"""Owners of a virtual host's processes: a fake ``/proc`` (comm, cgroup, status, environ), kubelet pod
folders (``<namespace>_<pod>_<uid>``) and a passwd file, made from the scenario's ``user``,
``slurm_job`` and ``pod`` fields, so that the real collector reads identities the way it does on a
real node (gpu_audit.collect.nvml.proc_owner)."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import uuid as uuidlib
from typing import Any


def fake_roots(devices: list[Any]) -> dict[str, str] | None:
    """The roots for CollectSettings (proc_root, pods_root, passwd), or None when no workload names an owner."""
    owned = [d for d in devices if d.workload.user or d.workload.slurm_job or d.workload.pod]
    if not owned:
        return None
    base = tempfile.mkdtemp(prefix="gpu-audit-virtual-node-")
    atexit.register(shutil.rmtree, base, True)
    proc, pods = os.path.join(base, "proc"), os.path.join(base, "pods")
    os.makedirs(pods)
    users: dict[str, int] = {}
    for d in devices:
        w = d.workload
        folder = os.path.join(proc, str(d.pid))
        os.makedirs(folder, exist_ok=True)
        user = w.user or "root"
        uid = users.setdefault(user, 0 if user == "root" else 1000 + len(users))
        with open(os.path.join(folder, "comm"), "w") as f:
            f.write(w.process + "\n")
        with open(os.path.join(folder, "status"), "w") as f:
            f.write(f"Name:\t{w.process}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        if w.pod:
            ns, name = w.pod.split("/", 1) if "/" in w.pod else ("default", w.pod)
            pod_uid = str(uuidlib.UUID(hashlib.md5(w.pod.encode()).hexdigest()))
            cid = hashlib.sha256(f"{w.pod}/{d.pid}".encode()).hexdigest()
            cgroup = (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_uid.replace('-', '_')}.slice/"
                      f"cri-containerd-{cid}.scope\n")
            os.makedirs(os.path.join(pods, f"{ns}_{name}_{pod_uid}"), exist_ok=True)
        elif w.slurm_job:
            cgroup = f"0::/system.slice/slurmstepd.scope/job_{w.slurm_job}/step_0/user/task_0\n"
        else:
            cgroup = f"0::/user.slice/user-{uid}.slice/session-1.scope\n"
        with open(os.path.join(folder, "cgroup"), "w") as f:
            f.write(cgroup)
    with open(os.path.join(base, "passwd"), "w") as f:
        for user, uid in users.items():
            f.write(f"{user}:x:{uid}:{uid}::/home/{user}:/bin/sh\n")
    return {"proc_root": proc, "pods_root": pods, "passwd": os.path.join(base, "passwd")}
