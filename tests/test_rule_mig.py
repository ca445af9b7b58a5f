import pytest

from findfix import device, findings
from gpu_audit.catalog import MODELS
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.sizing import mig, pack_mig
from gpu_audit.catalog import model_by_key

CATALOG = {m.key: (m.price_per_hour, m.provider) for m in MODELS if m.price_per_hour is not None}
S = RecommendSettings(gpu_prices=CATALOG)
H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"


def test_mig_packs_small_workloads_onto_fewer_gpus():
    # Four A100 80GB at p95 10 %, 8 GiB peak: each needs 7 x 0.10 / 0.8 = 0.875 slice and 9.6 GiB -> 1g.10gb.
    devs = [device("h", f"GPU-{i}", A100, 5.12, [10] * 24, 8) for i in range(4)]
    recs = mig(findings(devs, 24), S)
    (r,) = recs
    assert set(r.evidence["profiles"].values()) == {"1g.10gb"}
    assert r.evidence["gpus_after"] == 1 and r.evidence["gpus_freed"] == 3
    assert r.monthly_savings_usd == pytest.approx(4 * 5.12 * 24 * 3 / 4 * 730 / 24)


def test_mig_packing_respects_slices_memory_and_instance_limits():
    a100 = model_by_key("A100 80GB")
    p = {x.name: x for x in a100.mig_profiles}
    assert pack_mig([p["3g.40gb"]] * 3, a100) == [[0, 1], [2]]  # 6 slices but 3 x 4/8 memory > 8/8
    assert len(pack_mig([p["1g.10gb"]] * 8, a100)) == 2  # at most 7 instances per GPU
    assert len(pack_mig([p["4g.40gb"], p["3g.40gb"]], a100)) == 1


def test_mig_mode_unused_slice_and_unallocated():
    parent = {"host": "h", "uuid": "GPU-p", "name": A100, "mig_mode": True, "parent_uuid": None, "spend_usd": 2.0,
              "unallocated_usd": 2.0, "mean_util_pct": None, "coverage_pct": 100.0, "covered_hours": 1.0}
    used = {"host": "h", "uuid": "MIG-a", "name": A100, "parent_uuid": "GPU-p", "mig_profile": "3g.40gb", "mean_util_pct": 50.0,
            "spend_usd": 3.0, "coverage_pct": 100.0}
    unused = {"host": "h", "uuid": "MIG-b", "name": A100, "parent_uuid": "GPU-p", "mig_profile": "2g.20gb", "mean_util_pct": 1.0,
              "spend_usd": 2.0, "coverage_pct": 100.0}
    (r,) = mig(findings([(parent, []), (used, []), (unused, [])], 1), S)
    assert [x["uuid"] for x in r.evidence["unused_slices"]] == ["MIG-b"]
    assert r.monthly_savings_usd == pytest.approx((2.0 + 2.0) * 730) and r.confidence == "low"
    assert {t["uuid"] for t in r.targets} == {"GPU-p", "MIG-b"}


