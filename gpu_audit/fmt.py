"""The one place that formats numbers for people: terminal summary and HTML templates alike."""

from __future__ import annotations

NA = "N/A"


# Characters that must not reach a terminal or a page raw: C0 and C1 controls (ESC starts terminal escape
# sequences, BEL ends OSC titles), DEL, and the Unicode bidi controls that reorder text (a spoofed name).
_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(text: str, keep: str = "") -> str:
    """``text`` with control, escape and bidi characters shown escaped (a backslash form such as
    ``\\x1b`` or ``\\u202e``); the characters in ``keep`` (HTML keeps newlines and tabs) pass."""
    if text.isprintable() and not any(ord(c) in _BIDI for c in text):
        return text
    out = []
    for c in text:
        o = ord(c)
        if c in keep:
            out.append(c)
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif o in _BIDI or (not c.isprintable() and c != " "):
            out.append(f"\\u{o:04x}")
        else:
            out.append(c)
    return "".join(out)


def fmt_usd(v: float | None, decimals: int = 2) -> str:
    if v is None or v != v:
        return NA
    sign = "-" if round(v, decimals) < 0 else ""  # never "-$0.00"
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


def short_id(uuid: str | None) -> str:
    """A device id short enough for a label: the last 6 characters of a GPU or MIG UUID; for the ids
    an import makes up (``nvidia-smi:index:0``, ``nvidia-smi:pci:...``) what they name ("index 0")."""
    if not uuid:
        return "?"
    if uuid.startswith("nvidia-smi:"):
        kind, _, value = uuid[len("nvidia-smi:"):].partition(":")
        return f"{kind} {value}"
    if "/GI-" in uuid:  # a MIG instance named by its GPU and instance id (DCGM, XML imports)
        gpu, _, gi = uuid.partition("/")
        return f"{gpu[-6:]}/{gi}"
    return uuid[-6:]
