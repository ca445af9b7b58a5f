"""Small stores written row by row, for hand-computed analysis tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gpu_audit.store.writer import StoreWriter

T0 = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=timezone.utc)


def write_samples(store: str, rows: list[dict[str, Any]]) -> None:
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    for host, rs in by_host.items():
        w = StoreWriter(store, host)
        for r in rs:
            w.add("samples", {"source": "virtual", **r})
        w.flush()


def series(host: str, uuid: str, name: str, start: float, interval: float, utils: list[float | None], **extra: Any) -> list[dict]:
    """Samples every ``interval`` seconds from ``start``, each standing for ``interval`` seconds."""
    return [{"host": host, "uuid": uuid, "name": name, "ts": at(start + k * interval), "interval_s": interval,
             "util_gpu_pct": u, "mem_used_bytes": 2**30, "mem_total_bytes": 80 * 2**30, **extra}
            for k, u in enumerate(utils)]
