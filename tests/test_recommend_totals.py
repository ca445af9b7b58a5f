import pytest

from findfix import device, findings
from gpu_audit.recommend import RULES
from gpu_audit.recommend.claims import totals
from gpu_audit.recommend.base import Recommendation


def rec(kind, targets, usd):
    return Recommendation(kind=kind, title="t", targets=tuple(targets), evidence={}, monthly_savings_usd=usd, confidence="low")


def test_each_device_counted_once_with_its_largest_saving():
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    f = findings([], 24)
    t = totals(f, [rec("idle", [a], 100), rec("consolidation", [a, b], 300), rec("right_size", [b], 120)])
    assert t["cash_by_device"] == {("h", "A"): 150, ("h", "B"): 150}
    assert t["potential_monthly_savings_usd"] == 300  # not 520


def test_behaviour_is_in_no_total():
    a = {"host": "h", "uuid": "A"}
    r = Recommendation(kind="token_economics", title="t", targets=({"model": "m"},), evidence={}, monthly_savings_usd=100,
                       confidence="low", savings_class="behaviour")
    t = totals(findings([], 24), [r, rec("idle", [a], 10)])
    assert t["potential_monthly_savings_usd"] == 10 and t["capacity_monthly_usd"] == 0
    assert t["behaviour_recommendations"] == 1 and t["behaviour_monthly_estimate_usd"] == 100


def test_ids_are_stable_and_every_rule_is_registered():
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    assert rec("idle", [a, b], 1).id == rec("idle", [b, a], 2).id != rec("mig", [a, b], 1).id
    assert set(RULES) == {"idle", "right_size", "mig", "consolidation", "batching", "quantization", "token_economics", "workload"}
    for name, fn in RULES.items():
        assert fn(findings([], 24), __import__("gpu_audit.recommend.base", fromlist=["x"]).RecommendSettings()) == []
