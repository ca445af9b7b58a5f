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
from typing import Callable

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
        self._claimed: set[tuple[str, int]] = set()  # written (or buffered) by this command

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
        if (key, ts_us) in self._claimed:
            return True
        arr = self._load(date).get(key)
        if arr is None or not len(arr):
            return False
        i = int(np.searchsorted(arr, ts_us))
        return i < len(arr) and int(arr[i]) == ts_us

    def claim(self, key: str, date: str, ts_us: int) -> bool:
        """True, and the instant remembered, when neither the store nor this command holds it yet:
        one command given the same instants in two files (or a file twice) stores them once."""
        if self.has(key, date, ts_us):
            return False
        self._claimed.add((key, ts_us))
        return True


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
    skipped_files: list[str] = field(default_factory=list)  # files whose content was imported before (said once each)

    def summary(self) -> list[str]:
        out = list(self.skipped_files)
        if self.already_stored:
            out.append(f"{self.already_stored:,} rows already in the store (skipped)")
        if self.duplicate_instants:
            out.append(f"{self.duplicate_instants:,} duplicate instants in the file (kept once)")
        return out

    def nothing_stored(self, what: str) -> NothingImported:
        if self.skipped_files and not self.already_stored and not self.rejected:
            return NothingImported(f"nothing imported: {self.skipped_files[0]}"
                                   + (f" (and {len(self.skipped_files) - 1} more)" if len(self.skipped_files) > 1 else ""),
                                   hint="the store keeps each file's content once; importing it again adds nothing")
        if self.already_stored:
            return NothingImported(f"nothing imported from {what}: all {self.already_stored:,} rows are already in the store",
                                   hint="the store holds each device and instant once; importing again adds nothing")
        if self.rejected:
            return NothingImported(f"nothing imported from {what}: every row was rejected (first: {self.first_rejection})")
        return NothingImported(f"nothing imported from {what}: no rows", hint=self.notes[0] if self.notes else None)


EARLIEST = 946684800.0  # 2000-01-01T00:00:00Z: no GPU telemetry we read is older


def time_out_of_range(t_s: float, now: float | None = None) -> str | None:
    """Why a sample time cannot be real (before 2000-01-01, or more than a day after now), or None.
    Such times (a "seconds since start" column, a unit off by 1000) would stretch a report's window
    to decades: they are refused where they enter."""
    import time
    from datetime import datetime, timezone

    now = time.time() if now is None else now
    if not math.isfinite(t_s):
        return "the time is not a number"
    if EARLIEST <= t_s <= now + 86400:
        return None
    try:
        shown = datetime.fromtimestamp(t_s, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        shown = f"{t_s:g} s after 1970"
    if t_s < EARLIEST:
        return f"time {shown} is before 2000-01-01 (seconds since start, or the wrong unit?)"
    return f"time {shown} is more than a day after now (a clock or unit error?)"


def check_times(ts_us: np.ndarray, where: Callable[[int], str], now: float | None = None) -> None:
    """Refuse, in one line naming the file and row (``where(i)``), the first time out of range."""
    if not len(ts_us):
        return
    import time

    now = time.time() if now is None else now
    lo, hi = EARLIEST * 1e6, (now + 86400) * 1e6
    bad = np.flatnonzero((ts_us < lo) | (ts_us > hi))
    if len(bad):
        i = int(bad[0])
        raise GpuAuditError(f"{where(i)}: {time_out_of_range(float(ts_us[i]) / 1e6, now)}",
                            hint="every sample time must lie between 2000-01-01 and tomorrow: fix the time column or its unit")


def file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImportLedger:
    """The files a store has imported, by content (the ``imports`` table): the same bytes given
    again (a copied scrape, the same dump twice, in one command or two) are read once."""

    def __init__(self, root: str, kind: str, host: str = "") -> None:
        import glob

        self.root, self.kind, self.host = root, kind, host
        self.seen: dict[str, tuple[str, str]] = {}  # sha256 -> (path, when)
        for path in glob.glob(os.path.join(glob.escape(root), "imports", "host=*", "date=*", "*.parquet")):
            if os.path.basename(path).startswith("."):
                continue
            try:
                t = pq.read_table(path, columns=["ts", "host", "kind", "sha256", "path"]).to_pylist()
            except (OSError, pa.ArrowException, KeyError):
                continue
            for r in t:
                if r["kind"] == kind and (r["host"] or "") == host:
                    self.seen.setdefault(r["sha256"], (r["path"], r["ts"].strftime("%Y-%m-%d %H:%M UTC")))

    def already(self, path: str) -> tuple[str, str | None]:
        """(sha256, why it is skipped or None). A file is marked seen at once: a second copy in the
        same command is skipped too."""
        sha = file_sha256(path)
        if sha in self.seen:
            first, when = self.seen[sha]
            return sha, (f"{path}: the same content as {first}, imported {when}: skipped" if when
                         else f"{path}: the same content as {first} in this command: read once")
        self.seen[sha] = (path, "")
        return sha, None

    def record(self, writer: object, sha: str, path: str, rows: int, time_source: str) -> None:
        from datetime import datetime, timezone

        writer.add("imports", {"ts": datetime.now(timezone.utc), "host": self.host, "kind": self.kind, "sha256": sha,  # type: ignore[attr-defined]
                               "path": path, "rows": rows, "time_source": time_source})


MAX_ID = 200  # characters of a device id (a GPU or MIG UUID is 40-60): longer is not an id


def bad_name(value: str, what: str, limit: int = MAX_ID) -> str | None:
    """Why a host name or device id from a file cannot be stored (empty, too long, control
    characters), or None. Checked where every source enters, whatever the source."""
    if not value or not value.strip():
        return f"{what} is empty"
    if len(value) > limit:
        return f"{what} is {len(value):,} characters long (at most {limit})"
    if not value.isprintable():
        return f"{what} holds control characters"
    return None
