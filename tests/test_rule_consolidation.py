import pytest

from findfix import device, findings
from gpu_audit.catalog import MODELS
from gpu_audit.recommend.base import RecommendSettings
from gpu_audit.recommend.sizing import consolidation

CATALOG = {m.key: (m.price_per_hour, m.provider) for m in MODELS if m.price_per_hour is not None}
S = RecommendSettings(gpu_prices=CATALOG)
H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"


def test_consolidation_uses_hour_by_hour_demand():
    # A peaks in the first half of the day, B in the second: 60 + 5 <= 80 in every hour; memory 20 + 20 <= 90.
    a = device("h1", "GPU-a", L40S, 1.86, [55] * 12 + [5] * 12, 9.6, total_gib=48)
    b = device("h2", "GPU-b", L40S, 1.86, [5] * 12 + [55] * 12, 9.6, total_gib=48)
    (r,) = consolidation(findings([a, b], 24), S)
    assert r.evidence["before"] == 2 and r.evidence["after"] == 1
    assert r.evidence["plan"][0]["peak_hourly_util_pct"] == pytest.approx(60)
    assert r.monthly_savings_usd == pytest.approx(2 * 1.86 * 24 / 2 * 730 / 24)


def test_consolidation_silent_when_peaks_coincide():
    a = device("h1", "GPU-a", L40S, 1.86, [55] * 12 + [5] * 12, 9.6, total_gib=48)
    b = device("h2", "GPU-b", L40S, 1.86, [55] * 12 + [5] * 12, 9.6, total_gib=48)
    assert consolidation(findings([a, b], 24), S) == []


def test_consolidation_silent_when_memory_does_not_fit():
    a = device("h1", "GPU-a", L40S, 1.86, [20] * 24, 30, total_gib=48)
    b = device("h2", "GPU-b", L40S, 1.86, [20] * 24, 30, total_gib=48)
    assert consolidation(findings([a, b], 24), S) == []
