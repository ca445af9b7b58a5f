import pytest

from findfix import device, findings
from gpu_audit.recommend import RULES
from gpu_audit.recommend.claims import totals
from gpu_audit.recommend.base import Recommendation


def rec(kind, targets, usd, frees=(), adds=0.0, cls="cash"):
    return Recommendation(kind=kind, title="t", targets=tuple(targets), evidence={}, monthly_savings_usd=usd, confidence="low",
                          frees=tuple(frees), adds_monthly_usd=adds, savings_class=cls)


def free(uuid, share=1.0, cash=None):
    return {"host": "h", "uuid": uuid, "share": share, "cash_share": share if cash is None else cash}


# Two $1/h GPUs over a 730 h window: each costs $730 a month.
A = device("h", "A", "NVIDIA L4", 1.0, [50.0] * 730, 1)
B = device("h", "B", "NVIDIA L4", 1.0, [50.0] * 730, 1)


def test_the_ledger_counts_each_freed_share_once_most_valuable_card_first():
    """idle frees 40 % of A ($292); a consolidation of A and B frees A whole ($730); right-size frees B
    whole but adds a $200 GPU ($530 net). The consolidation claims A first; idle then adds nothing; and
    the right-size of B, the GPU the consolidation puts A's work on, is a plan that buys a GPU for a
    device a free plan concerns: it counts nothing."""
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    recs, t = totals(findings([A, B], 730), [rec("idle", [a], 292, [free("A", 0.4)]),
                                             rec("consolidation", [a, b], 730, [free("A")]),
                                             rec("right_size", [b], 530, [free("B")], adds=200)])
    assert [r.counted_monthly_usd for r in recs] == [0.0, 730.0, 0.0]
    assert t["cash_by_device"] == {("h", "A"): 730.0}
    assert t["potential_monthly_savings_usd"] == 730.0  # each freed share once, free plans first; not 292 + 730 + 530


def test_a_consolidation_credits_only_the_device_it_empties():
    """Eight GPUs, a plan that empties one: $730 counted on that one, nothing on the seven it keeps."""
    devs = [device("h", f"G{i}", "NVIDIA L4", 1.0, [20.0] * 730, 1) for i in range(8)]
    r = rec("consolidation", [{"host": "h", "uuid": f"G{i}"} for i in range(8)], 730, [free("G7")])
    recs, t = totals(findings(devs, 730), [r])
    assert t["cash_by_device"] == {("h", "G7"): 730.0} and recs[0].counted_monthly_usd == 730.0


def test_capacity_and_cash_parts_of_one_freed_share():
    """A node-billed GPU idle 60 % of the time, 25 % of it with its whole node: $438 freed, $182.50 of it cash."""
    a = {"host": "h", "uuid": "A"}
    recs, t = totals(findings([A], 730), [rec("idle", [a], 182.5, [free("A", 0.6, cash=0.25)])])
    assert t["cash_by_device"] == {("h", "A"): 182.5} and t["capacity_by_device"] == {("h", "A"): pytest.approx(255.5)}


def test_behaviour_is_in_no_total():
    a = {"host": "h", "uuid": "A"}
    r = Recommendation(kind="token_economics", title="t", targets=({"model": "m"},), evidence={}, monthly_savings_usd=100,
                       confidence="low", savings_class="behaviour")
    recs, t = totals(findings([A], 730), [r, rec("idle", [a], 7.3, [free("A", 0.01)])])
    assert t["potential_monthly_savings_usd"] == pytest.approx(7.3) and t["capacity_monthly_usd"] == 0
    assert t["behaviour_recommendations"] == 1 and t["behaviour_monthly_estimate_usd"] == 100


def test_ids_are_stable_and_every_rule_is_registered():
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    assert rec("idle", [a, b], 1).id == rec("idle", [b, a], 2).id != rec("mig", [a, b], 1).id
    assert set(RULES) == {"idle", "right_size", "mig", "consolidation", "batching", "quantization", "token_economics", "workload"}
    for name, fn in RULES.items():
        assert fn(findings([], 24), __import__("gpu_audit.recommend.base", fromlist=["x"]).RecommendSettings()) == []


def test_a_plan_that_adds_a_gpu_counts_net():
    """Right-size A ($730/month) to a GPU costing $500/month: it frees A whole and adds $500: $230 counted."""
    a = {"host": "h", "uuid": "A"}
    recs, t = totals(findings([A], 730), [rec("right_size", [a], 230, [free("A")], adds=500)])
    assert recs[0].counted_monthly_usd == pytest.approx(230) and t["cash_by_device"] == {("h", "A"): pytest.approx(230)}
    assert t["potential_monthly_savings_usd"] == pytest.approx(230)


def test_of_two_plans_for_one_device_the_one_that_adds_nothing_counts_first():
    """A MIG plan frees A whole as capacity ($730, adds nothing); a right-size of A to a $500 GPU ($230 net)
    comes after it and finds A claimed: capacity $730, cash $0."""
    a = {"host": "h", "uuid": "A"}
    recs, t = totals(findings([A], 730), [rec("right_size", [a], 230, [free("A")], adds=500),
                                         rec("mig", [a], 730, [free("A", cash=0.0)], cls="capacity")])
    assert [r.counted_monthly_usd for r in recs] == [0.0, 730.0]
    assert t["potential_monthly_savings_usd"] == 0 and t["capacity_monthly_usd"] == pytest.approx(730)


def test_a_plan_that_buys_a_gpu_for_a_device_another_free_plan_concerns_counts_nothing():
    """A MIG plan packs A and B onto A, freeing B (adds nothing); a right-size of A to a new $500 GPU would
    contradict it: the free plan is the one counted ($730), the right-size $0."""
    a, b = {"host": "h", "uuid": "A"}, {"host": "h", "uuid": "B"}
    recs, t = totals(findings([A, B], 730), [rec("mig", [a, b], 730, [free("B", cash=0.0)], cls="capacity"),
                                            rec("right_size", [a], 230, [free("A")], adds=500)])
    assert [r.counted_monthly_usd for r in recs] == [730.0, 0.0]
    assert t["capacity_monthly_usd"] == pytest.approx(730) and t["potential_monthly_savings_usd"] == 0
