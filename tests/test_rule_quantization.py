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


def test_quantization_silent_on_a_busy_compute_bound_gpu():
    d = device("inf", "GPU-t", H100, 3.0, [97] * 24, 78)
    assert quantization(findings([d], 24, [model("m", ["inf"])]), S) == []
