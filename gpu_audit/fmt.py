"""The one place that formats numbers for people: terminal summary and HTML templates alike."""

from __future__ import annotations

NA = "N/A"


def fmt_usd(v: float | None, decimals: int = 2) -> str:
    if v is None:
        return NA
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):,.{decimals}f}"


def fmt_pct(v: float | None, decimals: int = 1) -> str:
    return NA if v is None else f"{v:.{decimals}f}%"


def fmt_num(v: float | None, decimals: int = 0) -> str:
    return NA if v is None else f"{v:,.{decimals}f}"


def fmt_bytes(v: float | None) -> str:
    if v is None:
        return NA
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return NA  # pragma: no cover


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NA
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(h) + [f"{m}m"] * bool(m) + [f"{s}s"] * bool(s)
    return " ".join(parts[:2]) or "0s"
