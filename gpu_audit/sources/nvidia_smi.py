"""Import logs written by ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits] [-l N]``.

Any subset of query fields that includes ``timestamp`` and ``utilization.gpu`` is accepted. Units may
be in the header (``memory.used [MiB]``) or in the values (``1024 MiB``); ``[N/A]``, ``N/A``,
``[Not Supported]`` and ``[Requested functionality has been deprecated]`` are null. Repeated headers
and blank lines are skipped, CRLF and a missing final newline are fine, and several GPUs may be
interleaved (a series per ``uuid``, else ``pci.bus_id``, else ``index``).

Files are read twice, streaming, so memory does not grow with the file: the first pass checks every
line and finds each series' median gap (its nominal interval, from up to 10,000 gaps); the second
computes dt (DESIGN.md) and writes rows in chunks. With ``strict`` the first bad line is an error and
nothing is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Iterator

from gpu_audit.errors import GpuAuditError
from gpu_audit.sources.sink import StoredKeys, Tally, check_interval, series_times, to_us
from gpu_audit.store.writer import StoreWriter

NA = {"", "[N/A]", "N/A", "[Not Supported]", "[Requested functionality has been deprecated]", "[Unknown Error]",
      "[GPU requires reset]", "[Insufficient Permissions]", "[Not Found]"}
_NUM = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(%|MiB|GiB|KiB|W|MHz|C)?$")
FLUSH_ROWS = 100_000  # rows buffered before a flush (memory stays flat on large logs)
_MIB = {"MiB": 2**20, "GiB": 2**30, "KiB": 2**10, None: 2**20}

# query field -> (column, kind); aliases cover the names of older and newer drivers.
FIELDS: dict[str, tuple[str, str]] = {
    "name": ("name", "str"), "uuid": ("uuid", "str"), "pci.bus_id": ("pci", "str"), "index": ("index", "int"),
    "utilization.gpu": ("util_gpu_pct", "pct"), "utilization.memory": ("util_mem_pct", "pct"),
    "memory.used": ("mem_used_bytes", "mem"), "memory.total": ("mem_total_bytes", "mem"),
    "power.draw": ("power_w", "float"), "power.draw.instant": ("power_w", "float"),
    "power.draw.average": ("power_w", "float"), "power.limit": ("power_limit_w", "float"),
    "enforced.power.limit": ("power_limit_w", "float"), "clocks.sm": ("sm_clock_mhz", "int"),
    "clocks.current.sm": ("sm_clock_mhz", "int"), "clocks.max.sm": ("sm_clock_max_mhz", "int"),
    "clocks.max.sm_clock": ("sm_clock_max_mhz", "int"), "temperature.gpu": ("temp_c", "int"),
    "clocks_event_reasons.active": ("throttle_reasons", "hex"), "clocks_throttle_reasons.active": ("throttle_reasons", "hex"),
    "mig.mode.current": ("mig_mode", "bool"),
}


class ImportError_(GpuAuditError):
    pass


@dataclass
class ImportResult:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    series: int = 0
    bad: int = 0
    bad_lines: list[str] = field(default_factory=list)  # "file:line: why", the first few
    single_sample_series: int = 0
    zone: str = ""
    tally: Tally = field(default_factory=Tally)


def _zone(tz: str | None) -> tuple[tzinfo, str]:
    if tz:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(tz), tz
        except (ZoneInfoNotFoundError, ValueError):
            raise ImportError_(f"--tz: unknown time zone {tz!r}", hint="use an IANA name such as Europe/Berlin or UTC") from None
    local = datetime.now().astimezone().tzinfo
    assert local is not None
    return local, f"the local zone ({datetime.now().astimezone().strftime('%Z, UTC%z')})"


def _header_name(h: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", h.strip())


def _lines(path: str) -> Iterator[tuple[int, str, int]]:
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        pos = 0
        for i, line in enumerate(f, 1):
            pos += len(line)
            yield i, line.rstrip("\n"), pos


class _Parser:
    def __init__(self, path: str, fields: list[str] | None, zone: tzinfo) -> None:
        self.path = path
        self.zone = zone
        self.cols: list[str] | None = None
        if fields:
            self._set_columns(fields, path, 0)

    def _set_columns(self, names: list[str], path: str, line: int) -> None:
        names = [_header_name(n) for n in names]
        missing = [n for n in ("timestamp", "utilization.gpu") if n not in names]
        if missing:
            where = f"{path}:{line}" if line else "--fields"
            raise ImportError_(f"{where}: the log has no {' and no '.join(missing)} field",
                               hint="gpu-audit needs at least --query-gpu=timestamp,utilization.gpu")
        self.cols = names

    def parse(self, lineno: int, line: str) -> dict[str, Any] | None:
        """A row dict, None for a line to skip (blank, header); raises ValueError for a bad line."""
        if not line.strip():
            return None
        parts = [p.strip() for p in line.split(",")]
        if self.cols is None:
            if not any(_header_name(p) == "timestamp" or _header_name(p) == "utilization.gpu" for p in parts):
                raise ImportError_(f"{self.path}:{lineno}: no header line, and no --fields",
                                   hint="for logs written with --format=csv,noheader, give --fields timestamp,uuid,utilization.gpu,...")
            self._set_columns(parts, self.path, lineno)
            return None
        if [_header_name(x) for x in parts] == self.cols:
            return None  # a repeated header (a restarted `nvidia-smi -l` appending to the same file)
        if len(parts) != len(self.cols):
            raise ValueError(f"{len(parts)} fields, expected {len(self.cols)}")
        row: dict[str, Any] = {}
        for name, raw in zip(self.cols, parts):
            if name == "timestamp":
                row["ts"] = self._ts(raw)
                continue
            spec = FIELDS.get(name)
            if spec is None or raw in NA:
                continue
            col, kind = spec
            if col in row:
                continue  # the first of several aliases wins (power.draw before .average and .instant)
            if kind == "str":
                row[col] = raw
            elif kind == "bool":
                row[col] = raw.lower() == "enabled"
            elif kind == "hex":
                row[col] = int(raw, 16) if raw.lower().startswith("0x") else int(raw)
            else:
                m = _NUM.match(raw)
                if not m:
                    raise ValueError(f"{name}: cannot read {raw!r}")
                v = float(m.group(1))
                if kind == "mem":
                    row[col] = int(v * _MIB[m.group(2)])
                elif kind == "int":
                    row[col] = int(v)
                elif kind == "pct" and not 0 <= v <= 100:
                    raise ValueError(f"{name}: {raw} is outside 0-100 %")
                else:
                    row[col] = v
        return row

    def _ts(self, raw: str) -> float:
        for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
            try:
                return datetime.strptime(raw, fmt).replace(tzinfo=self.zone).timestamp()
            except ValueError:
                continue
        raise ValueError(f"timestamp: cannot read {raw!r}")


def _key(row: dict[str, Any]) -> str:
    if row.get("uuid"):
        return row["uuid"]
    if row.get("pci"):
        return f"nvidia-smi:pci:{row['pci']}"
    return f"nvidia-smi:index:{row.get('index', 0)}"


def _scan(path: str, fields: list[str] | None, zone: tzinfo, result: ImportResult, strict: bool,
          progress: Callable[[int], None] | None) -> dict[str, list[int]]:
    """Pass 1: check every line; return each series' instants (µs), in file order."""
    p = _Parser(path, fields, zone)
    times: dict[str, list[int]] = {}
    for lineno, line, pos in _lines(path):
        try:
            row = p.parse(lineno, line)
        except ValueError as e:
            if strict:
                raise ImportError_(f"{path}:{lineno}: {e}") from None
            result.bad += 1
            if len(result.bad_lines) < 5:
                result.bad_lines.append(f"{path}:{lineno}: {e}")
            continue
        if progress and lineno % 4096 == 0:
            progress(pos)
        if row is None:
            continue
        times.setdefault(_key(row), []).append(to_us(row["ts"]))
    if p.cols is None:
        raise ImportError_(f"{path}: empty log: no header and no rows")
    return times


def import_nvidia_smi(paths: list[str], out: str, host: str, tz: str | None = None, fields: str | None = None,
                      interval_s: float | None = None, strict: bool = False,
                      progress: Callable[[str, int, int], None] | None = None) -> ImportResult:
    """Import the logs into the store at ``out`` for ``host``. Each series is sorted by time and each
    instant kept once (sink.series_times); rows the store already holds are skipped. Raises
    NothingImported when no row was stored."""
    import numpy as np

    from gpu_audit.store.writer import check_writable

    from gpu_audit.store.layout import check_host

    check_interval(interval_s)
    check_host(host)
    zone, zone_name = _zone(tz)
    result = ImportResult(files=list(paths), zone=zone_name)
    field_list = [f.strip() for f in fields.split(",")] if fields else None
    sizes = {}
    for path in paths:
        if not os.path.isfile(path):
            raise ImportError_(f"file not found: {path}")
        sizes[path] = os.path.getsize(path)
    check_writable(out)
    total = 2 * sum(sizes.values())
    done = 0

    def tick(path: str, pos: int) -> None:
        if progress:
            progress(path, done + pos, total)

    plan: dict[str, dict[str, tuple[Any, Any, Any]]] = {}
    for path in paths:  # pass 1 over every file before anything is written (strict stops here)
        times = _scan(path, field_list, zone, result, strict, lambda pos, p=path: tick(p, pos))
        plan[path] = {}
        for k, ts in times.items():
            uniq, dt, dups, nominal = series_times(np.asarray(ts, dtype=np.int64), interval_s)
            result.tally.duplicate_instants += dups
            result.single_sample_series += nominal == 0.0
            plan[path][k] = (uniq, dt, np.zeros(len(uniq), dtype=bool))
        done += sizes[path]
    stored = StoredKeys(out, "samples", host)
    writer = StoreWriter(out, host)
    for path in paths:
        p = _Parser(path, field_list, zone)
        for lineno, line, pos in _lines(path):
            try:
                row = p.parse(lineno, line)
            except ValueError:
                continue  # counted in pass 1
            if row is None:
                continue
            k = _key(row)
            uniq, dt, emitted = plan[path][k]
            t_us = to_us(row.pop("ts"))
            i = int(np.searchsorted(uniq, t_us))
            if emitted[i]:
                continue  # a duplicate instant of this series in the file: counted in pass 1
            emitted[i] = True
            ts = datetime.fromtimestamp(t_us / 1e6, tz=timezone.utc)
            if stored.has(k, ts.strftime("%Y-%m-%d"), t_us):
                result.tally.already_stored += 1
                continue
            row.pop("pci", None)
            writer.add("samples", {**row, "ts": ts, "host": host, "uuid": k, "interval_s": float(dt[i]), "source": "nvidia-smi"})
            result.rows += 1
            if writer.pending("samples") >= FLUSH_ROWS:
                writer.flush()
            if progress and lineno % 4096 == 0:
                tick(path, pos)
        done += sizes[path]
        result.series += len(plan[path])
    writer.flush()
    result.tally.rows = result.rows
    result.tally.rejected = result.bad
    result.tally.first_rejection = result.bad_lines[0] if result.bad_lines else ""
    if not result.rows:
        raise result.tally.nothing_stored(", ".join(paths))
    return result
