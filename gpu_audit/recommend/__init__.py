"""Recommendations: rules from findings and settings to concrete changes with monthly savings.

Every rule is a plain function ``rule(findings, settings) -> list[Recommendation]``, registered in
RULES. ``recommend`` runs them all and adds the totals, which count each device once.
"""

from __future__ import annotations

from typing import Any, Callable

from gpu_audit.recommend import idle, serving, sizing, workload
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
    "workload": workload.rule,
}


def recommend(findings: dict[str, Any], settings: RecommendSettings) -> dict[str, Any]:
    """Run every rule; classify each claim (claims.classify); return the recommendations (cash first,
    then capacity, then behaviour; most valuable first) and the totals, which count each device once."""
    from gpu_audit.recommend.base import _HOURLY_CACHE
    from gpu_audit.recommend.claims import classify, totals

    recs: list[Recommendation] = []
    try:
        for rule in RULES.values():
            recs.extend(rule(findings, settings))
    finally:
        _HOURLY_CACHE[:] = [None, None]  # let a large fleet's per-device hours go once the rules are done
    recs = classify(findings, recs)
    order = {"cash": 0, "capacity": 1, "behaviour": 2}
    recs.sort(key=lambda r: (order[r.savings_class], -r.monthly_savings_usd, r.kind, r.id))
    recs, t = totals(findings, recs)
    return {
        "recommendations": [r.to_dict() for r in recs],
        **{k: v for k, v in t.items() if not k.endswith("_by_device")},
        "savings_by_device": [{"host": h, "uuid": u, "monthly_savings_usd": v} for (h, u), v in sorted(t["cash_by_device"].items())],
        "capacity_by_device": [{"host": h, "uuid": u, "monthly_usd": v} for (h, u), v in sorted(t["capacity_by_device"].items())],
    }
