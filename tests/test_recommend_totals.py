import pytest

from findfix import device, findings
from gpu_audit.recommend import RULES, device_savings
from gpu_audit.recommend.base import Recommendation


def rec(kind, targets, usd):
    return Recommendation(kind=kind, title="t", targets=tuple(targets), evidence={}, monthly_savings_usd=usd, confidence="low")


def test_each_device_counted_once_with_its_largest_saving():
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    f = findings([], 24)
    per = device_savings(f, [rec("idle", [a], 100), rec("consolidation", [a, b], 300), rec("right_size", [b], 120)])
    assert per == {("h", "A"): 150, ("h", "B"): 150}
    assert sum(per.values()) == 300  # not 520


def test_model_savings_spread_over_the_model_devices_by_spend():
    d1 = device("inf", "A", "NVIDIA L4", 1.0, [10] * 24, 1)
    d2 = device("inf", "B", "NVIDIA L4", 3.0, [10] * 24, 1)
    f = findings([d1, d2], 24, [{"model": "m", "hosts": ["inf"]}])
    per = device_savings(f, [rec("token_economics", [{"model": "m"}], 100)])
    assert per[("inf", "A")] == pytest.approx(25) and per[("inf", "B")] == pytest.approx(75)


def test_ids_are_stable_and_every_rule_is_registered():
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    assert rec("idle", [a, b], 1).id == rec("idle", [b, a], 2).id != rec("mig", [a, b], 1).id
    assert set(RULES) == {"idle", "right_size", "mig", "consolidation", "batching", "quantization", "token_economics"}
    for name, fn in RULES.items():
        assert fn(findings([], 24), __import__("gpu_audit.recommend.base", fromlist=["x"]).RecommendSettings()) == []
