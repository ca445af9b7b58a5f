"""The container image and the Kubernetes deployment (issue 22, docs/scale.md "Kubernetes").

The Helm chart's templates render (with ``helm`` where it is installed, else tests/helmlite.py) to
valid YAML of the expected kinds, the plain manifests in deploy/kubernetes are the chart's render
with its defaults, and every gpu-audit flag the manifests and the Dockerfile pass exists in the CLI.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from helmlite import render_chart

CHART = ROOT / "deploy" / "helm" / "gpu-audit"


def cli_options() -> dict[str, set[str]]:
    """Every subcommand's option names, from the CLI itself."""
    import typer

    from gpu_audit.cli import app

    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        out[name] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    return out


def gpu_audit_calls(text_or_args) -> list[list[str]]:
    """The gpu-audit command lines in a container's command and args (a shell string or a list)."""
    words = shlex.split(text_or_args) if isinstance(text_or_args, str) else list(text_or_args)
    calls, cur = [], None
    for w in words:
        if w == "gpu-audit":
            cur = []
            calls.append(cur)
        elif cur is not None:
            if w in ("&&", ";", "||"):
                cur = None
            else:
                cur.append(w)
    return calls


def containers(docs: list[dict]) -> list[dict]:
    out = []
    for d in docs:
        if d["kind"] not in ("DaemonSet", "CronJob"):
            continue
        spec = d["spec"]
        pod = spec["jobTemplate"]["spec"]["template"]["spec"] if d["kind"] == "CronJob" else spec["template"]["spec"]
        out += pod["containers"]
    return out


def check_flags(docs: list[dict]) -> int:
    opts = cli_options()
    checked = 0
    for c in containers(docs):
        cmd = c.get("command", [])
        if cmd[:2] == ["/bin/sh", "-c"]:
            calls = [call for a in c["args"] for call in gpu_audit_calls(a)]
        else:
            calls = [list(c["args"])]  # the image's entrypoint is `gpu-audit collect`: args start with the subcommand
        for call in calls:
            sub, *rest = call
            assert sub in opts, f"no command {sub!r}"
            for w in rest:
                if w.startswith("--"):
                    assert w.split("=")[0] in opts[sub], f"gpu-audit {sub} has no option {w}"
                    checked += 1
    return checked


def rendered(values: dict | None = None) -> list[dict]:
    return [d for text in render_chart(CHART, values).values() for d in yaml.safe_load_all(text) if d]


def test_the_chart_renders_a_daemonset_a_cronjob_and_the_pricing():
    docs = rendered()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "CronJob", "DaemonSet"]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    assert ds["hostPID"] is True and ds["runtimeClassName"] == "nvidia"
    assert ds["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    c = ds["containers"][0]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in c["env"]
    assert {"name": "pod-logs", "mountPath": "/var/log/pods", "readOnly": True} in c["volumeMounts"]
    assert c["args"][:3] == ["collect", "--out", "/var/lib/gpu-audit/store"] and "$(NODE_NAME)" in c["args"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert '"NVIDIA H100 80GB HBM3" = 3.00' in cm["data"]["pricing.toml"]
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "15 0 * * *"
    assert check_flags(docs) >= 10


def test_values_change_what_they_name():
    docs = rendered({"store": "s3://bucket/gpu-audit", "collector": {**yaml.safe_load((CHART / "values.yaml").read_text())["collector"],
                                                                      "runtimeClassName": "", "interval": "5s"},
                     "report": {**yaml.safe_load((CHART / "values.yaml").read_text())["report"], "enabled": False}})
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "DaemonSet"]
    ds = docs[-1]["spec"]["template"]["spec"] if docs[-1]["kind"] == "DaemonSet" else docs[0]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in ds
    assert ds["containers"][0]["args"][:5] == ["collect", "--out", "s3://bucket/gpu-audit", "--interval", "5s"]
    check_flags(docs)


def test_the_plain_manifests_are_the_chart_rendered_with_its_defaults():
    for name, text in render_chart(CHART).items():
        plain = (ROOT / "deploy" / "kubernetes" / name).read_text()
        assert list(yaml.safe_load_all(plain)) == list(yaml.safe_load_all(text)), name
        check_flags([d for d in yaml.safe_load_all(plain) if d])


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed (the subset renderer ran instead)")
def test_helm_itself_renders_the_same():
    out = subprocess.run(["helm", "template", "gpu-audit", str(CHART)], capture_output=True, text=True, check=True).stdout
    ours = sorted((json.dumps(d, sort_keys=True) for d in rendered()))
    assert sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(out) if d) == ours


def test_the_image_runs_the_collector_as_a_user_with_flags_that_exist():
    text = (ROOT / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert lines[0].startswith("FROM python:") and "slim" in lines[0]
    assert any(l.startswith("USER ") and l.split()[1] not in ("root", "0") for l in lines)
    entry = json.loads(next(l for l in lines if l.startswith("ENTRYPOINT"))[len("ENTRYPOINT"):])
    cmd = json.loads(next(l for l in lines if l.startswith("CMD"))[len("CMD"):])
    assert entry == ["gpu-audit", "collect"]
    opts = cli_options()["collect"]
    assert [w for w in cmd if w.startswith("--") and w not in opts] == []
