import pytest

from findfix import device, findings
from gpu_audit.catalog import MODELS
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.sizing import right_size

CATALOG = {m.key: (m.price_per_hour, m.provider) for m in MODELS if m.price_per_hour is not None}
S = RecommendSettings(gpu_prices=CATALOG)
H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"


def test_right_size_to_the_cheapest_gpu_that_fits():
    # p95 20 % of an H100 (989 TFLOPS) = 197.8 TFLOPS; peak 10 GiB x 1.2 = 12 GiB.
    # L4 (121 x 0.8 = 96.8), A10G, T4, V100 (100) are too slow; L40S (362 x 0.8 = 289.6, 45 GiB) fits at $1.86.
    d = device("h", "GPU-1", H100, 12.29, [20] * 24, 10)
    (r,) = right_size(findings([d], 24), S)
    assert r.evidence["proposed"] == "L40S"
    assert r.monthly_savings_usd == pytest.approx((12.29 - 1.86) * 24 * 730 / 24)


@pytest.mark.parametrize("utils,mem,extra", [
    ([90] * 24, 10, {}),             # p95 90 %: not under-used
    ([20] * 24, 75, {}),             # 75 GiB x 1.2 fits no cheaper GPU
    ([0] * 24, 0, {}),               # idle: the idle rule's, not sizing
    ([20] * 24, 10, {"price_provider": "file"}),  # priced by a file that names no other GPU
])
def test_right_size_silent(utils, mem, extra):
    assert right_size(findings([device("h", "GPU-1", H100, 12.29, utils, mem, **extra)], 24), S) == []


