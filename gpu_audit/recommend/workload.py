"""workload: a job or pod that holds GPUs at low utilization for long, with its owner, so a team can
ask the right person. Behaviour: the owner must change the job (release the GPUs, batch, resize); the
GPUs are counted by the idle and sizing cards, so this card is in no total."""

from __future__ import annotations

from typing import Any

from gpu_audit.recommend.base import Recommendation, RecommendSettings, monthly


def rule(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    for w in findings.get("workloads") or []:
        if w["kind"] == "none" or w.get("mean_util_pct") is None or (w.get("spend_usd") or 0) <= 0:
            continue
        if w["gpu_hours"] < s.workload_min_gpu_hours or w["mean_util_pct"] >= s.workload_max_util_pct:
            continue
        label = {"slurm_job": "Slurm job", "pod": "pod", "container": "container", "process": "process"}[w["kind"]]
        owner = w.get("user") or w.get("namespace")
        out.append(Recommendation(
            kind="workload", savings_class="behaviour",
            title=f"{label} {w['id']}" + (f" ({owner})" if owner else "") +
                  f": {w['gpus']} GPU(s) x {w['gpu_hours'] / max(1, w['gpus']):.1f} h at {w['mean_util_pct']:.0f}% mean utilization, "
                  f"${w['spend_usd']:,.2f}, of which ${w['waste_usd']:,.2f} waste",
            targets=({"workload": w["id"], "workload_kind": w["kind"]},),
            evidence={"workload_kind": w["kind"], "workload": w["id"], "user": w.get("user"), "namespace": w.get("namespace"),
                      "gpus": w["gpus"], "gpu_hours": w["gpu_hours"], "mean_util_pct": w["mean_util_pct"], "spend_usd": w["spend_usd"],
                      "waste_usd": w["waste_usd"], "idle_held_hours": w["idle_held_hours"], "peak_memory_bytes": w.get("peak_memory_bytes")},
            monthly_savings_usd=monthly(findings, w["waste_usd"]), confidence="low",
            action=(f"Ask {owner or 'its owner'}: the {label} holds {w['gpus']} GPU(s) at {w['mean_util_pct']:.0f}% — release them when "
                    "idle, pack it onto fewer GPUs, or fix what it waits for. The figure is its waste per month, an estimate; "
                    "the idle and sizing cards count these GPUs."),
            settings={"max_util_pct": s.workload_max_util_pct, "min_gpu_hours": s.workload_min_gpu_hours},
        ))
    return out
