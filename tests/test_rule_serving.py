import pytest

from findfix import device, findings
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import batching, quantization, token_economics

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def model(name, hosts, cost=100.0, prompt=10_000_000, completion=2_000_000, **kw):
    m = {"model": name, "hosts": hosts, "cost_usd": cost, "prompt_tokens": prompt, "completion_tokens": completion,
         "cost_per_1m_output_tokens": cost / completion * 1e6, "cost_per_1m_tokens": cost / (prompt + completion) * 1e6,
         "completion_p50": 200.0, "completion_p95": 400.0, "completion_p99": 600.0, "prompt_p50": 800.0,
         "completion_tokens_beyond_p95": 0.0, "short_request_share": 0.0}
    m.update(kw)
    return m


def test_batching_fewer_replicas_carry_the_peak():
    # 4 GPUs at 15 % each: the hourly sum peaks at 60 %, one replica at 70 % carries it: 3 freed.
    devs = [device("inf", f"GPU-{i}", H100, 3.0, [15] * 24, 70) for i in range(4)]
    (r,) = batching(findings(devs, 24, [model("m", ["inf"])]), S)
    assert r.evidence["replicas_needed"] == 1 and r.evidence["replicas_freed"] == 3
    assert r.monthly_savings_usd == pytest.approx(4 * 3.0 * 24 * 3 / 4 * 730 / 24)


@pytest.mark.parametrize("util,hosts", [(50, ["inf"]), (15, ["other"])])
def test_batching_silent(util, hosts):
    devs = [device("inf", f"GPU-{i}", H100, 3.0, [util] * 24, 70) for i in range(4)]
    assert batching(findings(devs, 24, [model("m", hosts)]), S) == []


def test_quantization_fp8_on_hopper_int_on_ampere():
    h = device("inf", "GPU-h", H100, 3.0, [60] * 24, 76)  # 95 % of 80 GiB
    a = device("inf", "GPU-a", A100, 2.0, [60] * 24, 76)
    recs = {r.targets[0]["uuid"]: r for r in quantization(findings([h, a], 24, [model("m", ["inf"])]), S)}
    assert recs["GPU-h"].evidence["format"].startswith("FP8")
    assert recs["GPU-a"].evidence["format"].startswith("INT8 or INT4")
    assert recs["GPU-h"].monthly_savings_usd == pytest.approx(3.0 * 24 * (1 - 1 / 1.6) * 730 / 24)
    assert recs["GPU-h"].confidence == "low"


def test_quantization_silent_with_memory_to_spare():
    assert quantization(findings([device("inf", "GPU-h", H100, 3.0, [60] * 24, 50)], 24, [model("m", ["inf"])]), S) == []


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


def test_batching_uses_the_devices_named_by_gpu_uuid():
    # Same host: two GPUs serve m at 15 %, a third runs something else at 90 %. With gpu_uuid in the
    # token logs only the two count: the peak 30 % fits one replica.
    devs = [device("inf", "GPU-a", H100, 3.0, [15] * 24, 70), device("inf", "GPU-b", H100, 3.0, [15] * 24, 70),
            device("inf", "GPU-c", H100, 3.0, [90] * 24, 70)]
    (r,) = batching(findings(devs, 24, [model("m", ["inf"], gpus=["GPU-a", "GPU-b"])]), S)
    assert {t["uuid"] for t in r.targets} == {"GPU-a", "GPU-b"} and r.evidence["replicas_freed"] == 1
    # Without gpu_uuid, the host's working GPUs count: mean (15+15+90)/3 = 40 % is not under 40 %.
    assert batching(findings(devs, 24, [model("m", ["inf"])]), S) == []


def test_quantization_silent_on_a_busy_compute_bound_gpu():
    d = device("inf", "GPU-t", H100, 3.0, [97] * 24, 78)
    assert quantization(findings([d], 24, [model("m", ["inf"])]), S) == []
