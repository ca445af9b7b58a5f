"""Report settings: defaults in code, overridden by a TOML file, then by flags.

The file (``report --settings FILE``, or ``$GPU_AUDIT_SETTINGS``) has two tables, both optional::

    [report]
    idle_below = 5.0          # a sample is idle below this utilization (%)
    memory_limit = "1GB"      # DuckDB's memory limit

    [recommend]
    idle_min_share = 0.2      # any field of RecommendSettings

``examples/gpu-audit.toml`` lists every setting with its default and meaning (a test keeps it
complete). A mistake names the file, the line and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gpu_audit.errors import GpuAuditError
from gpu_audit.tomlfile import read_toml
from gpu_audit.recommend.base import RecommendSettings

REPORT_DEFAULTS: dict[str, Any] = {"idle_below": 5.0, "memory_limit": "1GB"}
_NOT_SETTINGS = {"gpu_prices"}  # filled from the pricing file, not by the user


class SettingsError(GpuAuditError):
    pass


@dataclass(frozen=True)
class Settings:
    idle_below: float = REPORT_DEFAULTS["idle_below"]
    memory_limit: str = REPORT_DEFAULTS["memory_limit"]
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    path: str | None = None
    params_b: dict[str, float] = field(default_factory=dict)  # [models."name"] params_b: for the tokens-vs-compute check


def recommend_fields() -> dict[str, Any]:
    """The user-settable thresholds of the rules, with their defaults."""
    d = RecommendSettings()
    return {f.name: getattr(d, f.name) for f in fields(RecommendSettings) if f.name not in _NOT_SETTINGS}


def _line_of(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if line.split("=", 1)[0].strip().strip('"') == key or line.strip() == f"[{key}]":
            return i
    return None


def _check(value: Any, default: Any, name: str) -> str | None:
    """A value of the default's type (an int is a float too); shares in [0, 1], percentages in [0, 100]."""
    if isinstance(default, str):
        if not isinstance(value, str):
            return f"expected a string such as {default!r}, got {value!r}"
        return None
    whole = type(default) is int
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return f"expected {'a whole number' if whole else 'a number'}, got {value!r}"
    if value < 0:
        return f"must be >= 0, got {value!r}"
    if name.endswith("_pct") or name == "idle_below":
        if value > 100:
            return f"is a percentage: expected 0 to 100, got {value!r}"
    if name.endswith("_share") and value > 1:
        return f"is a share: expected 0 to 1, got {value!r}"
    return None


def load_settings(path: str | None) -> Settings:
    """Settings from a TOML file over the defaults (``$GPU_AUDIT_SETTINGS`` when no path is given)."""
    path = path or os.environ.get("GPU_AUDIT_SETTINGS") or None
    if path is None:
        return Settings()
    raw, text = read_toml(path, "settings file", SettingsError)

    def bad(key: str, what: str) -> SettingsError:
        line = _line_of(text, key)
        return SettingsError(f"{path}:{line}: {what}" if line else f"{path}: {what}",
                             hint="examples/gpu-audit.toml lists every setting")

    for k in raw:
        if k not in ("report", "recommend", "models"):
            raise bad(k, f"unknown section or key {k!r} (expected [report], [recommend] and [models.\"NAME\"])")
        if not isinstance(raw[k], dict):
            raise bad(k, f"{k!r} must be a table: [{k}]")
    params: dict[str, float] = {}
    for name, spec in (raw.pop("models", None) or {}).items():
        import math

        v = spec.get("params_b") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or set(spec) - {"params_b"} or isinstance(v, bool) or not isinstance(v, (int, float)) \
                or not math.isfinite(v) or not 0 < v <= 100_000:
            raise bad(name, f"[models.{name!r}]: expected params_b = the model's parameters in billions (0 to 100000)")
        params[name] = float(v)
    known = {"report": REPORT_DEFAULTS, "recommend": recommend_fields()}
    values: dict[str, dict[str, Any]] = {"report": {}, "recommend": {}}
    for section, table in raw.items():
        for k, v in table.items():
            if k not in known[section]:
                raise bad(k, f"[{section}] has no setting {k!r}")
            why = _check(v, known[section][k], k)
            if why:
                raise bad(k, f"[{section}] {k}: {why}")
            values[section][k] = float(v) if isinstance(known[section][k], float) else v
    return Settings(**values["report"], recommend=replace(RecommendSettings(), **values["recommend"]), path=path, params_b=params)
