import pytest

from findfix import device, findings, served_model as model
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import token_economics

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"




def test_token_economics_against_an_api_price():
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    api = [{"model": "gpt-4o-mini", "input_per_1m": 0.15, "output_per_1m": 0.60, "as_of": "2026-04-06", "source": "x"}]
    recs = token_economics(findings([d], 24, [model("m", ["inf"])], api), S)
    (r,) = [r for r in recs if r.evidence.get("api")]
    api_cost = 10 * 0.15 + 2 * 0.60  # 2.70
    assert r.evidence["api_cost_usd"] == pytest.approx(api_cost)
    assert r.monthly_savings_usd == pytest.approx((100 - api_cost) * 730 / 24)
    assert r.evidence["breakeven_util_pct"] == pytest.approx(20 * 100 / api_cost)
    assert r.evidence["cost_per_1m_output_tokens_at_70pct_util"] == pytest.approx(50 * 20 / 70)
    assert "Even at 100% utilization" in r.action


def test_token_economics_silent_when_self_hosting_is_cheaper():
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    api = [{"model": "big", "input_per_1m": 10, "output_per_1m": 60, "as_of": None, "source": None}]
    assert token_economics(findings([d], 24, [model("m", ["inf"])], api), S) == []


def test_long_tail_and_long_prompts_and_routing():
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    tail = model("tail", ["inf"], completion_p50=100.0, completion_p99=1000.0, completion_tokens_beyond_p95=200_000.0)
    prompts = model("rag", ["inf"], prompt_p50=5000.0, completion_p50=100.0, completion_p99=300.0)
    costly = model("big", ["inf"], cost=300.0, completion_p50=40.0, completion_p99=100.0, short_request_share=0.6)
    recs = token_economics(findings([d], 24, [tail, prompts, costly]), S)
    by = {(r.targets[0]["model"], r.targets[0].get("lever")): r for r in recs}
    t = by[("tail", "max_tokens")]
    assert t.monthly_savings_usd == pytest.approx(100 * 0.1 * 730 / 24)  # 200k of 2M output tokens beyond p95
    assert by[("rag", "prefix_cache")].monthly_savings_usd == 0
    route = by[("big", "routing")]
    # big costs 3x the cheapest per output token: 60 % of its cost, less the third the cheap model would cost.
    assert route.monthly_savings_usd == pytest.approx(300 * 0.6 * (1 - 1 / 3) * 730 / 24)


