import pytest

from findfix import device, findings, served_model as model
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.serving import batching

S = RecommendSettings()
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"




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


def test_batching_uses_the_devices_named_by_gpu_uuid():
    # Same host: two GPUs serve m at 15 %, a third runs something else at 90 %. With gpu_uuid in the
    # token logs only the two count: the peak 30 % fits one replica.
    devs = [device("inf", "GPU-a", H100, 3.0, [15] * 24, 70), device("inf", "GPU-b", H100, 3.0, [15] * 24, 70),
            device("inf", "GPU-c", H100, 3.0, [90] * 24, 70)]
    (r,) = batching(findings(devs, 24, [model("m", ["inf"], gpus=["GPU-a", "GPU-b"])]), S)
    assert {t["uuid"] for t in r.targets} == {"GPU-a", "GPU-b"} and r.evidence["replicas_freed"] == 1
    # Without gpu_uuid, the host's working GPUs count: mean (15+15+90)/3 = 40 % is not under 40 %.
    assert batching(findings(devs, 24, [model("m", ["inf"])]), S) == []




def test_replicas_are_never_split_below_the_tensor_parallel_size_the_weights_need():
    """llama-3.1-70b in BF16: 140 GB x 1.2 needs 4 x H100 80GB (at 90 % engine memory): 8 GPUs at 10 %
    are 2 replicas of 4. The peak (8 x 10 % = 80 %) fits one replica at 70 % x 4: 1 replica, 4 GPUs freed,
    never "7 GPUs instead of 8"."""
    from findfix import device, findings, served_model
    from gpu_audit.recommend.base import RecommendSettings
    from gpu_audit.recommend.serving import batching

    devs = [device("h", f"G{i}", "NVIDIA H100 80GB HBM3", 3.0, [10.0] * 24, 70, covered_hours=24.0) for i in range(8)]
    f = findings(devs, 24, models=[served_model("llama-3.1-70b", ["h"], gpus=[f"G{i}" for i in range(8)])])
    (r,) = batching(f, RecommendSettings())
    e = r.evidence
    assert (e["gpus_per_replica"], e["replicas"], e["replicas_needed"], e["replicas_freed"], e["gpus_freed"]) == (4, 2, 1, 1, 4)
    assert r.monthly_savings_usd == pytest.approx(4 * 3.0 * 730)
    assert "1 replica(s) of 4 GPU(s) instead of 2" in r.action
