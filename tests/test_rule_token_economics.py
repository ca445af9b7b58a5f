import pytest

from findfix import device, findings, served_model as model
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import token_economics

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"




def api(name, inp, out, **kw):
    return {"model": name, "input_per_1m": inp, "output_per_1m": out, "as_of": "2026-04-06", "source": "x", **kw}


def test_token_economics_against_a_like_for_like_api_priced_net():
    """llama-3.1-8b on one on-demand H100 ($100 in the window) against an API that serves it: 10M prompt
    and 2M output tokens cost $2.70 there; routing frees the GPU: net $97.30 in the window."""
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    recs = token_economics(findings([d], 24, [model("llama-3.1-8b", ["inf"])],
                                    [api("8b-api", 0.15, 0.60, serves=["llama-3.1-8b"])]), S)
    (r,) = [r for r in recs if r.evidence.get("api")]
    api_cost = 10 * 0.15 + 2 * 0.60  # 2.70
    assert r.evidence["api_cost_usd"] == pytest.approx(api_cost) and r.evidence["comparable_by"] == "serves"
    assert r.monthly_savings_usd == pytest.approx((100 - api_cost) * 730 / 24) == r.evidence["net_monthly_usd"]
    assert r.evidence["breakeven_util_pct"] == pytest.approx(20 * 100 / api_cost)
    assert r.evidence["cost_per_1m_output_tokens_at_70pct_util"] == pytest.approx(50 * 20 / 70)


def test_an_api_of_another_class_is_never_compared():
    """gpt-4o-mini (no serves, no size) and a 70B API are not an 8B model's class: no routing card."""
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    apis = [api("gpt-4o-mini", 0.15, 0.60), api("llama-70b-api", 0.1, 0.1, params_b=70)]
    assert not [r for r in token_economics(findings([d], 24, [model("llama-3.1-8b", ["inf"])], apis), S) if r.evidence.get("api")]
    (r,) = [r for r in token_economics(findings([d], 24, [model("llama-3.1-8b", ["inf"])], [api("mini-8b", 0.15, 0.6, params_b=7)]), S)
            if r.evidence.get("api")]
    assert r.evidence["comparable_by"] == "params_b"


def test_a_negative_net_is_said_not_hidden():
    """An API of the same class at $10/$60 per 1M: $220 for the traffic self-hosting serves for $100: net -$120."""
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    (r,) = token_economics(findings([d], 24, [model("llama-3.1-8b", ["inf"])], [api("8b-api", 10, 60, params_b=8)]), S)
    assert r.monthly_savings_usd == pytest.approx((100 - 220) * 730 / 24) and "-$" in r.title
    assert "Routing would cost more" in r.action


def test_routing_on_gpus_that_stay_on_the_bill_frees_nothing():
    """Owned GPUs: routing frees no billing unit and adds the API spend: net -$2.70 in the window."""
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70, billing={"unit": "gpu", "commitment": "owned"})
    (r,) = token_economics(findings([d], 24, [model("llama-3.1-8b", ["inf"])], [api("8b-api", 0.15, 0.60, params_b=8)]), S)
    assert r.evidence["frees_billing_units"] is False and r.monthly_savings_usd == pytest.approx(-2.70 * 730 / 24)
    assert "frees no GPU that leaves the bill" in r.action


def test_long_tail_and_long_prompts_and_routing():
    d = device("inf", "GPU-h", H100, 3.0, [20] * 24, 70)
    tail = model("tail", ["inf"], completion_p50=100.0, completion_p99=1000.0, completion_tokens_beyond_p95=200_000.0)
    prompts = model("rag", ["inf"], prompt_p50=5000.0, completion_p50=100.0, completion_p99=300.0)
    costly = model("big", ["inf"], cost=300.0, completion_p50=40.0, completion_p99=100.0, short_request_share=0.6)
    recs = token_economics(findings([d], 24, [tail, prompts, costly]), S)
    by = {(r.targets[0]["model"], r.targets[0].get("lever")): r for r in recs}
    t = by[("tail", "max_tokens")]
    assert t.monthly_savings_usd == 0.0  # the net: no GPU leaves the bill because requests are shorter
    assert t.evidence["net_cash_monthly_usd"] == 0.0 and t.evidence["gpu_time_freed_monthly_usd"] == pytest.approx(100 * 0.1 * 730 / 24)
    assert by[("rag", "prefix_cache")].monthly_savings_usd == 0
    route = by[("big", "routing")]
    # big costs 3x the cheapest per output token: 60 % of its cost, less the third the cheap model would cost.
    assert route.monthly_savings_usd == pytest.approx(300 * 0.6 * (1 - 1 / 3) * 730 / 24)


