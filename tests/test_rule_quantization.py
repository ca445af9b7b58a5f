import pytest

from findfix import device, findings, served_model as model
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import quantization

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"




FULL_KV = {"p95_kv_cache_usage_pct": 98.0, "preemptions": 12.0}  # the engine's KV cache is full: memory-bound


def test_quantization_fp8_on_hopper_int_on_ampere():
    h = device("inf", "GPU-h", H100, 3.0, [60] * 24, 76)  # 95 % of 80 GiB
    a = device("inf", "GPU-a", A100, 2.0, [60] * 24, 76)
    recs = {r.targets[0]["uuid"]: r for r in quantization(findings([h, a], 24, [model("m", ["inf"], engine=FULL_KV)]), S)}
    assert recs["GPU-h"].evidence["format"].startswith("FP8")
    assert recs["GPU-a"].evidence["format"].startswith("INT8 or INT4")
    assert recs["GPU-h"].monthly_savings_usd == pytest.approx(3.0 * 24 * (1 - 1 / 1.6) * 730 / 24)
    assert recs["GPU-h"].confidence == "low"


def test_quantization_silent_with_memory_to_spare():
    assert quantization(findings([device("inf", "GPU-h", H100, 3.0, [60] * 24, 50)], 24, [model("m", ["inf"])]), S) == []


@pytest.mark.parametrize("engine", [None, {"p95_kv_cache_usage_pct": 40.0, "preemptions": 0.0}])
def test_high_memory_alone_is_the_engine_preallocating_not_memory_bound(engine):
    """97 % of the GPU's memory is what vLLM takes at start (gpu_memory_utilization 0.9 plus context):
    without a full KV cache or preemptions it is no evidence of memory-bound serving."""
    d = device("inf", "GPU-h", H100, 3.0, [60] * 24, 77.6)
    assert quantization(findings([d], 24, [model("m", ["inf"], engine=engine)]), S) == []


def test_quantization_silent_on_a_busy_compute_bound_gpu():
    d = device("inf", "GPU-t", H100, 3.0, [97] * 24, 78)
    assert quantization(findings([d], 24, [model("m", ["inf"])]), S) == []


H200 = "NVIDIA H200"


def _fleet(n, util, mem_gib=71, name=H100, total_gib=80, price=3.0):
    return [device("inf", f"GPU-{k}", name, price, [util] * 24, mem_gib, total_gib) for k in range(n)]


def test_a_bf16_model_sharded_over_more_gpus_than_fp8_needs():
    # 70e9 params: BF16 140e9 B x 1.2 headroom = 168e9 > 2 x (80 GiB x 0.9 = 77.3e9): 4 GPUs per replica;
    # FP8 84e9 B: 2 per replica. 8 GPUs at 20 %: memory needs 8 x 2/4 = 4, compute ceil(160 / (80 x 1.6)) = 2.
    (r,) = quantization(findings(_fleet(8, 20), 24, [model("llama-3.1-70b", ["inf"])]), S)
    assert r.evidence["gpus_per_replica_bf16"] == 4 and r.evidence["gpus_per_replica_quantized"] == 2
    assert r.evidence["format"] == "FP8 (W8A8)"
    assert r.evidence["gpus_per_replica_int4"] == 1
    assert (r.evidence["gpus_for_memory"], r.evidence["gpus_for_peak_compute"], r.evidence["gpus_after"]) == (4, 2, 4)
    assert len(r.targets) == 8 and r.confidence == "low" and "FP8" in r.title
    assert r.monthly_savings_usd == pytest.approx(8 * 3.0 * 24 * 4 / 8 * 730 / 24)  # $8,760


def test_the_measured_peak_compute_limits_the_gpus_freed():
    # 8 at 75 %: compute needs ceil(600 / 128) = 5 GPUs, rounded up to whole FP8 replicas of 2: 6.
    (r,) = quantization(findings(_fleet(8, 75), 24, [model("llama-3.1-70b", ["inf"])]), S)
    assert r.evidence["gpus_after"] == 6 and r.monthly_savings_usd == pytest.approx(8 * 3.0 * 24 * 2 / 8 * 730 / 24)
    # at 99 % the compute needs ceil(792 / 128) = 7, rounded up to replicas of 2: all 8, nothing to claim
    assert [x for x in quantization(findings(_fleet(8, 99), 24, [model("llama-3.1-70b", ["inf"])]), S)
            if "sharded" in x.title] == []


def test_h200_halves_and_ampere_gets_int8():
    (r,) = quantization(findings(_fleet(2, 30, 120, H200, 141, 4.0), 24, [model("llama-3.1-70b", ["inf"])]), S)
    assert (r.evidence["gpus_per_replica_bf16"], r.evidence["gpus_after"]) == (2, 1)
    assert r.monthly_savings_usd == pytest.approx(2 * 4.0 * 24 / 2 * 730 / 24)
    (a,) = quantization(findings(_fleet(8, 20, 71, A100), 24, [model("llama-3.1-70b", ["inf"])]), S)
    assert "INT8 weight-only" in a.title and a.evidence["gpus_per_replica_quantized"] == 2
    assert a.evidence["format"] == "INT8 weight-only (W8A16)"


@pytest.mark.parametrize("name, n, mem", [
    ("llama-3.1-70b-fp8", 8, 71),     # already quantized
    ("Llama-3.3-70B-Instruct-AWQ", 8, 71),
    ("mixtral-8x7b", 8, 71),          # MoE notation: the name does not give the size
    ("llama-3.1-8b", 8, 71),          # fits one GPU in BF16: nothing sharded
    ("my-model", 8, 71),              # no parameter count in the name
    ("llama-3.1-70b", 2, 71),         # 2 GPUs cannot hold BF16 weights: it already runs quantized
    ("llama-3.1-70b", 8, 10),         # 80 GiB held in all < 140 GB of BF16 weights: not BF16
])
def test_sharded_rule_silent_without_evidence(name, n, mem):
    recs = quantization(findings(_fleet(n, 20, mem), 24, [model(name, ["inf"])]), S)
    assert [r for r in recs if "sharded" in r.title] == []


def test_memory_bound_devices_of_a_sharded_model_get_one_recommendation():
    recs = quantization(findings(_fleet(8, 20, 76), 24, [model("llama-3.1-70b", ["inf"])]), S)  # 95 % memory too
    assert len(recs) == 1 and "sharded" in recs[0].title


def test_an_already_quantized_model_gets_the_kv_cache_lever_and_no_dollar_figure():
    d = device("inf", "GPU-h", H200, 4.0, [62] * 24, 136, 141)  # 96 % of 141 GiB
    (r,) = quantization(findings([d], 24, [model("llama-3.1-405b-fp8", ["inf"], engine=FULL_KV)]), S)
    assert "already-quantized" in r.title and "KV cache" in r.title
    assert r.evidence["already_quantized"] == ["llama-3.1-405b-fp8"] and r.monthly_savings_usd == 0
    # beside a BF16 model on the same GPU: FP8 for the BF16 one, but no claim on the GPU's time
    (r,) = quantization(findings([d], 24, [model("llama-3.1-405b-fp8", ["inf"], engine=FULL_KV), model("m", ["inf"])]), S)
    assert r.evidence["format"].startswith("FP8") and r.monthly_savings_usd == 0 and r.action.startswith("Serve m in FP8")
