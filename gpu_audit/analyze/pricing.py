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
    quoted_gpus: int = 1  # a catalog price of an instance of this many GPUs, divided by it
    quoted_as: str = "per GPU"  # how the price was quoted, for the billing assumed from it


@dataclass(frozen=True)
class ApiPrice:
    model: str
    input_per_1m: float
    output_per_1m: float
    as_of: str | None
    source: str | None
    cached_input_per_1m: float | None = None  # the API's price for prompt tokens it serves from its cache
    serves: tuple[str, ...] = ()  # the self-hosted models it stands in for (like for like)
    params_b: float | None = None  # its model's size: compared with models whose size is within a factor of 2


UNITS = ("gpu", "node")
COMMITMENTS = ("on-demand", "reserved", "owned")


@dataclass(frozen=True)
class Billing:
    """How a host's GPUs are bought (DESIGN.md "Billing"): per GPU or per node, on demand, reserved or owned."""

    unit: str = "gpu"
    commitment: str = "on-demand"
    source: str = "assumed: per GPU, on demand (no [billing] in the pricing file)"
    declared: bool = False  # said by the pricing file ([billing] or a pattern); else assumed from how the price was quoted

    @property
    def returnable(self) -> bool:
        """Whether a freed billing unit shrinks the bill (on demand); reserved or owned GPUs are capacity."""
        return self.commitment == "on-demand"


@dataclass(frozen=True)
class Energy:
    """What a host's energy costs (DESIGN.md "Energy"): $ per kWh and grid intensity, each optional,
    times the facility's PUE (default 1.0)."""

    usd_per_kwh: float | None = None
    pue: float = 1.0
    grid_gco2_per_kwh: float | None = None
    source: str = "none"


@dataclass
class Pricing:
    path: str | None = None
    hosts: dict[str, float] = field(default_factory=dict)
    gpus: dict[str, float] = field(default_factory=dict)
    api: dict[str, ApiPrice] = field(default_factory=dict)
    billing_default: Billing = field(default_factory=Billing)
    billing_hosts: dict[str, Billing] = field(default_factory=dict)  # shell-style pattern -> billing
    energy_default: Energy = field(default_factory=Energy)
    energy_hosts: dict[str, Energy] = field(default_factory=dict)  # shell-style pattern -> energy

    def energy(self, host: str) -> Energy:
        """The energy prices of ``host``: the longest ``[energy.host."pattern"]`` that matches, else ``[energy]``."""
        from fnmatch import fnmatchcase

        hits = [p for p in self.energy_hosts if fnmatchcase(host, p)]
        return self.energy_hosts[max(hits, key=len)] if hits else self.energy_default

    def billing(self, host: str) -> Billing:
        """The billing of ``host``: the longest ``[billing.host."pattern"]`` that matches, else ``[billing]``."""
        from fnmatch import fnmatchcase

        hits = [p for p in self.billing_hosts if fnmatchcase(host, p)]
        return self.billing_hosts[max(hits, key=len)] if hits else self.billing_default

    def effective_billing(self, host: str, price: Price | None) -> Billing:
        """The billing a host's claims rest on (DESIGN.md "Billing, declared or assumed"): the pricing
        file's where it declares one for the host; else assumed from how the device's price was
        quoted: a catalog price of a multi-GPU instance is billed per node of that instance, any other
        price per GPU on demand."""
        b = self.billing(host)
        if b.declared:
            return b
        if price is not None and price.quoted_gpus > 1:
            return Billing("node", "on-demand", f"assumed: per node, the price is quoted {price.quoted_as}; declare [billing] to change")
        return b

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
            return Price(model.price_per_hour, f"catalog {model.key}: {model.price_source}", model.price_as_of, model.provider,
                         model.quoted_gpus, f"per {model.quoted_gpus}-GPU instance ({model.key} catalog price / {model.quoted_gpus})"
                         if model.quoted_gpus > 1 else "per GPU")
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
    unknown = set(raw) - {"currency", "gpu", "host", "api", "billing", "energy"}
    if unknown:
        k = sorted(unknown)[0]
        raise bad(k, f"unknown section or key {k!r} (expected currency, [gpu], [host], [api.\"MODEL\"], [billing], [energy])")
    p = Pricing(path=path)
    for section, target in (("gpu", p.gpus), ("host", p.hosts)):
        tbl = raw.get(section, {})
        if not isinstance(tbl, dict):
            raise bad(section, f"[{section}] must be a table of name = price")
        for k, v in tbl.items():
            if not _price_ok(v, 1e6):
                raise bad(f'"{k}"' if f'"{k}"' in text else k,
                          f"[{section}] {k!r}: expected a price in $ per GPU-hour (a finite number from 0 to 1,000,000), got {v!r}")
            target[k] = float(v)
    for model, spec in raw.get("api", {}).items():
        if not isinstance(spec, dict):
            raise bad(model, f"[api.{model!r}] must be a table")
        for k in ("input_per_1m", "output_per_1m"):
            v = spec.get(k)
            if not _price_ok(v, 1e6):
                raise bad(model, f"[api.{model!r}] {k}: expected $ per 1M tokens (a finite number from 0 to 1,000,000), got {v!r}")
        cached = spec.get("cached_input_per_1m")
        if cached is not None and not _price_ok(cached, 1e6):
            raise bad(model, f"[api.{model!r}] cached_input_per_1m: expected $ per 1M tokens (a finite number from 0 to 1,000,000), got {cached!r}")
        serves = spec.get("serves", [])
        if not isinstance(serves, list) or not all(isinstance(x, str) for x in serves):
            raise bad(model, f"[api.{model!r}] serves: expected a list of model names, got {serves!r}")
        size = spec.get("params_b")
        if size is not None and (isinstance(size, bool) or not _price_ok(size, 1e5) or size == 0):
            raise bad(model, f"[api.{model!r}] params_b: expected the model's parameters in billions, got {size!r}")
        p.api[model] = ApiPrice(model, float(spec["input_per_1m"]), float(spec["output_per_1m"]),
                                str(spec["as_of"]) if "as_of" in spec else None, spec.get("source"),
                                float(cached) if cached is not None else None, tuple(serves),
                                float(size) if size is not None else None)
    billing = raw.get("billing", {})
    if not isinstance(billing, dict):
        raise bad("billing", "[billing] must be a table (unit, commitment, and [billing.host.\"PATTERN\"])")
    declared = bool({"unit", "commitment"} & set(billing))  # [billing] with only host patterns declares nothing for others
    p.billing_default = _billing(billing, "[billing]", bad, Billing(source=f"{path} [billing]", declared=True) if declared else Billing())
    hosts = billing.get("host", {})
    if not isinstance(hosts, dict):
        raise bad("billing.host", "[billing.host.\"PATTERN\"] must be tables")
    for pattern, spec in hosts.items():
        if not isinstance(spec, dict):
            raise bad(pattern, f"[billing.host.{pattern!r}] must be a table (unit, commitment)")
        p.billing_hosts[pattern] = _billing(spec, f"[billing.host.{pattern!r}]", bad,
                                            Billing(p.billing_default.unit, p.billing_default.commitment, f"{path} [billing.host.{pattern!r}]",
                                                    True))
    energy = raw.get("energy", {})
    if not isinstance(energy, dict):
        raise bad("energy", "[energy] must be a table (usd_per_kwh, pue, grid_gco2_per_kwh, and [energy.host.\"PATTERN\"])")
    p.energy_default = _energy(energy, "[energy]", bad, Energy(source=f"{path} [energy]"))
    for pattern, spec in (energy.get("host") or {}).items():
        if not isinstance(spec, dict):
            raise bad(pattern, f"[energy.host.{pattern!r}] must be a table (usd_per_kwh, pue, grid_gco2_per_kwh)")
        d = p.energy_default
        p.energy_hosts[pattern] = _energy(spec, f"[energy.host.{pattern!r}]", bad,
                                          Energy(d.usd_per_kwh, d.pue, d.grid_gco2_per_kwh, f"{path} [energy.host.{pattern!r}]"))
    return p


def _energy(spec: dict[str, Any], where: str, bad: Any, base: Energy) -> Energy:
    allowed = {"usd_per_kwh", "pue", "grid_gco2_per_kwh"} | ({"host"} if where == "[energy]" else set())
    extra = set(spec) - allowed
    if extra:
        k = sorted(extra)[0]
        raise bad(k, f"{where}: unknown key {k!r} (expected usd_per_kwh, pue, grid_gco2_per_kwh)")
    vals = {}
    for k, most in (("usd_per_kwh", 100.0), ("pue", 5.0), ("grid_gco2_per_kwh", 5000.0)):
        if k in spec:
            if not _price_ok(spec[k], most) or (k == "pue" and spec[k] < 1):
                raise bad(k, f"{where} {k}: expected a finite number from {1 if k == 'pue' else 0} to {most:g}, got {spec[k]!r}")
            vals[k] = float(spec[k])
    return Energy(vals.get("usd_per_kwh", base.usd_per_kwh), vals.get("pue", base.pue),
                  vals.get("grid_gco2_per_kwh", base.grid_gco2_per_kwh), base.source)


def _price_ok(v: Any, most: float) -> bool:
    """A price: a real number, finite (NaN and inf are refused: they disable every total), in range."""
    import math

    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= most


def _billing(spec: dict[str, Any], where: str, bad: Any, base: Billing) -> Billing:
    extra = set(spec) - {"unit", "commitment", "host"} if where == "[billing]" else set(spec) - {"unit", "commitment"}
    if extra:
        k = sorted(extra)[0]
        raise bad(k, f"{where}: unknown key {k!r} (expected unit, commitment)")
    unit, commitment = spec.get("unit", base.unit), spec.get("commitment", base.commitment)
    if unit not in UNITS:
        raise bad("unit", f"{where} unit: expected one of {', '.join(UNITS)}, got {unit!r}")
    if commitment not in COMMITMENTS:
        raise bad("commitment", f"{where} commitment: expected one of {', '.join(COMMITMENTS)}, got {commitment!r}")
    return Billing(unit, commitment, base.source, base.declared)


def price_table(pricing: Pricing) -> list[dict[str, Any]]:
    """What `gpu-audit prices` prints: each catalog model with the price that applies and why."""
    rows = []
    for m in MODELS:
        pr = pricing.price("", m.nvml_name)
        rows.append({"model": m.key, "nvml_name": m.nvml_name, "price_per_hour": pr.per_hour if pr else None,
                     "as_of": pr.as_of if pr else None, "source": pr.source if pr else "no price: unpriced unless a pricing file names it",
                     "quoted": pr.quoted_as if pr else None})
    for k, v in pricing.gpus.items():
        if not any(r["source"].endswith(f"[gpu] {k!r}") for r in rows):
            rows.append({"model": k, "nvml_name": None, "price_per_hour": v, "as_of": None, "source": f"{pricing.path} [gpu] {k!r}"})
    for k, v in pricing.hosts.items():
        rows.append({"model": f"host {k}", "nvml_name": None, "price_per_hour": v, "as_of": None, "source": f"{pricing.path} [host] {k!r}"})
    return rows


def billing_table(pricing: Pricing, stores: list[str]) -> list[dict[str, Any]]:
    """What `gpu-audit prices` prints under Billing: the default and each pattern, then (with stores)
    every host found there with the billing that applies to it."""
    import glob
    import os

    from gpu_audit.store.layout import decode_host

    rows = [{"host": "(every host)", **_brow(pricing.billing_default)}]
    rows += [{"host": f"pattern {p!r}", **_brow(b)} for p, b in sorted(pricing.billing_hosts.items())]
    hosts = set()
    for root in stores:
        if not os.path.isdir(root):
            raise PricingError(f"store not found: {root}")
        for table in ("samples", "rollups"):
            hosts |= {decode_host(os.path.basename(d)[5:]) for d in glob.glob(os.path.join(glob.escape(root), table, "host=*"))}
    rows += [{"host": h, **_brow(pricing.billing(h))} for h in sorted(hosts)]
    return rows


def _brow(b: Billing) -> dict[str, str]:
    return {"unit": b.unit, "commitment": b.commitment,
            "source": b.source if b.declared else b.source + "; catalog prices quoted per multi-GPU instance are assumed per node"}
