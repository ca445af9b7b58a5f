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
part and ``evidence.capacity_part_monthly_usd`` the rest. Each card lists what it frees (``frees``,
specific devices and shares) and what it adds; the totals are one ledger over those (``totals``):
cash and capacity each count every freed share once; capacity is also given in GPU-equivalents
(monthly $ / (price x 730)); behaviour is in no total.
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
            cash_keys: set[tuple[str, str]] = set()
            out.append(replace(r, confidence=level, evidence={**ev, "confidence_why": why},
                               frees=_frees(findings, r, devs, cash_keys, {}, r.monthly_savings_usd + r.adds_monthly_usd)))
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
        cash_keys = {(d["host"], d["uuid"]) for d in notes["cash_devices"]}
        out.append(replace(r, savings_class="cash" if cash_frac > 0 else "capacity",
                           monthly_savings_usd=cash if cash_frac > 0 else capacity,
                           confidence=level, action=action, evidence={**ev, "confidence_why": why},
                           frees=_frees(findings, r, devs, cash_keys, together if r.kind == "idle" else {}, total + r.adds_monthly_usd)))
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


def _frees(findings: dict[str, Any], r: Recommendation, devs: list[dict[str, Any]], cash_keys: set[tuple[str, str]],
           together: dict[tuple[str, str], float], gross: float) -> tuple[dict[str, Any], ...]:
    """What a card frees (DESIGN.md "Ledger"): the devices themselves for idle and right-size (and for
    cards that free no count of GPUs, such as unused MIG slices); for a plan that frees k of its n
    targets, k specific devices: those whose freeing shrinks a bill first (the plan can put its work on
    any GPU of the group: they are the same model), then the least used. ``share`` is the part of each
    device's monthly cost the card's figure stands for; ``cash_share`` the part of it that is cash."""
    if r.savings_class == "behaviour" or not devs or gross <= 0:
        return ()
    month = HOURS_PER_MONTH / findings["window"]["hours"] if findings["window"]["hours"] > 0 else 0.0
    key = lambda d: (d["host"], d["uuid"])  # noqa: E731
    if r.kind in SPECIFIC or not any(isinstance(r.evidence.get(k), (int, float)) for k in ("gpus_freed", "replicas_freed", "gpus_after")):
        chosen = devs
    else:
        chosen = sorted(devs, key=lambda d: (key(d) not in cash_keys, d.get("mean_util_pct") or 0.0, d["host"], d["uuid"]))
        chosen = chosen[: _freed(r, len(devs))]
    cost = sum((d.get("spend_usd") or 0.0) * month for d in chosen)
    if cost <= 0:
        return ()
    share = min(1.0, gross / cost)
    out = []
    for d in chosen:
        cash = 0.0
        if key(d) in cash_keys:
            b = _billing(d)
            cash = share * (together.get(key(d), 0.0) if r.kind == "idle" and b["unit"] == "node" else 1.0)
        out.append({"host": d["host"], "uuid": d["uuid"], "share": share, "cash_share": cash})
    return tuple(out)


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


def totals(findings: dict[str, Any], recs: list[Recommendation]) -> tuple[list[Recommendation], dict[str, Any]]:
    """The totals as one ledger (DESIGN.md "Ledger"): cards in descending value claim the device
    shares they free; a share already claimed by an earlier card counts once. Each card gets
    ``counted_monthly_usd``, what it added to its class total (cash first within a device's share,
    minus what the card adds, once it counts anything). Returns the cards and the totals: cash and
    capacity per device, their sums, the GPU-equivalents the capacity frees, behaviour apart."""
    devices = {(d["host"], d["uuid"]): d for d in findings["devices"]}
    hours = findings["window"]["hours"]
    month = HOURS_PER_MONTH / hours if hours > 0 else 0.0
    claimed: dict[tuple[str, str], float] = defaultdict(float)
    cash: dict[tuple[str, str], float] = defaultdict(float)
    capacity: dict[tuple[str, str], float] = defaultdict(float)
    gross = {id(r): r.monthly_savings_usd + (r.evidence.get("capacity_part_monthly_usd") or 0.0) + r.adds_monthly_usd for r in recs}
    counted: dict[int, float] = {}
    planned: set[tuple[str, str]] = set()  # devices a counted plan that adds nothing already concerns
    # most valuable first; of two plans for one device, the one that adds nothing (buys no GPU) first
    for r in sorted(recs, key=lambda r: (r.savings_class == "behaviour", r.adds_monthly_usd > 0, -gross[id(r)], r.kind, r.id)):
        if r.savings_class == "behaviour" or not r.frees:
            counted[id(r)] = 0.0
            continue
        if r.adds_monthly_usd > 0 and any((f["host"], f["uuid"]) in planned for f in r.frees):
            counted[id(r)] = 0.0  # another plan for this device adds nothing: it is the one the totals count
            continue
        parts = []
        for f in r.frees:
            k = (f["host"], f["uuid"])
            cost = ((devices.get(k) or {}).get("spend_usd") or 0.0) * month
            take = max(0.0, min(f["share"], 1.0 - claimed[k]))
            if take <= 0 or cost <= 0:
                continue
            claimed[k] += take
            c = min(f.get("cash_share") or 0.0, take) if r.savings_class == "cash" else 0.0
            parts.append((k, c * cost, (take - c) * cost))
        got = sum(a + b for _, a, b in parts)
        net = max(0.0, got - r.adds_monthly_usd) if got > 0 else 0.0
        scale = net / got if got > 0 else 0.0  # what the card adds (a GPU to buy) comes off what it frees
        for k, c_usd, cap_usd in parts:
            if c_usd * scale > 0:
                cash[k] += c_usd * scale
            if cap_usd * scale > 1e-12:
                capacity[k] += cap_usd * scale
        counted[id(r)] = net
        if net > 0 and r.adds_monthly_usd <= 0:
            planned |= {(t["host"], t["uuid"]) for t in r.targets if "uuid" in t}
    gpus = 0.0
    for k, usd in capacity.items():
        price = (devices.get(k) or {}).get("price_per_hour")
        if price:
            gpus += usd / (price * HOURS_PER_MONTH)
    out = [replace(r, counted_monthly_usd=counted[id(r)]) for r in recs]
    return out, {
        "cash_by_device": dict(cash), "capacity_by_device": dict(capacity),
        "potential_monthly_savings_usd": sum(cash.values()),
        # the cash that rests on billing nobody declared (assumed from how a price was quoted)
        "cash_assumed_billing_usd": sum(v for k, v in cash.items() if not _billing(devices.get(k) or {}).get("declared", False)),
        "capacity_monthly_usd": sum(capacity.values()),
        "capacity_gpus_freed": gpus,
        "behaviour_recommendations": sum(1 for r in recs if r.savings_class == "behaviour"),
        "behaviour_monthly_estimate_usd": sum(max(0.0, r.monthly_savings_usd) for r in recs if r.savings_class == "behaviour"),
    }
