import pytest

from findfix import device, findings, served_model as model
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import quantization

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"




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
