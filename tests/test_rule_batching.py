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


