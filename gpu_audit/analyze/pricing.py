"""Prices: a pricing file (TOML) over the built-in catalog.

Lookup for a device (host, NVML name), in order:
1. ``[host]``: the host name exactly; wins over everything.
2. ``[gpu]``: keys found in the NVML name case-insensitively at word boundaries (``L4`` matches
   "NVIDIA L4" but not "NVIDIA L40S"; ``A10`` does not match "A100"); the longest matching key wins.
3. the built-in catalog (one dated on-demand price per model, with its source).
No match anywhere: unpriced (``None``), reported as such and never billed at $0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpu_audit.catalog import MODELS, find_model
from gpu_audit.errors import GpuAuditError
from gpu_audit.tomlfile import read_toml


class PricingError(GpuAuditError):
    pass


@dataclass(frozen=True)
class Price:
    per_hour: float
    source: str  # "pricing file [host] \"node-7\"", "catalog: ...", ...
    as_of: str | None = None
    provider: str = "file"  # "file" for the pricing file; the catalog's provider otherwise


@dataclass(frozen=True)
class ApiPrice:
    model: str
    input_per_1m: float
    output_per_1m: float
    as_of: str | None
    source: str | None


@dataclass
class Pricing:
    path: str | None = None
    hosts: dict[str, float] = field(default_factory=dict)
    gpus: dict[str, float] = field(default_factory=dict)
    api: dict[str, ApiPrice] = field(default_factory=dict)

    def price(self, host: str, name: str | None) -> Price | None:
        if host in self.hosts:
            return Price(self.hosts[host], f"{self.path} [host] {host!r}")
        best = None
        for key in self.gpus:
            if name and re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", name, re.IGNORECASE):
                if best is None or len(key) > len(best):
                    best = key
        if best is not None:
            return Price(self.gpus[best], f"{self.path} [gpu] {best!r}")
        model = find_model(name or "")
        if model and model.price_per_hour is not None:
            return Price(model.price_per_hour, f"catalog {model.key}: {model.price_source}", model.price_as_of, model.provider)
        return None


def _line_of(text: str, needle: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return None


def load_pricing(path: str | None) -> Pricing:
    """Read a pricing file; a mistake names the file, the line and what was expected."""
    if path is None:
        return Pricing()
    raw, text = read_toml(path, "pricing file", PricingError)

    def bad(key: str, what: str) -> PricingError:
        line = _line_of(text, key)
        where = f"{path}:{line}" if line else path
        return PricingError(f"{where}: {what}")

    currency = raw.get("currency", "USD")
    if currency != "USD":
        raise bad("currency", f"currency {currency!r} is not supported: gpu-audit works in USD only")
    unknown = set(raw) - {"currency", "gpu", "host", "api"}
    if unknown:
        k = sorted(unknown)[0]
        raise bad(k, f"unknown section or key {k!r} (expected currency, [gpu], [host], [api.\"MODEL\"])")
    p = Pricing(path=path)
    for section, target in (("gpu", p.gpus), ("host", p.hosts)):
        tbl = raw.get(section, {})
        if not isinstance(tbl, dict):
            raise bad(section, f"[{section}] must be a table of name = price")
        for k, v in tbl.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise bad(f'"{k}"' if f'"{k}"' in text else k,
                          f"[{section}] {k!r}: expected a price in $ per GPU-hour (a number >= 0), got {v!r}")
            target[k] = float(v)
    for model, spec in raw.get("api", {}).items():
        if not isinstance(spec, dict):
            raise bad(model, f"[api.{model!r}] must be a table")
        for k in ("input_per_1m", "output_per_1m"):
            v = spec.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise bad(model, f"[api.{model!r}] {k}: expected $ per 1M tokens (a number >= 0), got {v!r}")
        p.api[model] = ApiPrice(model, float(spec["input_per_1m"]), float(spec["output_per_1m"]),
                                str(spec["as_of"]) if "as_of" in spec else None, spec.get("source"))
    return p


def price_table(pricing: Pricing) -> list[dict[str, Any]]:
    """What `gpu-audit prices` prints: each catalog model with the price that applies and why."""
    rows = []
    for m in MODELS:
        pr = pricing.price("", m.nvml_name)
        rows.append({"model": m.key, "nvml_name": m.nvml_name, "price_per_hour": pr.per_hour if pr else None,
                     "as_of": pr.as_of if pr else None, "source": pr.source if pr else "no price: unpriced unless a pricing file names it"})
    for k, v in pricing.gpus.items():
        if not any(r["source"].endswith(f"[gpu] {k!r}") for r in rows):
            rows.append({"model": k, "nvml_name": None, "price_per_hour": v, "as_of": None, "source": f"{pricing.path} [gpu] {k!r}"})
    for k, v in pricing.hosts.items():
        rows.append({"model": f"host {k}", "nvml_name": None, "price_per_hour": v, "as_of": None, "source": f"{pricing.path} [host] {k!r}"})
    return rows
