"""Recommendations: rules from findings and settings to concrete changes with monthly savings.

Every rule is a plain function ``rule(findings, settings) -> list[Recommendation]``, registered in
RULES. ``recommend`` runs them all and adds the totals, which count each device once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from gpu_audit.recommend import idle, serving, sizing
from gpu_audit.recommend.base import Recommendation, RecommendSettings

Rule = Callable[[dict[str, Any], RecommendSettings], list[Recommendation]]

RULES: dict[str, Rule] = {
    "idle": idle.rule,
    "right_size": sizing.right_size,
    "mig": sizing.mig,
    "consolidation": sizing.consolidation,
    "batching": serving.batching,
    "quantization": serving.quantization,
    "token_economics": serving.token_economics,
}


def device_savings(findings: dict[str, Any], recs: list[Recommendation]) -> dict[tuple[str, str], float]:
    """Per device, the largest monthly saving any recommendation claims for it.

    A device-targeted saving is split evenly over its device targets. A model-targeted one is spread
    over the devices of the hosts that served the model, in proportion to their spend.
    """
    hosts_of = {m["model"]: m.get("hosts") or [] for m in findings["models"]}
    best: dict[tuple[str, str], float] = defaultdict(float)
    for r in recs:
        devs = [(t["host"], t["uuid"]) for t in r.targets if "uuid" in t]
        if devs:
            shares = {k: 1 / len(devs) for k in devs}
        else:
            model_devs = [d for d in findings["devices"] for t in r.targets
                          if "model" in t and d["host"] in hosts_of.get(t["model"], []) and d.get("spend_usd")]
            total = sum(d["spend_usd"] for d in model_devs)
            shares = {(d["host"], d["uuid"]): d["spend_usd"] / total for d in model_devs} if total else {}
        for k, sh in shares.items():
            best[k] = max(best[k], r.monthly_savings_usd * sh)
    return best


def recommend(findings: dict[str, Any], settings: RecommendSettings) -> dict[str, Any]:
    """Run every rule; return the recommendations (most valuable first) and trustworthy totals."""
    from gpu_audit.recommend.base import _HOURLY_CACHE

    recs: list[Recommendation] = []
    try:
        for rule in RULES.values():
            recs.extend(rule(findings, settings))
    finally:
        _HOURLY_CACHE[:] = [None, None]  # let a large fleet's per-device hours go once the rules are done
    recs.sort(key=lambda r: (-r.monthly_savings_usd, r.kind, r.id))
    per_device = device_savings(findings, recs)
    return {
        "recommendations": [r.to_dict() for r in recs],
        "potential_monthly_savings_usd": sum(per_device.values()),
        "savings_by_device": [{"host": h, "uuid": u, "monthly_savings_usd": v} for (h, u), v in sorted(per_device.items())],
    }
