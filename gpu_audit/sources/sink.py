"""What every importer shares so that imports are idempotent (docs/import.md, "Importing twice").

- ``series_times``: a series' instants sorted and made unique, with each one's dt as DESIGN.md defines
  it (the gap since the previous instant when at most 3 x the nominal interval, else one nominal
  interval). Input order never matters: a log in descending order, or with time going back, gives
  the same rows as the sorted log.
- ``StoredKeys``: the instants a store already holds for one host, so that a row already stored
  (the same file imported twice, a grown log imported again, an import resumed after a failure) is
  skipped, not written twice.
- ``Tally``: what an import counts and says: rows stored, rows already in the store, duplicate
  instants in the file; ``nothing_stored`` is the one-line reason when no row was written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import is_data_file, partition_dir


class NothingImported(GpuAuditError):
    """An import that stores no row: exit 2 with the reason."""


def check_interval(interval_s: float | None) -> None:
    if interval_s is not None and not (math.isfinite(interval_s) and interval_s > 0):
        raise GpuAuditError(f"--interval must be a positive duration, got {interval_s:g} s")


def series_times(ts_us: np.ndarray, interval_s: float | None) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(unique sorted instants in µs, dt of each in seconds, duplicate instants, nominal interval)."""
    uniq = np.unique(ts_us)
    dups = int(len(ts_us) - len(uniq))
    gaps = np.diff(uniq) / 1e6
    nominal = float(interval_s) if interval_s else (float(np.median(gaps[:10_000])) if len(gaps) else 0.0)
    dt = np.full(len(uniq), nominal, dtype=float)
    if len(uniq) > 1:
        ok = gaps <= 3 * nominal
        dt[1:] = np.where(ok, gaps, nominal)
    return uniq, dt, dups, nominal


def to_us(ts: float) -> int:
    """Epoch seconds to whole microseconds, as the store keeps them."""
    return int(round(ts * 1e6))


class StoredKeys:
    """The instants already stored for one host in one table, per key (a device's uuid, an engine
    endpoint and model), read from the partitions of the dates asked about (footers and two
    columns only)."""

    def __init__(self, root: str, table: str, host: str, key_cols: tuple[str, ...] = ("uuid",)) -> None:
        self.root, self.table, self.host, self.key_cols = root, table, host, key_cols
        self._dates: dict[str, dict[str, np.ndarray]] = {}

    def _load(self, date: str) -> dict[str, np.ndarray]:
        if date in self._dates:
            return self._dates[date]
        folder = partition_dir(self.root, self.table, self.host, date)
        per: dict[str, list[np.ndarray]] = {}
        names = sorted(n for n in os.listdir(folder) if is_data_file(n)) if os.path.isdir(folder) else []
        for n in names:
            path = os.path.join(folder, n)
            cols = set(pq.read_schema(path).names)
            if "ts" not in cols or not set(self.key_cols) <= cols:
                continue  # a foreign file the analyzer will name; nothing to match against
            t = pq.read_table(path, columns=["ts", *self.key_cols])
            key = _key_array(t, self.key_cols)
            ts = t["ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
            for k in pc.unique(key).to_pylist():
                per.setdefault(k, []).append(ts[pc.equal(key, k).to_numpy(zero_copy_only=False)])
        self._dates[date] = {k: np.unique(np.concatenate(v)) for k, v in per.items()}
        return self._dates[date]

    def has(self, key: str, date: str, ts_us: int) -> bool:
        arr = self._load(date).get(key)
        if arr is None or not len(arr):
            return False
        i = int(np.searchsorted(arr, ts_us))
        return i < len(arr) and int(arr[i]) == ts_us


def _key_array(t, cols: tuple[str, ...]):
    """One string key per row: the key columns joined (nulls as empty)."""
    parts = [pc.fill_null(t[c].cast(pa.string()), "") for c in cols]
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, KEY_SEP)


def row_key(*values: object) -> str:
    """The key of one row as StoredKeys builds it."""
    return KEY_SEP.join("" if v is None else str(v) for v in values)


KEY_SEP = "\x1f"


@dataclass
class Tally:
    """What an import counts, for its summary line and for the exit code."""

    rows: int = 0  # stored now
    already_stored: int = 0  # skipped: the store had them
    duplicate_instants: int = 0  # skipped: the file repeats an instant of the same device
    rejected: int = 0  # lines or points refused (bad values)
    first_rejection: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        out = []
        if self.already_stored:
            out.append(f"{self.already_stored:,} rows already in the store (skipped)")
        if self.duplicate_instants:
            out.append(f"{self.duplicate_instants:,} duplicate instants in the file (kept once)")
        return out

    def nothing_stored(self, what: str) -> NothingImported:
        if self.already_stored:
            return NothingImported(f"nothing imported from {what}: all {self.already_stored:,} rows are already in the store",
                                   hint="the store holds each device and instant once; importing again adds nothing")
        if self.rejected:
            return NothingImported(f"nothing imported from {what}: every row was rejected (first: {self.first_rejection})")
        return NothingImported(f"nothing imported from {what}: no rows", hint=self.notes[0] if self.notes else None)
