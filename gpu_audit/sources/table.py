"""Import tables of samples from elsewhere: CSV or Parquet, wide (one row per device and time, a
column per metric) or long (one metric per file: ``value, timestamp, pod``), several files joined
on (time, device).

A mapping names the store column each file column feeds: ``--map util_gpu_pct=value`` applies to
every file that has a ``value`` column; ``--map util_gpu_pct=duty.csv:value`` to that file only (by
name or path). ``ts`` and ``uuid`` must be mapped (the time and the device); ``host`` may be mapped
or given with ``--host``; ``name`` (the GPU model, for pricing) may be mapped or given with
``--gpu-name``. Times may be epoch seconds or milliseconds, or ISO 8601 (naive: ``--tz``). Memory
columns take ``--memory-unit`` (bytes, MiB, GiB), utilization columns ``--util-unit`` (percent, or
ratio for 0-1). The same idempotence and checks as every import (gpu_audit.sources.sink).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import MAX_HOST_BYTES
from gpu_audit.sources.sink import MAX_ID, ImportLedger, StoredKeys, Tally, check_interval, check_times, series_times
from gpu_audit.store.schema import SAMPLES

MEMORY_UNITS = {"bytes": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
UTIL_UNITS = {"percent": 1.0, "ratio": 100.0}
MEMORY_COLUMNS = {"mem_used_bytes", "mem_total_bytes"}
UTIL_COLUMNS = {c for c in SAMPLES.names if c.endswith("_pct")}
KEYS = ("ts", "uuid", "host", "name")
MAPPABLE = set(SAMPLES.names) - {"interval_s", "source", "error"}


class TableError(GpuAuditError):
    pass


@dataclass
class TableImport:
    rows: int = 0
    devices: int = 0
    hosts: list[str] = field(default_factory=list)
    rejected: int = 0
    tally: Tally = field(default_factory=Tally)
    times: str = ""  # how the times were read and the range they span, for the summary


def parse_maps(maps: list[str]) -> list[tuple[str, str | None, str]]:
    """``STORE=COLUMN`` or ``STORE=FILE:COLUMN`` -> (store column, file or None, file column)."""
    out = []
    for m in maps:
        store, sep, src = m.partition("=")
        store = store.strip()
        if not sep or not src.strip() or not store:
            raise TableError(f"--map {m!r}: expected STORE_COLUMN=FILE_COLUMN (or STORE_COLUMN=FILE:COLUMN)")
        if store not in MAPPABLE:
            raise TableError(f"--map {m!r}: {store!r} is not a samples column", hint="see docs/store.md for the columns")
        file, _, col = src.rpartition(":") if ":" in src else ("", "", src)
        out.append((store, file or None, col))
    return out


def _read(path: str) -> Any:
    import pandas as pd

    if not os.path.isfile(path):
        raise TableError(f"file not found: {path}")
    try:
        if path.lower().endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path, encoding="utf-8-sig")
    except Exception as e:  # pandas raises many types for a file it cannot read
        raise TableError(f"{path}: cannot read it as CSV or Parquet: {str(e).splitlines()[0]}") from None


def _times(col: Any, tz: str | None, path: str) -> Any:
    """Epoch seconds (or ms, µs) or ISO 8601 strings -> epoch µs (int64)."""
    import numpy as np
    import pandas as pd

    from gpu_audit.analyze.tokens import epoch_seconds

    if pd.api.types.is_numeric_dtype(col):
        v = col.astype(float).to_numpy()
        v = np.where(np.isfinite(v) & (np.abs(v) < 9e18), v, np.nan)  # inf, NaN, beyond any epoch unit: no time
        sec = np.vectorize(epoch_seconds, otypes=[float])(v) if len(v) else v
        us = np.round(sec * 1e6)
        us = np.where(np.abs(us) < 2.5e17, us, np.nan)  # beyond the year 9999
        return pd.Series(us, index=col.index).astype("Float64").round().astype("Int64")
    try:
        t = pd.to_datetime(col, errors="coerce", utc=False)
        if getattr(t.dt, "tz", None) is None:
            t = t.dt.tz_localize(tz or "UTC", ambiguous="NaT", nonexistent="NaT")
        # whatever unit pandas chose for the column (ns, us, ms, s): microseconds since the epoch
        us = (t.dt.tz_convert("UTC") - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError, TypeError, AttributeError):
        us = pd.Series([_iso_us(v, tz) for v in col], index=col.index, dtype="Float64")  # value by value: unreadable is no time
        t = us
    if t.isna().all() and len(t):
        raise TableError(f"{path}: cannot read the time column as epoch seconds or ISO 8601 (first value {str(col.iloc[0])[:40]!r})")
    return us.where(t.notna()).astype("Float64").round().astype("Int64")


def _iso_us(v: Any, tz: str | None) -> float | None:
    """One ISO 8601 time as epoch microseconds (naive: in ``tz``, else UTC), or None."""
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    try:
        d = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=ZoneInfo(tz) if tz else timezone.utc)
        return round(d.timestamp() * 1e6)
    except (ValueError, OverflowError, OSError, TypeError):
        return None


def import_table(paths: list[str], out: str, maps: list[str], host: str | None = None, gpu_name: str | None = None,
                 memory_unit: str = "bytes", util_unit: str = "percent", interval_s: float | None = None,
                 tz: str | None = None) -> TableImport:
    import numpy as np
    import pandas as pd

    from gpu_audit.store.layout import check_host
    from gpu_audit.store.writer import StoreWriter, check_writable

    check_interval(interval_s)
    if host is not None:
        check_host(host)
    if memory_unit not in MEMORY_UNITS:
        raise TableError(f"--memory-unit: expected one of {', '.join(MEMORY_UNITS)}, got {memory_unit!r}")
    if util_unit not in UTIL_UNITS:
        raise TableError(f"--util-unit: expected percent or ratio, got {util_unit!r}")
    if tz is not None:
        from gpu_audit.sources.nvidia_smi import _zone

        _zone(tz)  # an unknown zone is one line, before any file is read
    spec = parse_maps(maps)
    names = {os.path.basename(p) for p in paths} | set(paths)
    for store, file, col in spec:
        if file is not None and file not in names:
            raise TableError(f"--map {store}={file}:{col}: {file} is not one of the files given",
                             hint="name a file given on the command line, or leave out FILE: to map every file's column")
    found: set[tuple[str, str]] = set()  # (store column, file column) mapped in some file
    frames = []
    ledger = ImportLedger(out, "table", host or "")
    shas: dict[str, str] = {}
    skipped: list[str] = []
    for path in paths:
        if not os.path.isfile(path):
            raise TableError(f"file not found: {path}")
        sha, why = ledger.already(path)
        if why:
            skipped.append(why)
            continue
        shas[path] = sha
        df = _read(path)
        cols = {}
        for store, file, col in spec:
            if file is not None and file not in (path, os.path.basename(path)):
                continue
            if col not in df.columns:
                if file is not None:
                    raise TableError(f"{path}: no column {col!r} (from --map {store}={file}:{col}); it has {', '.join(map(str, df.columns))}")
                continue
            cols[store] = df[col]
            found.add((store, col))
        missing = [k for k in ("ts", "uuid") if k not in cols]
        if missing:
            raise TableError(f"{path}: no column mapped to {' and '.join(missing)}",
                             hint="map the time and the device: --map ts=COLUMN --map uuid=COLUMN")
        if "host" not in cols and host is None:
            raise TableError(f"{path}: no host: give --host NAME or --map host=COLUMN")
        f = pd.DataFrame({"ts": _times(cols.pop("ts"), tz, path), "uuid": cols.pop("uuid").astype(str),
                          "host": cols.pop("host").astype(str) if "host" in cols else host,
                          "name": cols.pop("name").astype(str) if "name" in cols else gpu_name})
        for store, s in cols.items():
            v = pd.to_numeric(s, errors="coerce") if store not in ("parent_uuid", "mig_profile", "k8s_pod", "k8s_namespace",
                                                                    "k8s_container") else s.astype(str)
            if store in MEMORY_COLUMNS:
                v = v * MEMORY_UNITS[memory_unit]
            elif store in UTIL_COLUMNS:
                v = v * UTIL_UNITS[util_unit]
            f[store] = v
        f = f.dropna(subset=["ts"])
        f.attrs["iso"] = not pd.api.types.is_numeric_dtype(df[next(c for st, _, c in spec if st == "ts" and c in df.columns)])
        for col, what, limit in (("uuid", "the device id", MAX_ID), ("host", "the host name", MAX_HOST_BYTES)):
            if col in f and f[col] is not None and len(f):
                lengths = f[col].astype(str).str.len()
                if (lengths > limit).any():
                    i = int(lengths.to_numpy().argmax())
                    raise TableError(f"{path}: row {int(f.index[i]) + 1}: {what} is {int(lengths.iloc[i]):,} characters long (at most {limit})")
        check_times(f["ts"].to_numpy(dtype="int64"), lambda i, f=f, path=path: f"{path}: row {int(f.index[i]) + 1}")
        frames.append(f)
    res = TableImport()
    res.tally.skipped_files = skipped
    if not frames:
        raise res.tally.nothing_stored(", ".join(paths))
    lost = [(store, col) for store, _, col in spec if (store, col) not in found]
    if lost:
        store, col = lost[0]
        raise TableError(f"--map {store}={col}: no file given has a column {col!r}",
                         hint="check the column name (the files' header) or leave the mapping out")
    data = pd.concat(frames, ignore_index=True)
    if len(data):
        from datetime import datetime as _dt, timezone as _tz

        lo, hi = (_dt.fromtimestamp(int(x) / 1e6, tz=_tz.utc).strftime("%Y-%m-%d %H:%M:%S") for x in (data["ts"].min(), data["ts"].max()))
        res.times = f"times read as {'ISO 8601 or timestamps' if any(f.attrs.get('iso') for f in frames) else 'epoch'} ({tz or 'UTC'}), {lo} to {hi} UTC"
    # Values outside their range never reach the store: the row is dropped and counted. A unit that is
    # wrong for the whole column is refused before anything is written (never an idle card made of it).
    bad = np.zeros(len(data), dtype=bool)
    for c in sorted(UTIL_COLUMNS & set(data.columns)):
        v = data[c].astype(float)
        out_of_range = (v.notna() & ~v.between(0, 100)).to_numpy()
        given = int(v.notna().sum())
        if given and out_of_range.sum() > 0.05 * given:
            raise TableError(f"{c}: {int(out_of_range.sum()):,} of {given:,} values lie outside 0-100 % with --util-unit {util_unit}: "
                             "nothing imported", hint="the column is in percent: give --util-unit percent" if util_unit == "ratio"
                             else "check the column and its unit (--util-unit)")
        fractional = v.dropna()
        if util_unit == "percent" and len(fractional) and fractional.between(0, 1).all() and ((fractional > 0) & (fractional < 1)).any():
            raise TableError(f"{c}: every value lies between 0 and 1 (a ratio) under --util-unit percent: nothing imported",
                             hint="give --util-unit ratio (a busy GPU at 0.6 would otherwise read as 0.6 % and look idle)")
        bad |= out_of_range
    # Other numbers must fit their column: finite, and within what the store's type holds.
    for c in sorted(set(data.columns) - UTIL_COLUMNS - set(KEYS)):
        if c in SAMPLES.names and (pa.types.is_integer(SAMPLES.field(c).type) or pa.types.is_floating(SAMPLES.field(c).type)):
            v = pd.to_numeric(data[c], errors="coerce").astype(float)
            limit = 2.0**31 if SAMPLES.field(c).type == pa.int32() else 2.0**53 if pa.types.is_integer(SAMPLES.field(c).type) else 1e15
            bad |= (v.notna() & ~(np.isfinite(v) & (v.abs() < limit))).to_numpy()
    res.rejected = int(bad.sum())
    data = data[~bad]
    # Long format: each file gives some columns of a (host, device, time); the first value of each wins.
    metrics = [c for c in data.columns if c not in KEYS]
    merged = data.groupby(["host", "uuid", "ts"], as_index=False, sort=True).agg(
        {**{c: "first" for c in metrics}, "name": "first"})
    res.tally.duplicate_instants = int(sum(len(f) - len(f.drop_duplicates(["host", "uuid", "ts"])) for f in frames))
    check_writable(out)
    writers: dict[str, StoreWriter] = {}
    from datetime import datetime, timezone

    for (h, uuid), g in merged.groupby(["host", "uuid"], sort=True):
        ts = g["ts"].astype("int64").to_numpy()
        uniq, dt, _, _ = series_times(ts, interval_s)
        keys = StoredKeys(out, "samples", h)
        w = writers.setdefault(h, StoreWriter(out, h))
        res.devices += 1
        for row, t_us, d in zip(g.to_dict("records"), ts.tolist(), dt.tolist()):
            when = datetime.fromtimestamp(t_us / 1e6, tz=timezone.utc)
            if not keys.claim(uuid, when.strftime("%Y-%m-%d"), t_us):
                res.tally.already_stored += 1
                continue
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for c in ("mem_used_bytes", "mem_total_bytes", "index", "sm_clock_mhz", "sm_clock_max_mhz", "temp_c", "throttle_reasons"):
                if clean.get(c) is not None:
                    clean[c] = int(round(clean[c]))
            w.add("samples", {**clean, "ts": when, "host": h, "uuid": uuid, "interval_s": d, "source": "table"})
            res.rows += 1
    book = writers.get(host) if host else next(iter(writers.values()), None)
    for path, sha in shas.items():
        if book is not None:
            ledger.record(book, sha, path, -1, "in-file")  # rows per file are not kept apart after the merge
    for w in writers.values():
        w.flush()
    res.hosts = sorted(writers)
    res.tally.rows, res.tally.rejected = res.rows, res.rejected
    if res.rejected and not res.tally.first_rejection:
        res.tally.first_rejection = "a utilization outside 0-100 % (check --util-unit)"
    if not res.rows:
        raise res.tally.nothing_stored(", ".join(paths))
    return res
