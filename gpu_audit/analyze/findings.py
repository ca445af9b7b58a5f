"""Findings: build them from inputs, and write them as JSON without ever leaving half a file."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from gpu_audit.errors import GpuAuditError


def _clean(o: Any) -> Any:
    """JSON has no NaN: a missing number is null."""
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else o
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item"):  # numpy scalars
        return _clean(o.item())
    return o


def write_json(findings: dict[str, Any], path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(_clean(findings), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise GpuAuditError(f"cannot write {path}: {e.strerror or e}") from None


def build(stores: list[str], pricing_path: str | None, token_paths: list[str], since: str | None, until: str | None,
          idle_below: float = 5.0, strict: bool = False) -> dict[str, Any]:
    """Everything `report` needs, from the user's inputs: the one library call behind the command."""
    from gpu_audit.analyze.engine import AnalyzeSettings, analyze
    from gpu_audit.analyze.pricing import load_pricing
    from gpu_audit.analyze.tokens import load_tokens
    from gpu_audit.units import parse_time

    if not 0 <= idle_below <= 100:
        raise GpuAuditError(f"--idle-below must be between 0 and 100, got {idle_below}")
    s = parse_time(since, "--since") if since else None
    u = parse_time(until, "--until") if until else None
    if s and u and s >= u:
        raise GpuAuditError("--since must be before --until")
    pricing = load_pricing(pricing_path)
    tokens = load_tokens(token_paths, strict=strict) if token_paths else None
    return _clean(analyze(list(stores), pricing, tokens, AnalyzeSettings(idle_below=idle_below, since=s, until=u)))
