"""Parsing of durations and times given on the command line or in files."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from gpu_audit.errors import GpuAuditError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d|w)")


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``text``: ``500ms``, ``5s``, ``1m``, ``1h30m``, ``7d``; a bare number is seconds.

    Raises GpuAuditError naming ``what`` for anything else, and for zero or negative values.
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"-?\d+(\.\d+)?", s):
            seconds = float(s)
        elif s.startswith("-"):
            raise GpuAuditError(f"{what} must be positive, got {text!r}")
        else:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(s):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise GpuAuditError(
                    f"{what}: cannot read {text!r} as a duration",
                    hint="use a number with a unit: 500ms, 5s, 1m, 2h, 7d",
                )
    if seconds <= 0:
        raise GpuAuditError(f"{what} must be positive, got {text!r}")
    return seconds


def parse_time(text: str, what: str = "time") -> datetime:
    """An aware UTC datetime from ISO 8601 (naive means UTC) or epoch seconds."""
    s = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", s):
            return datetime.fromtimestamp(float(s), tz=timezone.utc)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise GpuAuditError(
            f"{what}: cannot read {text!r} as a time", hint="use ISO 8601, e.g. 2026-11-28T00:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in ``text``: ``512MB``, ``1GiB``, ``2G``, a bare number of bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not m:
        raise GpuAuditError(f"{what}: cannot read {text!r} as a size", hint="e.g. 512MB or 2GiB")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    value = int(float(m.group(1)) * mult)
    if value <= 0:
        raise GpuAuditError(f"{what} must be positive, got {text!r}")
    return value
