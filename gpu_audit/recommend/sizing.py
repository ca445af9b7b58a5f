"""right_size, mig and consolidation: fewer or smaller GPUs for under-used devices."""

from __future__ import annotations

from gpu_audit.fmt import short_id

from collections import defaultdict
from typing import Any

from gpu_audit.catalog import MIB, MODELS, GpuModel, MigProfile, find_model
from gpu_audit.recommend.base import (
    Recommendation, RecommendSettings, busy, eligible, hourly, is_parent_in_mig, monthly, observed_enough, target,
)


def _underused_whole(d: dict[str, Any], s: RecommendSettings) -> bool:
    return (eligible(d, s) and not busy(d, s) and not d.get("parent_uuid") and not is_parent_in_mig(d)
            and (d.get("p95_util_pct") or 0) < s.underused_p95_util_pct and d.get("peak_memory_bytes") is not None)


# -- right_size -----------------------------------------------------------------------------------

def right_size(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    for d in findings["devices"]:
        cur = find_model(d["name"] or "")
        if not _underused_whole(d, s) or cur is None or (d.get("p95_util_pct") or 0) < (findings.get("idle_below_pct") or 5):
            continue  # an idle device is the idle rule's: nothing to size
        need_tflops = (d["p95_util_pct"] or 0) / 100 * cur.bf16_dense_tflops
        need_mem = d["peak_memory_bytes"] * (1 + s.memory_headroom)
        best: tuple[float, GpuModel] | None = None
        for m in MODELS:
            price, provider = s.gpu_prices.get(m.key, (None, None))
            if price is None or provider != d.get("price_provider") or price >= d["price_per_hour"] or m.key == cur.key:
                continue
            if m.memory_bytes < need_mem or need_tflops > s.target_util_pct / 100 * m.bf16_dense_tflops:
                continue
            if best is None or price < best[0]:
                best = (price, m)
        if best is None:
            continue
        price, m = best
        saving = (d["price_per_hour"] - price) * d["gpu_hours"]
        out.append(Recommendation(
            kind="right_size", title=f"{d['host']}: move {cur.key} {short_id(d['uuid'])} to a {m.key} (${d['price_per_hour']:.2f} -> ${price:.2f}/h)",
            targets=(target(d),),
            evidence={"current": cur.key, "proposed": m.key, "peak_memory_bytes": d["peak_memory_bytes"],
                      "proposed_memory_bytes": m.memory_bytes, "p95_util_pct": d["p95_util_pct"],
                      "p95_demand_tflops_bf16": need_tflops, "proposed_bf16_tflops": m.bf16_dense_tflops,
                      "proposed_util_at_p95_pct": 100 * need_tflops / m.bf16_dense_tflops,
                      "price_per_hour": d["price_per_hour"], "proposed_price_per_hour": price},
            monthly_savings_usd=monthly(findings, saving), confidence="medium",
            adds_monthly_usd=monthly(findings, price * d["gpu_hours"]),  # the smaller GPU it moves to
            action=f"Serve this workload on a {m.key}: its {m.memory_bytes / 2**30:.0f} GiB hold the peak "
                   f"{d['peak_memory_bytes'] / 2**30:.1f} GiB with {s.memory_headroom:.0%} headroom, and its dense BF16 compute "
                   f"covers the p95 demand at {100 * need_tflops / m.bf16_dense_tflops:.0f}% utilization.",
            settings={"memory_headroom": s.memory_headroom, "target_util_pct": s.target_util_pct,
                      "underused_p95_util_pct": s.underused_p95_util_pct},
        ))
    return out


# -- mig ------------------------------------------------------------------------------------------

def _eighths(p: MigProfile, model: GpuModel) -> int:
    full = max(x.memory_mb for x in model.mig_profiles)
    return max(1, round(8 * p.memory_mb / full))


def smallest_profile(model: GpuModel, peak_bytes: float, p95_pct: float, s: RecommendSettings) -> MigProfile | None:
    need_slices = model.mig_total_slices * p95_pct / 100 / (s.target_util_pct / 100)
    fits = [p for p in model.mig_profiles if p.memory_mb * MIB >= peak_bytes * (1 + s.memory_headroom) and p.slices >= need_slices]
    return min(fits, key=lambda p: (p.slices, p.memory_mb)) if fits else None


def pack_mig(profiles: list[MigProfile], model: GpuModel) -> list[list[int]]:
    """First-fit decreasing of MIG profiles into GPUs: compute slices <= the GPU's, memory eighths <= 8,
    and no more instances of a profile than it allows. Returns, per GPU, indexes into ``profiles``."""
    order = sorted(range(len(profiles)), key=lambda i: (-profiles[i].slices, -profiles[i].memory_mb))
    gpus: list[list[int]] = []
    for i in order:
        p = profiles[i]
        for g in gpus:
            used = sum(profiles[j].slices for j in g)
            mem = sum(_eighths(profiles[j], model) for j in g)
            same = sum(1 for j in g if profiles[j].name == p.name)
            if used + p.slices <= model.mig_total_slices and mem + _eighths(p, model) <= 8 and same < p.max_instances:
                g.append(i)
                break
        else:
            gpus.append([i])
    return gpus


def mig(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    groups: dict[str, list[tuple[dict[str, Any], MigProfile]]] = defaultdict(list)
    for d in findings["devices"]:
        model = find_model(d["name"] or "")
        if model is None or not model.mig_profiles or not _underused_whole(d, s):
            continue
        p = smallest_profile(model, d["peak_memory_bytes"], d["p95_util_pct"], s)
        if p is not None and p.slices < model.mig_total_slices:
            groups[model.key].append((d, p))
    for key, items in sorted(groups.items()):
        model = next(m for m in MODELS if m.key == key)
        plan = pack_mig([p for _, p in items], model)
        freed = len(items) - len(plan)
        if freed < 1:
            continue
        spend = sum(d["spend_usd"] for d, _ in items)
        layout = [[f"{items[i][0]['host']}/{short_id(items[i][0]['uuid'])} -> {items[i][1].name}" for i in g] for g in plan]
        out.append(Recommendation(
            kind="mig", title=f"MIG: {len(items)} under-used {key} fit as slices on {len(plan)} GPU(s), freeing {freed}",
            targets=tuple(target(d) for d, _ in items),
            evidence={"gpu_model": key, "devices": len(items), "gpus_after": len(plan), "gpus_freed": freed,
                      "profiles": {f"{d['host']}/{d['uuid']}": p.name for d, p in items}, "layout": layout,
                      "spend_in_window_usd": spend},
            monthly_savings_usd=monthly(findings, spend * freed / len(items)), confidence="medium",
            action=f"Enable MIG on {len(plan)} {key} and give each workload its slice; release the other {freed}. "
                   "Placement here checks compute slices, memory eighths and per-profile instance limits; confirm with "
                   "nvidia-smi mig -lgip before reconfiguring.",
            settings={"memory_headroom": s.memory_headroom, "target_util_pct": s.target_util_pct,
                      "underused_p95_util_pct": s.underused_p95_util_pct},
        ))
    # GPUs already in MIG mode: unused slices and unallocated capacity.
    by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in findings["devices"]:
        if d.get("parent_uuid"):
            by_parent[d["parent_uuid"]].append(d)
    for parent in (d for d in findings["devices"] if is_parent_in_mig(d) and d.get("spend_usd") is not None
                   and d.get("mig_instances_visible") is not False and observed_enough(d, s)):
        kids = by_parent.get(parent["uuid"], [])
        unused = [k for k in kids if eligible(k, s) and k["mean_util_pct"] < (findings.get("idle_below_pct") or 5)]
        free = parent.get("unallocated_usd") or 0.0
        if not unused and free <= 0:
            continue
        cost = free + sum(k["spend_usd"] or 0 for k in unused)
        what = [f"{len(unused)} unused slice(s)"] * bool(unused) + ["unallocated slices"] * (free > 0)
        out.append(Recommendation(
            kind="mig", title=f"{parent['host']}: MIG GPU {short_id(parent['uuid'])} has {' and '.join(what)}",
            targets=(target(parent), *(target(k) for k in unused)),
            evidence={"unused_slices": [{"uuid": k["uuid"], "mig_profile": k["mig_profile"], "mean_util_pct": k["mean_util_pct"],
                                         "spend_usd": k["spend_usd"]} for k in unused],
                      "unallocated_usd": free,
                      "slices_without_evidence": [k["mig_profile"] for k in kids if k.get("mean_util_pct") is None]},
            monthly_savings_usd=monthly(findings, cost), confidence="low",
            action="Destroy the unused instances and place other work on the freed slices (or repartition), so that a "
                   "separate GPU elsewhere is not needed. No bill shrinks unless that work would otherwise need a GPU.",
            settings={"idle_below_pct": findings.get("idle_below_pct")}, savings_class="capacity",
        ))
    return out


# -- consolidation --------------------------------------------------------------------------------

def consolidation(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    series = hourly(findings)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in findings["devices"]:
        if _underused_whole(d, s) and d.get("memory_total_bytes"):
            groups[d["name"]].append(d)
    for name, devs in sorted(groups.items()):
        if len(devs) < 2:
            continue
        hours = sorted({r["h"] for d in devs for r in series.get((d["host"], d["uuid"]), [])})
        idx = {h: i for i, h in enumerate(hours)}
        demand = []
        for d in devs:
            u = [0.0] * len(hours)
            m = [0.0] * len(hours)
            for r in series.get((d["host"], d["uuid"]), []):
                u[idx[r["h"]]] = r["mean_util_pct"] or 0.0
                m[idx[r["h"]]] = 100 * (r["mem_max_bytes"] or 0) / d["memory_total_bytes"]
            demand.append((d, u, m))
        demand.sort(key=lambda x: -max(x[1]))
        # First-fit decreasing, the fit checked for every open GPU at once (numpy: bins x hours).
        import numpy as np

        cap_u, cap_m = s.consolidation_compute_pct, s.consolidation_memory_pct
        bu = np.zeros((0, len(hours)))
        bm = np.zeros((0, len(hours)))
        members: list[list[dict[str, Any]]] = []
        for d, u, m in demand:
            ua, ma = np.asarray(u), np.asarray(m)
            fits = np.flatnonzero(np.all(bu + ua <= cap_u + 1e-9, axis=1) & np.all(bm + ma <= cap_m + 1e-9, axis=1)) if len(members) else []
            if len(fits):
                i = int(fits[0])
                bu[i] += ua
                bm[i] += ma
                members[i].append(d)
            else:
                bu = np.vstack([bu, ua])
                bm = np.vstack([bm, ma])
                members.append([d])
        bins = [(bu[i], bm[i], members[i]) for i in range(len(members))]
        freed = len(devs) - len(bins)
        if freed < 1:
            continue
        spend = sum(d["spend_usd"] for d in devs)
        plan = [{"workloads": [f"{x['host']}/{short_id(x['uuid'])}" for x in group],
                 "peak_hourly_util_pct": float(u.max()) if len(u) else 0.0, "peak_hourly_memory_pct": float(m.max()) if len(m) else 0.0}
                for u, m, group in bins]
        out.append(Recommendation(
            kind="consolidation", title=f"Consolidate {len(devs)} under-used {name} onto {len(bins)}, freeing {freed}",
            targets=tuple(target(d) for d in devs),
            evidence={"gpu_model": name, "before": len(devs), "after": len(bins), "gpus_freed": freed, "plan": plan,
                      "hours_checked": len(hours), "spend_in_window_usd": spend},
            monthly_savings_usd=monthly(findings, spend * freed / len(devs)),
            confidence="medium" if len(hours) >= 24 else "low",
            action="Co-locate the grouped workloads (same GPU, separate processes or MPS/MIG), hour by hour their combined "
                   f"demand stays under {s.consolidation_compute_pct:.0f}% compute and {s.consolidation_memory_pct:.0f}% memory.",
            settings={"compute_pct": s.consolidation_compute_pct, "memory_pct": s.consolidation_memory_pct,
                      "underused_p95_util_pct": s.underused_p95_util_pct},
        ))
    return out
