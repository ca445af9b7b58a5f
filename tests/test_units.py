import pytest

from gpu_audit.errors import GpuAuditError
from gpu_audit.units import parse_duration, parse_time


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("5s", 5), ("1m", 60), ("1h30m", 5400), ("7d", 604800), ("2", 2), ("59m", 3540)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-5s", "5x", "", "s", "0", "1h-", "abc"])
def test_bad_durations(text):
    with pytest.raises(GpuAuditError):
        parse_duration(text, "--interval")


def test_times():
    assert parse_time("2026-11-28T00:00:00Z").timestamp() == 1795824000
    assert parse_time("2026-11-28").timestamp() == 1795824000
    assert parse_time("1795824000").timestamp() == 1795824000
    with pytest.raises(GpuAuditError, match="--since"):
        parse_time("yesterday", "--since")
