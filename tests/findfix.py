"""Hand-built findings for rule tests: only the fields the rules read."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

H0 = int(datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp() // 3600)
COLS = ["host", "uuid", "hour", "mean_util_pct", "mem_max_bytes", "spend_usd", "covered_s", "idle_s", "evidence_s"]
GIB = 2**30


def device(host: str, uuid: str, name: str, price: float, utils: list[float], mem_gib: list[float] | float,
           total_gib: float = 80, provider: str = "aws", idle_below: float = 5, **extra: Any) -> tuple[dict, list[list]]:
    """A device with one hourly row per entry of ``utils`` (each hour fully covered)."""
    mems = mem_gib if isinstance(mem_gib, list) else [mem_gib] * len(utils)
    rows = [[host, uuid, datetime.fromtimestamp((H0 + k) * 3600, tz=timezone.utc).isoformat().replace("+00:00", "Z"),
             u, m * GIB, price, 3600.0, 3600.0 if u < idle_below else 0.0, 3600.0] for k, (u, m) in enumerate(zip(utils, mems))]
    n = len(utils)
    srt = sorted(utils)
    d = {"host": host, "uuid": uuid, "name": name, "parent_uuid": None, "mig_profile": None, "mig_mode": False,
         "share": 1.0, "gpu_hours": float(n), "mean_util_pct": sum(utils) / n, "p95_util_pct": srt[min(n - 1, int(0.95 * n))],
         "idle_hours": float(sum(u < idle_below for u in utils)), "peak_memory_bytes": max(mems) * GIB,
         "memory_total_bytes": total_gib * GIB, "price_per_hour": price, "price_provider": provider,
         "spend_usd": price * n, "waste_usd": price * sum(1 - u / 100 for u in utils), "idle_usd": price * sum(u < idle_below for u in utils),
         "coverage_pct": 100.0, "top_process": None}
    d.update(extra)
    return d, rows


def findings(devs: list[tuple[dict, list[list]]], hours: float, models: list[dict] | None = None,
             api: list[dict] | None = None) -> dict[str, Any]:
    return {"window": {"hours": hours}, "idle_below_pct": 5.0, "devices": [d for d, _ in devs],
            "series": {"device_hourly": {"columns": COLS, "rows": [r for _, rows in devs for r in rows]}},
            "models": models or [], "api_prices": api or []}


def served_model(name: str, hosts: list[str], cost: float = 100.0, prompt: int = 10_000_000, completion: int = 2_000_000,
                 **kw: Any) -> dict[str, Any]:
    """A findings model entry with request statistics (override any field with ``kw``)."""
    m = {"model": name, "hosts": hosts, "cost_usd": cost, "prompt_tokens": prompt, "completion_tokens": completion,
         "cost_per_1m_output_tokens": cost / completion * 1e6, "cost_per_1m_tokens": cost / (prompt + completion) * 1e6,
         "completion_p50": 200.0, "completion_p95": 400.0, "completion_p99": 600.0, "prompt_p50": 800.0,
         "completion_tokens_beyond_p95": 0.0, "short_request_share": 0.0}
    m.update(kw)
    return m
