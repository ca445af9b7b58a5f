"""What every rule shares: the Recommendation type, settings, and helpers over findings."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from gpu_audit.hourly import HourlyColumns, hour_of

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Recommendation:
    kind: str
    title: str
    targets: tuple[dict[str, str], ...]  # {"host", "uuid"} for devices, {"model"} for models
    evidence: dict[str, Any]
    monthly_savings_usd: float
    confidence: str  # high | medium | low
    action: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    # cash (the bill shrinks), capacity (GPU time freed, no bill shrinks), behaviour (a product or client
    # change; in no total). A rule says what the change frees; claims.classify decides cash vs capacity
    # from the target and the host's billing.
    savings_class: str = "cash"
    # the billing the claim rests on (claims.classify): {unit, commitment, declared, source} of its targets'
    # hosts; "mixed" where they differ. declared is false where any target's billing is assumed.
    billing: dict[str, Any] = field(default_factory=dict)
    # the ledger (DESIGN.md "Ledger"; claims.classify and claims.totals): what the card frees, as
    # {host, uuid, share, cash_share} (share of the device's monthly cost; cash_share the part of it that
    # shrinks a bill), what it adds a month (a GPU to buy, API spend), and what it added to its class total
    frees: tuple[dict[str, Any], ...] = ()
    adds_monthly_usd: float = 0.0
    counted_monthly_usd: float = 0.0

    @property
    def id(self) -> str:
        """Stable for the same kind and targets."""
        keys = sorted("|".join(f"{k}={v}" for k, v in sorted(t.items())) for t in self.targets)
        return f"{self.kind}-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["frees"] = list(self.frees)
        return {"id": self.id, **d}


@dataclass(frozen=True)
class RecommendSettings:
    """Every threshold a rule uses; shown in the report beside each recommendation."""

    min_coverage_pct: float = 50.0  # less coverage than this: too little evidence for any claim
    min_covered_hours: float = 1.0  # less time observed than this: too little to scale to a month
    busy_mean_util_pct: float = 70.0  # a device this busy gets no idle/right-size/MIG/consolidation claim
    idle_hour_share: float = 0.9  # an hour is idle when this share of its covered time is idle
    idle_min_stretch_hours: int = 1
    idle_min_share: float = 0.2  # idle stretches must add up to this share of the device's covered time
    idle_held_memory_gib: float = 1.0  # memory held while idle above this: "idle but memory held"
    schedule_min_days: int = 2
    schedule_day_share: float = 0.8  # an hour of day is scheduled-idle when idle on this share of days
    target_util_pct: float = 80.0  # the compute headroom a right-sized / packed device may use
    memory_headroom: float = 0.2  # peak memory x (1 + headroom) must fit
    consolidation_compute_pct: float = 80.0
    consolidation_memory_pct: float = 90.0
    underused_p95_util_pct: float = 60.0  # right-size / MIG / consolidation consider devices below this
    batching_max_mean_util_pct: float = 40.0
    batching_target_util_pct: float = 70.0
    quantization_memory_pct: float = 90.0
    fp8_throughput_gain: float = 1.6  # vLLM FP8 docs: "up to a 1.6x improvement in throughput"
    target_util_for_token_cost_pct: float = 70.0
    long_tail_ratio: float = 8.0  # completion p99 / p50 above this: set max_tokens
    long_prompt_ratio: float = 10.0  # median prompt / median completion above this: prefix caching
    cached_prompt_share_pct: float = 50.0  # prompts already served this much from a cache: no prefix-caching advice
    short_request_tokens: int = 64
    workload_max_util_pct: float = 10.0  # a job or pod whose GPUs average below this while it holds them ...
    workload_min_gpu_hours: float = 4.0  # ... for at least this many GPU-hours: ask its owner
    # catalog key -> ($/GPU-hour, provider), from the pricing file or the catalog; right_size compares a
    # device only with GPUs priced by the same provider (no AWS list price against a neocloud's).
    gpu_prices: dict[str, tuple[float, str]] = field(default_factory=dict)


def monthly(findings: dict[str, Any], usd: float) -> float:
    """A saving over the window scaled to 730 hours."""
    hours = findings["window"]["hours"]
    return usd * HOURS_PER_MONTH / hours if hours > 0 else 0.0


def target(d: dict[str, Any]) -> dict[str, str]:
    return {"host": d["host"], "uuid": d["uuid"]}


def is_parent_in_mig(d: dict[str, Any]) -> bool:
    return bool(d.get("mig_mode")) and not d.get("parent_uuid")


def observed_enough(d: dict[str, Any], s: RecommendSettings) -> bool:
    """Coverage and time observed enough to scale to a month (every rule, MIG parents included)."""
    return ((d.get("coverage_pct") or 0) >= s.min_coverage_pct
            and (d.get("covered_hours", s.min_covered_hours) or 0) >= s.min_covered_hours)


def eligible(d: dict[str, Any], s: RecommendSettings) -> bool:
    """Enough evidence for a claim: a utilization reading, coverage, enough time observed, a price."""
    return (d.get("mean_util_pct") is not None and d.get("spend_usd") is not None and observed_enough(d, s)
            and not d.get("contradicted"))  # its readings contradict each other (data_quality.contradictions)


def busy(d: dict[str, Any], s: RecommendSettings) -> bool:
    return (d.get("mean_util_pct") or 0) >= s.busy_mean_util_pct


class HourlyIndex:
    """Per device, its hourly rows as dicts (with the hour parsed to ``h``), made on demand.

    A fleet has millions of device-hours: only an index of row numbers per device is kept, and a
    device's dicts are built when a rule asks for that device.
    """

    def __init__(self, findings: dict[str, Any]) -> None:
        self.rows = findings["series"]["device_hourly"]["rows"]
        self.cols = findings["series"]["device_hourly"]["columns"]
        self.columnar = isinstance(self.rows, HourlyColumns)
        if self.columnar:  # what `analyze` hands the rules: columns, indexed without a row per hour
            self.index: dict[tuple[str, str], Any] = self.rows.groups()
            return
        host_i, uuid_i = self.cols.index("host"), self.cols.index("uuid")
        self.index = defaultdict(list)
        for i, row in enumerate(self.rows):
            self.index[(row[host_i], row[uuid_i])].append(i)

    def get(self, key: tuple[str, str], default: Any = None) -> list[dict[str, Any]]:
        idx = self.index.get(key)
        if idx is None:
            return default if default is not None else []
        if self.columnar:
            return self.rows.device_rows(idx)
        out = []
        for i in idx:
            r = dict(zip(self.cols, self.rows[i]))
            r["h"] = hour_of(r["hour"])
            out.append(r)
        return out

    def arrays(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """A device's hourly values as numpy arrays in hour order (NaN for null; ``h``: the hour as an
        integer), without a dict per hour (what a rule that reads every device of a fleet wants)."""
        import numpy as np

        idx = self.index.get(key)
        if idx is None:
            return None
        if self.columnar:
            return {"h": self.rows.hour[idx], **{c: self.rows.values[c][idx] for c in self.rows.values}}
        rows = self.get(key)
        return {"h": np.array([r["h"] for r in rows], dtype=np.int64),
                **{c: np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=float) for c in self.cols[3:]}}


_HOURLY_CACHE: list[Any] = [None, None]  # (the rows list it was built from, its index): rules share one


def hourly(findings: dict[str, Any]) -> HourlyIndex:
    """The device-hourly series, indexed per device (cached per findings)."""
    rows = findings["series"]["device_hourly"]["rows"]
    if _HOURLY_CACHE[0] is not rows:
        _HOURLY_CACHE[0], _HOURLY_CACHE[1] = rows, HourlyIndex(findings)
    return _HOURLY_CACHE[1]
