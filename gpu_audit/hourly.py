"""The device-hourly series: one row per (device, clock hour), held as columns until it is written.

A fleet of 10,000 GPUs over 30 days has 7.2 million device-hours. As Python lists of rows they took
about 800 bytes each (a list, its floats, a host and a uuid string per row): 5.6 GB measured, on top
of the frame they came from. `HourlyColumns` keeps
them as numpy columns (host and uuid as codes into small tables of names), about 70 bytes a row, and
makes a row only when one is asked for. The rules read it per device (`device_rows`); the findings
that are written hold plain rows: per device for a small fleet, per host above `AGGREGATE_ABOVE`
devices (`findings.aggregate_series`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np

AGGREGATE_ABOVE = 300  # devices: above this the written hourly series is per host, not per device
COLUMNS = ["host", "uuid", "hour", "mean_util_pct", "mem_max_bytes", "spend_usd", "covered_s", "idle_s", "evidence_s"]
_VALUES = COLUMNS[3:]  # float columns; NaN stands for null


def iso_hour(hour: int) -> str:
    return datetime.fromtimestamp(int(hour) * 3600, timezone.utc).isoformat().replace("+00:00", "Z")


@lru_cache(maxsize=65536)
def hour_of(text: str) -> int:
    """The clock hour (hours since 1970) of a written hour, the inverse of ``iso_hour`` (a window
    has few distinct hours: each is parsed once)."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() // 3600)


def _nullable(a: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in a.tolist()]


class HourlyColumns(Sequence):
    """Device-hourly rows as columns, sorted by host, uuid and hour. Indexing gives the row as a
    list, in `COLUMNS` order, with the hour as ISO text and null for a missing number, exactly as
    the written series has it."""

    def __init__(self, host: Any, uuid: Any, hour: Any, values: dict[str, Any],
                 names: tuple[list[str], list[str]] | None = None, ordered: bool = False) -> None:
        """``host`` and ``uuid``: names; or, with ``names`` (the sorted distinct hosts and uuids), codes
        into them (what the analysis hands over: no string per row). ``ordered``: the rows already are
        in (host, uuid, hour) order (the arrays are kept, not copied)."""
        if names is None:
            hc, self.hosts = _codes(host)
            uc, self.uuids = _codes(uuid)
        else:
            hc, uc = np.asarray(host, dtype=np.int64), np.asarray(uuid, dtype=np.int64)
            self.hosts, self.uuids = list(names[0]), list(names[1])
        hour = np.asarray(hour, dtype=np.int64)
        if ordered:
            self.host_code, self.uuid_code, self.hour = hc, uc, hour
            self.values = {c: np.asarray(values[c], dtype=float) for c in _VALUES}
        else:  # rows in (host, uuid, hour) order; the codes follow the names' order, so no string is compared
            order = np.lexsort((hour, uc, hc))
            self.host_code, self.uuid_code = hc[order].astype(np.int64), uc[order].astype(np.int64)
            self.hour = hour[order]
            self.values = {c: np.asarray(values[c], dtype=float)[order] for c in _VALUES}
        self._iso: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.hour)

    def _hour_text(self, h: int) -> str:
        t = self._iso.get(h)
        if t is None:
            t = self._iso[h] = iso_hour(h)
        return t

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        v = [self.values[c][i] for c in _VALUES]
        return [self.hosts[self.host_code[i]], self.uuids[self.uuid_code[i]], self._hour_text(int(self.hour[i]))] + [
            None if x != x else float(x) for x in v]

    def groups(self) -> dict[tuple[str, str], np.ndarray]:
        """Row numbers of each device, in row order."""
        if not len(self):
            return {}
        key = self.host_code * len(self.uuids) + self.uuid_code
        order = np.argsort(key, kind="stable")
        k = key[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        parts = np.split(order, starts[1:])
        return {(self.hosts[self.host_code[p[0]]], self.uuids[self.uuid_code[p[0]]]): p for p in parts}

    def device_rows(self, idx: np.ndarray) -> list[dict[str, Any]]:
        """The rows at ``idx`` (one device's, from `groups`) as dicts, with the hour also as an
        integer ``h`` (hours since 1970)."""
        if not len(idx):
            return []
        hours = self.hour[idx].tolist()
        host, uuid = self.hosts[self.host_code[idx[0]]], self.uuids[self.uuid_code[idx[0]]]  # one device
        cols = [_nullable(self.values[c][idx]) for c in _VALUES]
        keys = ("host", "uuid", "hour", *_VALUES, "h")
        return [dict(zip(keys, (host, uuid, self._hour_text(h), *vals, h))) for h, *vals in zip(hours, *cols)]

    def frame(self) -> Any:
        """The columns as a pandas frame: host as a categorical, hour as an integer."""
        import pandas as pd

        return pd.DataFrame({"host": pd.Categorical.from_codes(self.host_code, categories=pd.Index(self.hosts)),
                             "hour": self.hour, **self.values})

    def rows(self) -> list[list[Any]]:
        """Every row as a plain list (what the JSON holds for a small fleet)."""
        hours = [self._hour_text(h) for h in self.hour.tolist()]
        cols = [np.asarray(self.hosts, dtype=object)[self.host_code].tolist(),
                np.asarray(self.uuids, dtype=object)[self.uuid_code].tolist(), hours] + [
            _nullable(self.values[c]) for c in _VALUES]
        return [list(r) for r in zip(*cols)]


def _codes(names: Any) -> tuple[np.ndarray, list[str]]:
    """Names as codes into their sorted distinct values."""
    found, codes = np.unique(np.asarray(list(names), dtype=object), return_inverse=True)
    return codes.astype(np.int64), found.tolist()


def per_host(series: dict[str, Any]) -> list[list[Any]]:
    """The hourly series summed per host and hour: dt-weighted mean utilization, peak memory,
    summed spend, covered, idle and evidence seconds (a missing number counts as 0 in a sum; the peak
    of missing ones is null). ``uuid`` is "*". Numpy over the columns: a 10,000-GPU month is 7.2M
    device-hours."""
    rows = series["rows"]
    if not len(rows):
        return []
    cols = rows if isinstance(rows, HourlyColumns) else _from_lists(rows, series["columns"])
    order = np.lexsort((cols.hour, cols.host_code))
    hc, hr = cols.host_code[order], cols.hour[order]
    start = np.flatnonzero(np.r_[True, (hc[1:] != hc[:-1]) | (hr[1:] != hr[:-1])])
    v = {c: cols.values[c][order] for c in _VALUES}
    has_u = ~np.isnan(v["mean_util_pct"])
    w = np.where(has_u, v["evidence_s"], 0.0)
    total = lambda x: np.add.reduceat(np.nan_to_num(x, nan=0.0), start)  # noqa: E731 (a missing number adds 0)
    uw, ws = total(np.where(has_u, v["mean_util_pct"], 0.0) * w), total(w)
    mem = np.fmax.reduceat(v["mem_max_bytes"], start)  # NaN only where every value is
    spend, covered, idle = total(v["spend_usd"]), total(v["covered_s"]), total(v["idle_s"])
    texts: dict[int, str] = {}  # a window has few distinct hours: each written once
    out = []
    for i, (h, hour) in enumerate(zip(hc[start].tolist(), hr[start].tolist())):
        text = texts.get(hour) or texts.setdefault(hour, iso_hour(hour))
        out.append([cols.hosts[h], "*", text, float(uw[i] / ws[i]) if ws[i] > 0 else None, _num(mem[i]), _num(spend[i]),
                    float(covered[i]), _num(idle[i]), float(ws[i])])
    return out


def _from_lists(rows: list[list[Any]], columns: list[str]) -> HourlyColumns:
    """Written rows (hour as ISO text, null for a missing number) as columns."""
    ix = {c: columns.index(c) for c in COLUMNS}
    hours = [hour_of(r[ix["hour"]]) for r in rows]
    return HourlyColumns([r[ix["host"]] for r in rows], [r[ix["uuid"]] for r in rows], hours,
                         {c: np.array([np.nan if r[ix[c]] is None else r[ix[c]] for r in rows], dtype=float) for c in _VALUES})


def _num(v: Any) -> float | None:
    return None if v is None or v != v else float(v)
