import pytest

from findfix import device, findings
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.idle import rule

S = RecommendSettings()
L40S = "NVIDIA L40S"


def test_idle_and_empty():
    # 10 idle hours out of 24 at $2/h: $20 in the window, x 730/24 a month.
    f = findings([device("h", "GPU-1", L40S, 2.0, [0] * 10 + [50] * 14, 0)], 24)
    (r,) = rule(f, S)
    assert r.evidence["variant"] == "idle_empty"
    assert r.evidence["idle_hours_in_stretches"] == 10 and r.evidence["longest_stretch_hours"] == 10
    assert r.monthly_savings_usd == pytest.approx(20 * 730 / 24)
    assert r.confidence == "high" and r.targets == ({"host": "h", "uuid": "GPU-1"},)


def test_idle_but_memory_held_names_the_process():
    d = device("h", "GPU-2", L40S, 2.0, [0] * 20 + [30] * 4, 40, top_process={"name": "python3", "pid": 4020, "used_mem_bytes": 40 * 2**30})
    (r,) = rule(findings([d], 24), S)
    assert r.evidence["variant"] == "idle_memory_held"
    assert "python3 (pid 4020) holds 40 GiB" in r.title
    assert r.monthly_savings_usd == pytest.approx(40 * 730 / 24)


def test_daily_pattern_says_schedule():
    # Three days, idle 22:00-07:00 UTC every night, busy otherwise.
    utils = [0 if (h % 24 >= 22 or h % 24 < 7) else 60 for h in range(72)]
    (r,) = rule(findings([device("h", "GPU-3", L40S, 1.0, utils, 0)], 72), S)
    assert r.evidence["variant"] == "schedule"
    assert r.evidence["daily_idle_window"] == "22:00-07:00 UTC"
    assert "schedule" in r.title and "22:00-07:00 UTC" in r.action
    idle_h = sum(u == 0 for u in utils)
    assert r.monthly_savings_usd == pytest.approx(idle_h * 1.0 * 730 / 72)


@pytest.mark.parametrize("utils,extra", [
    ([0] * 3 + [50] * 21, {}),                      # 12.5 % idle: under the 20 % trigger
    ([0] * 12 + [100] * 12, {"mean_util_pct": 75}),  # busy overall: no claim
    ([0] * 12 + [50] * 12, {"mean_util_pct": None}),  # no evidence
    ([0] * 12 + [50] * 12, {"coverage_pct": 30.0}),  # too little coverage
    ([0] * 12 + [50] * 12, {"spend_usd": None}),     # unpriced
])
def test_silent(utils, extra):
    assert rule(findings([device("h", "GPU-4", L40S, 1.0, utils, 0, **extra)], 24), S) == []


def test_silent_on_a_device_observed_for_less_than_min_covered_hours():
    # One idle hour fully covered: a claim; the same device observed for 0.5 h: too little time to scale to a month.
    assert len(rule(findings([device("h", "GPU-1", L40S, 2.0, [0], 0, covered_hours=1.0)], 1), S)) == 1
    assert rule(findings([device("h", "GPU-1", L40S, 2.0, [0], 0, covered_hours=0.5)], 1), S) == []
    assert len(rule(findings([device("h", "GPU-1", L40S, 2.0, [0], 0, covered_hours=0.5)], 1),
                    RecommendSettings(min_covered_hours=0.25))) == 1
