"""What a recommendation claims: its savings class, its confidence, and the totals (DESIGN.md
"Savings classes", "Billing", "Confidence", "Monthly"; docs/recommendations.md).

The rules say what a change frees: a whole device (idle, right_size), k of the n GPUs they target
(mig packing, consolidation, batching, quantization), MIG slices (capacity), or a product change
(behaviour). Whether that shrinks the bill depends on the target and on how the host is bought, so
it is decided here, once, for every rule:

- a MIG instance, or a GPU that is reserved or owned: capacity;
- a GPU billed per GPU on demand: cash;
- a GPU of a node billed per node on demand: cash only where every GPU of the node is freed (by
  release recommendations that together cover the node, or by a k-of-n plan whose targets include
  whole nodes and whose k empties them); otherwise capacity.

A recommendation is ``cash`` when any part of it is; its ``monthly_savings_usd`` is then the cash
part and ``evidence.capacity_part_monthly_usd`` the rest. Totals count cash only, each device once;
capacity has its own total, in $ and GPU-equivalents (monthly $ / (price x 730)); behaviour is in no
total.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from gpu_audit.fmt import short_id
from gpu_audit.recommend.base import HOURS_PER_MONTH, Recommendation

LEVELS = ("low", "medium", "high")
HIGH_HOURS, HIGH_COVERAGE_PCT, MEDIUM_HOURS = 7 * 24.0, 90.0, 24.0
SPECIFIC = {"idle", "right_size"}  # the targets themselves are freed (or moved), one by one
RELEASE_VARIANTS = {"idle_empty", "idle_memory_held"}  # an idle device given back (not a schedule)


def _billing(d: dict[str, Any]) -> dict[str, Any]:
    return d.get("billing") or {"unit": "gpu", "commitment": "on-demand", "declared": False}


def rests_on(devs: list[dict[str, Any]]) -> dict[str, Any]:
    """The billing a claim about ``devs`` rests on: unit and commitment ("mixed" where the targets
    differ), declared only where every target's host is covered by the pricing file's [billing]."""
    if not devs:
        return {}
    bills = [_billing(d) for d in devs]
    units, commits = {b["unit"] for b in bills}, {b["commitment"] for b in bills}
    sources = sorted({b.get("source") or "" for b in bills} - {""})
    return {"unit": units.pop() if len(units) == 1 else "mixed", "commitment": commits.pop() if len(commits) == 1 else "mixed",
            "declared": all(b.get("declared", False) for b in bills), "source": "; ".join(sources)}


def node_gpus(findings: dict[str, Any]) -> dict[str, set[str]]:
    """Per host, its physical GPUs (the billing units of a node)."""
    out: dict[str, set[str]] = defaultdict(set)
    for d in findings["devices"]:
        if not d.get("parent_uuid"):
            out[d["host"]].add(d["uuid"])
    return out


def confidence(findings: dict[str, Any], devs: list[dict[str, Any]]) -> tuple[str, str]:
    """The highest confidence the evidence allows: high needs 7 days observed at >= 90 % coverage, medium
    24 h; the least-observed target decides."""
    if devs:
        hours = min(d.get("covered_hours") or 0 for d in devs)
        cov = min(d.get("coverage_pct") or 0 for d in devs)
    else:
        cov = (findings.get("fleet") or {}).get("coverage_pct") or 0
        hours = findings["window"]["hours"] * cov / 100
    level = "high" if hours >= HIGH_HOURS and cov >= HIGH_COVERAGE_PCT else "medium" if hours >= MEDIUM_HOURS else "low"
    why = (f"{hours / 24:.1f} days observed at {cov:.0f}% coverage (high needs 7 days at 90 %, medium 24 h)")
    return level, why


def classify(findings: dict[str, Any], recs: list[Recommendation]) -> list[Recommendation]:
    """Each recommendation with its savings class, cash part, capacity part, confidence and a target-fit action."""
    devices = {(d["host"], d["uuid"]): d for d in findings["devices"]}
    nodes = node_gpus(findings)
    released: dict[str, set[str]] = defaultdict(set)  # per host, GPUs that specific release recommendations free
    share = 0.9
    for r in recs:
        if r.kind == "idle" and r.evidence.get("variant") in RELEASE_VARIANTS:
            share = r.settings.get("idle_hour_share", share)
            for t in r.targets:
                released[t["host"]].add(t["uuid"])
    together = _idle_together(findings, nodes, released, share)
    out = []
    for r in recs:
        devs = [devices[(t["host"], t["uuid"])] for t in r.targets if (t.get("host"), t.get("uuid")) in devices]
        level, why = confidence(findings, devs)
        r = replace(_with_energy(findings, r, devs), billing=rests_on(devs))
        if r.kind in ("idle", "right_size", "consolidation") and any(d.get("workloads") for d in devs):
            r = replace(r, evidence={**r.evidence, "workloads": sorted({w for d in devs for w in d.get("workloads") or []})})
        if LEVELS.index(r.confidence) < LEVELS.index(level):
            level, why = r.confidence, why + f"; the {r.kind} rule rates this {r.confidence}"
        ev = dict(r.evidence)
        if r.savings_class != "cash" or not devs:
            out.append(replace(r, confidence=level, evidence={**ev, "confidence_why": why}))
            continue
        cash_frac, notes = _cash_fraction(r, devs, nodes, together)
        total = r.monthly_savings_usd
        cash, capacity = total * cash_frac, total * (1 - cash_frac)
        if cash_frac > 0 and capacity > 1e-9:
            ev["capacity_part_monthly_usd"] = capacity
        if 0 < cash_frac and len(notes["cash_devices"]) < len(devs):
            ev["cash_from"] = [f"{d['host']}/{d['uuid']}" for d in notes["cash_devices"]]
        ev["billing"] = sorted({f"{d['host']}: {_billing(d)['unit']}, {_billing(d)['commitment']}" for d in devs})
        if notes.get("node_plan"):
            ev["node_plan"] = notes["node_plan"]
        action = _fit_action(r, devs, nodes, notes)
        out.append(replace(r, savings_class="cash" if cash_frac > 0 else "capacity",
                           monthly_savings_usd=cash if cash_frac > 0 else capacity,
                           confidence=level, action=action, evidence={**ev, "confidence_why": why}))
    return out


def _with_energy(findings: dict[str, Any], r: Recommendation, devs: list[dict[str, Any]]) -> Recommendation:
    """Idle, consolidation and right-size cards add the energy they would save a month (board energy;
    kgCO2e where the pricing file gives a grid intensity): idle, the device's idle kWh; consolidation,
    the freed GPUs at the lowest mean power of the group (what an emptied GPU would still draw);
    right-size, the device's kWh x (1 - the proposed GPU's power limit / the current one's)."""
    from gpu_audit.catalog import find_model, model_by_key

    hours = findings["window"]["hours"]
    if r.kind not in ("idle", "consolidation", "right_size") or not devs or hours <= 0 or any(d.get("energy_kwh") is None for d in devs):
        return r
    month = 730 / hours
    if r.kind == "idle":
        kwh = sum(d.get("idle_energy_kwh") or 0.0 for d in devs)
    elif r.kind == "consolidation":
        power_kw = min((d["energy_kwh"] / d["gpu_hours"] for d in devs if d.get("gpu_hours")), default=0.0)
        kwh = _freed(r, len(devs)) * power_kw * hours
    else:
        cur, new = find_model(devs[0].get("name") or ""), model_by_key(r.evidence.get("proposed") or "")
        if cur is None or new is None or not cur.power_limit_w:
            return r
        kwh = devs[0]["energy_kwh"] * max(0.0, 1 - new.power_limit_w / cur.power_limit_w)
    co2 = [d["kgco2e"] / d["energy_kwh"] for d in devs if d.get("kgco2e") is not None and d.get("energy_kwh")]
    ev = {**r.evidence, "energy_saved_kwh_month": kwh * month}
    if co2:
        ev["kgco2e_saved_month"] = kwh * month * sum(co2) / len(co2)
    return replace(r, evidence=ev)


def _idle_together(findings: dict[str, Any], nodes: dict[str, set[str]], released: dict[str, set[str]],
                   share: float) -> dict[tuple[str, str], float]:
    """For node-billed hosts whose every GPU has a release recommendation: per GPU, the share of its
    idle hours in which every GPU of the node was idle at once. Only those hours empty the node (one
    GPU idle at night and another by day never free the node together)."""
    from gpu_audit.recommend.base import hourly

    out: dict[tuple[str, str], float] = {}
    devices = {(d["host"], d["uuid"]): d for d in findings["devices"]}
    series = None
    for host, gpus in nodes.items():
        d0 = devices.get((host, next(iter(gpus))))
        if not gpus or not gpus <= released[host] or d0 is None or _billing(d0)["unit"] != "node":
            continue
        series = series or hourly(findings)
        idle = {u: {r["h"] for r in series.get((host, u), []) if r["covered_s"] and r["idle_s"] is not None
                    and r["idle_s"] >= share * r["covered_s"]} for u in gpus}
        common = set.intersection(*idle.values())
        for u, hours in idle.items():
            out[(host, u)] = len(common & hours) / len(hours) if hours else 0.0
    return out


def _cash_fraction(r: Recommendation, devs: list[dict[str, Any]], nodes: dict[str, set[str]],
                   together: dict[tuple[str, str], float]) -> tuple[float, dict[str, Any]]:
    """The share of a recommendation's saving that shrinks a bill, and what decided it."""
    notes: dict[str, Any] = {"mig": [], "committed": [], "node_partial": [], "node_emptied": [], "cash_devices": []}
    if r.kind in SPECIFIC:
        cashable = 0.0
        for d in devs:
            b = _billing(d)
            frac = together.get((d["host"], d["uuid"]), 0.0) if r.kind == "idle" else 0.0
            if d.get("parent_uuid"):
                notes["mig"].append(d)
            elif b["commitment"] != "on-demand":
                notes["committed"].append(d)
            elif b["unit"] == "node" and frac <= 0:
                notes["node_partial"].append(d)
            else:
                cashable += frac if b["unit"] == "node" else 1.0
                notes["cash_devices"].append(d)
                if b["unit"] == "node":
                    notes["node_emptied"].append(d)
        return cashable / len(devs), notes
    # k of n: the plan frees k GPUs among the targets, whichever they are.
    freed = _freed(r, len(devs))
    if freed <= 0:
        return 0.0, notes
    per_gpu = sum(1 for d in devs if not d.get("parent_uuid") and _billing(d)["commitment"] == "on-demand"
                  and _billing(d)["unit"] == "gpu")
    targets_by_host: dict[str, set[str]] = defaultdict(set)
    for d in devs:
        targets_by_host[d["host"]].add(d["uuid"])
    whole = sorted((len(nodes[h]), h) for h, uu in targets_by_host.items()
                   if nodes[h] and nodes[h] <= uu and _billing(next(d for d in devs if d["host"] == h))["unit"] == "node"
                   and _billing(next(d for d in devs if d["host"] == h))["commitment"] == "on-demand")
    left, emptied = freed, []
    for size, h in whole:  # smallest nodes first: the most whole nodes a plan of this size can empty
        if size <= left:
            emptied.append(h)
            left -= size
    node_hosts = {d["host"] for d in devs if _billing(d)["unit"] == "node"}
    if node_hosts:
        notes["node_plan"] = (f"empties whole node(s) {', '.join(emptied)}: release them" if emptied else
                              f"frees {freed} GPU(s) but no whole node billed per node ({', '.join(sorted(node_hosts))}): "
                              "capacity only; a plan that empties whole nodes would save cash")
    notes["committed"] = [d for d in devs if _billing(d)["commitment"] != "on-demand"]
    notes["mig"] = [d for d in devs if d.get("parent_uuid")]
    notes["cash_devices"] = [d for d in devs if d["host"] in emptied or (
        not d.get("parent_uuid") and _billing(d)["commitment"] == "on-demand" and _billing(d)["unit"] == "gpu")]
    cashable = min(freed, per_gpu + sum(len(nodes[h]) for h in emptied))
    return cashable / freed, notes


def _freed(r: Recommendation, n: int) -> int:
    e = r.evidence
    for key in ("gpus_freed", "replicas_freed"):
        if isinstance(e.get(key), (int, float)):
            return int(e[key])
    if isinstance(e.get("gpus_after"), (int, float)):
        return n - int(e["gpus_after"])
    return n


def _fit_action(r: Recommendation, devs: list[dict[str, Any]], nodes: dict[str, set[str]], notes: dict[str, Any]) -> str:
    """The rule's action, made to fit its target: a MIG instance, part of a node, a committed GPU."""
    parts = [r.action]
    for d in notes["mig"]:
        parts = [f"{d['host']}: {short_id(d['uuid'])} is a MIG instance ({d.get('mig_profile')} of GPU {short_id(str(d['parent_uuid']))}): "
                 "destroy or resize the instance and give its slices to other work; no bill shrinks unless that work "
                 "would otherwise need another GPU."] if r.kind == "idle" else parts + [
                 f"{short_id(d['uuid'])} is a MIG instance: resize it rather than release a GPU."]
    for d in notes["node_partial"]:
        others = len(nodes[d["host"]]) - 1
        parts.append(f"{d['host']} is billed per node: this only saves if its other {others} GPU(s) are freed too (or the work "
                     "moves to a smaller node); until then it frees capacity, not cash.")
    committed = sorted({(d["host"], _billing(d)["commitment"]) for d in notes["committed"]})
    for host, commitment in committed:
        parts.append(f"{host}'s GPUs are {commitment}: the freed GPU time is capacity for other work; the bill does not shrink.")
    if notes.get("node_emptied") and r.kind in SPECIFIC:
        hosts = sorted({d["host"] for d in notes["node_emptied"]})
        parts.append(f"Every GPU of {', '.join(hosts)} (billed per node) is idle at once in some of these hours: release the node "
                     "then (only the hours when all its GPUs idle together are cash; the rest is capacity).")
    return " ".join(parts)


def totals(findings: dict[str, Any], recs: list[Recommendation]) -> dict[str, Any]:
    """Cash and capacity per device (the largest claim of each class for each device), their sums, the
    GPU-equivalents the capacity frees, and the behaviour changes suggested."""
    devices = {(d["host"], d["uuid"]): d for d in findings["devices"]}
    cash: dict[tuple[str, str], float] = defaultdict(float)
    capacity: dict[tuple[str, str], float] = defaultdict(float)
    for r in recs:
        keys = [(t["host"], t["uuid"]) for t in r.targets if "uuid" in t]
        if not keys or r.savings_class == "behaviour":
            continue
        rest = r.evidence.get("capacity_part_monthly_usd") or 0.0
        if r.savings_class == "capacity":
            for k in keys:
                capacity[k] = max(capacity[k], r.monthly_savings_usd / len(keys))
            continue
        # cash over the devices whose freeing shrinks a bill; the capacity part over the others
        named = r.evidence.get("cash_from")
        paid = [k for k in keys if f"{k[0]}/{k[1]}" in named] if named else keys
        others = [k for k in keys if k not in paid] or keys
        for k in paid:
            cash[k] = max(cash[k], r.monthly_savings_usd / len(paid))
        for k in others if rest else []:
            capacity[k] = max(capacity[k], rest / len(others))
    gpus = 0.0
    for k, usd in capacity.items():
        price = (devices.get(k) or {}).get("price_per_hour")
        if price:
            gpus += usd / (price * HOURS_PER_MONTH)
    return {
        "cash_by_device": dict(cash), "capacity_by_device": dict(capacity),
        "potential_monthly_savings_usd": sum(cash.values()),
        # the cash that rests on billing nobody declared (assumed from how a price was quoted)
        "cash_assumed_billing_usd": sum(v for k, v in cash.items() if not _billing(devices.get(k) or {}).get("declared", False)),
        "capacity_monthly_usd": sum(capacity.values()),
        "capacity_gpus_freed": gpus,
        "behaviour_recommendations": sum(1 for r in recs if r.savings_class == "behaviour"),
        "behaviour_monthly_estimate_usd": sum(r.monthly_savings_usd for r in recs if r.savings_class == "behaviour"),
    }
