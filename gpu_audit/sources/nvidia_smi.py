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

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Iterator

from gpu_audit.errors import GpuAuditError
from gpu_audit.sources.sink import ImportLedger, bad_name, StoredKeys, Tally, check_interval, row_key, series_times, time_out_of_range, to_us
from gpu_audit.store.writer import StoreWriter

NA = {"", "[N/A]", "N/A", "[Not Supported]", "[Requested functionality has been deprecated]", "[Unknown Error]",
      "[GPU requires reset]", "[Insufficient Permissions]", "[Not Found]"}
_NUM = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(%|MiB|GiB|KiB|W|MHz|C)?$")
MOSTLY_BAD_MIN = 10  # bad lines before the 5 % rule applies: a few glitched lines are skipped and named
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
    time_formats: set[str] = field(default_factory=set)  # how the times were read: nvidia-smi's own, ISO 8601, epoch ...


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
    # utf-8-sig: a byte-order mark (Windows editors, PowerShell's Out-File) is not part of the header
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as f:
        pos = 0
        for i, line in enumerate(f, 1):
            pos += len(line)
            yield i, line.rstrip("\n"), pos


class _Parser:
    def __init__(self, path: str, fields: list[str] | None, zone: tzinfo, at: float | None = None) -> None:
        self.path = path
        self.zone = zone
        self._last: float | None = None  # the previous line's time: tells the two passes through a repeated hour apart
        self.at = at  # --at: the time of a log without a timestamp field
        self.time_formats: set[str] = set()
        self.counts: dict[str, int] = {}
        self.step = 0.0
        self.cols: list[str] | None = None
        if fields:
            self._set_columns(fields, path, 0)

    def _set_columns(self, names: list[str], path: str, line: int) -> None:
        names = [_header_name(n) for n in names]
        missing = [n for n in ("timestamp", "utilization.gpu") if n not in names and not (n == "timestamp" and self.at is not None)]
        if missing:
            where = f"{path}:{line}" if line else "--fields"
            raise ImportError_(f"{where}: the log has no {' and no '.join(missing)} field",
                               hint="gpu-audit needs at least --query-gpu=timestamp,utilization.gpu "
                                    "(a log without a time: --at TIME, and --interval if it holds several samples per GPU)")
        self.cols = names

    def parse(self, lineno: int, line: str) -> dict[str, Any] | None:
        """A row dict, None for a line to skip (blank, header); raises ValueError for a bad line."""
        if not line.strip():
            return None
        parts = [p.strip() for p in line.split(",")]
        if self.cols is None:
            if not any(_header_name(p) in ("timestamp", "utilization.gpu") for p in parts):
                later = _header_later(self.path, lineno)
                if later:  # several tools' outputs in one file (a support bundle): say where the CSV is
                    raise ImportError_(f"{self.path}:{lineno}: this looks like a capture bundle (several nvidia-smi outputs in "
                                       f"one file); the --query-gpu CSV header is at line {later}",
                                       hint=f"extract that section (from line {later} to the next blank line) into its own file")
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
                if not 0 <= row[col] < 2**63:
                    raise ValueError(f"{name}: {raw} does not fit a 64-bit bit mask")
            else:
                m = _NUM.match(raw)
                if not m:
                    raise ValueError(f"{name}: cannot read {raw!r}")
                v = float(m.group(1))
                if not math.isfinite(v):
                    raise ValueError(f"{name}: cannot read {raw!r}")
                if kind == "mem":
                    row[col] = int(v * _MIB[m.group(2)])
                    if not 0 <= row[col] < 2**53:  # 8 PiB: beyond any GPU's memory, and beyond int64 at 1e26 MiB
                        raise ValueError(f"{name}: {raw} is not a GPU's memory")
                elif kind == "int":
                    row[col] = int(v)
                    if not -2**31 <= row[col] < 2**31:
                        raise ValueError(f"{name}: {raw} is out of range")
                elif kind == "pct" and not 0 <= v <= 100:
                    raise ValueError(f"{name}: {raw} is outside 0-100 %")
                else:
                    row[col] = v
        if "ts" not in row:  # no timestamp field: --at, then one --interval per further sample of the device
            k = _key(row)
            n = self.counts.get(k, 0)
            self.counts[k] = n + 1
            if n and not self.step:
                raise ImportError_(f"{self.path}:{lineno}: a second sample of {k} and no time in the log",
                                   hint="give --interval (the -l interval) with --at")
            row["ts"] = self.at + n * self.step
            self.time_formats.add("--at")
        return row

    def _ts(self, raw: str) -> float:
        """nvidia-smi's own format, ISO 8601 (naive: --tz), or epoch seconds or milliseconds (a
        hand-rolled ``$(date +%s),`` prefix); the formats seen are said in the summary."""
        for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
            try:
                t = self._local(datetime.strptime(raw, fmt))
                self.time_formats.add("nvidia-smi's own")
                return t
            except ValueError:
                continue
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            from gpu_audit.analyze.tokens import epoch_seconds

            v = float(raw)
            t = epoch_seconds(v)
            self.time_formats.add("epoch seconds" if t == v else "epoch milliseconds" if v >= 1e11 and v < 1e14 else "epoch")
            return t
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp: cannot read {raw!r}") from None
        self.time_formats.add("ISO 8601")
        return dt.timestamp() if dt.tzinfo else self._local(dt)

    def _local(self, naive: datetime) -> float:
        """A local time in the log's zone. The hour a daylight-saving change repeats (the autumn night)
        is read twice in a log: the second pass through it is the later one (fold 1), told from the
        order of the lines (a time earlier than the previous line's, where the later reading fits)."""
        first = naive.replace(tzinfo=self.zone).timestamp()
        second = naive.replace(tzinfo=self.zone, fold=1).timestamp()
        t = second if second != first and self._last is not None and first < self._last else first
        self._last = t
        return t


def _header_later(path: str, after: int) -> int | None:
    """The line of a --query-gpu CSV header further down the file (a capture bundle), or None."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if n > after and "," in line and any(_header_name(p.strip()) == "utilization.gpu" for p in line.split(",")):
                    return n
                if n > 100_000:
                    return None
    except OSError:
        return None
    return None


def _key(row: dict[str, Any]) -> str:
    if row.get("uuid"):
        return row["uuid"]
    if row.get("pci"):
        return f"nvidia-smi:pci:{row['pci']}"
    return f"nvidia-smi:index:{row.get('index', 0)}"


def _parser(path: str, fields: list[str] | None, zone: tzinfo, at: float | None, interval_s: float | None) -> _Parser:
    p = _Parser(path, fields, zone, at)
    p.step = interval_s or 0.0
    return p


def _scan(path: str, fields: list[str] | None, zone: tzinfo, result: ImportResult, strict: bool,
          progress: Callable[[int], None] | None, at: float | None = None, interval_s: float | None = None) -> dict[str, list[int]]:
    """Pass 1: check every line; return each series' instants (µs), in file order."""
    p = _parser(path, fields, zone, at, interval_s)
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
        why = time_out_of_range(row["ts"]) or (bad_name(str(row["uuid"]), "uuid") if row.get("uuid") else None)
        if why:
            raise ImportError_(f"{path}:{lineno}: {why}", hint="every sample needs a time between 2000-01-01 and tomorrow and a device id of at most 200 characters")
        times.setdefault(_key(row), []).append(to_us(row["ts"]))
    if p.cols is None:
        raise ImportError_(f"{path}: empty log: no header and no rows")
    result.time_formats |= p.time_formats
    return times


def import_nvidia_smi(paths: list[str], out: str, host: str, tz: str | None = None, fields: str | None = None,
                      interval_s: float | None = None, strict: bool = False,
                      progress: Callable[[str, int, int], None] | None = None, at: datetime | None = None) -> ImportResult:
    """Import the logs into the store at ``out`` for ``host``. Each series is sorted by time and each
    instant kept once (sink.series_times); rows the store already holds are skipped. Raises
    NothingImported when no row was stored."""
    import numpy as np

    from gpu_audit.store.writer import check_writable

    from gpu_audit.store.layout import check_host

    from gpu_audit.sources.nvidia_smi_xml import is_xml

    check_interval(interval_s)
    check_host(host)
    zone, zone_name = _zone(tz)
    at_s = at.timestamp() if at else None
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
    xml: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    csv_ledger, xml_ledger = ImportLedger(out, "nvidia-smi", host), ImportLedger(out, "nvidia-smi-xml", host)
    shas: dict[str, str] = {}
    for path in paths:  # pass 1 over every file before anything is written (strict stops here)
        sha, why = (xml_ledger if is_xml(path) else csv_ledger).already(path)
        if why:
            result.tally.skipped_files.append(why)
            continue
        shas[path] = sha
        if is_xml(path):
            xml[path] = _parse_xml(path, zone, result, at_s, interval_s)
            continue
        times = _scan(path, field_list, zone, result, strict, lambda pos, p=path: tick(p, pos), at_s, interval_s)
        plan[path] = {}
        for k, ts in times.items():
            uniq, dt, dups, nominal = series_times(np.asarray(ts, dtype=np.int64), interval_s)
            result.tally.duplicate_instants += dups
            result.single_sample_series += nominal == 0.0
            plan[path][k] = (uniq, dt, np.zeros(len(uniq), dtype=bool))
        done += sizes[path]
    good = sum(len(ts) for per in plan.values() for ts, _, _ in per.values())
    if result.bad >= MOSTLY_BAD_MIN and result.bad > 0.05 * (good + result.bad):  # a wrong shape, not a few glitches
        raise ImportError_(f"{result.bad:,} of {good + result.bad:,} lines fail a check (first: {result.bad_lines[0]}): nothing imported",
                           hint="an import stores nothing when over 5 % of its lines fail; check --fields, --tz and the log's format")
    stored = StoredKeys(out, "samples", host)
    procs = StoredKeys(out, "processes", host, ("uuid", "pid"))
    writer = StoreWriter(out, host)
    for path in paths:
        if path not in shas:
            continue
        before = result.rows
        if path in xml:
            _import_xml(path, *xml[path], interval_s, stored, procs, writer, result)
            xml_ledger.record(writer, shas[path], path, result.rows - before, "in-file <timestamp>")
            continue
        p = _parser(path, field_list, zone, at_s, interval_s)
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
            if not stored.claim(k, ts.strftime("%Y-%m-%d"), t_us):
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
        csv_ledger.record(writer, shas[path], path, result.rows - before, "--at" if at_s is not None else "in-file")
    writer.flush()
    result.tally.rows = result.rows
    result.tally.rejected = result.bad
    result.tally.first_rejection = result.bad_lines[0] if result.bad_lines else ""
    if not result.rows:
        raise result.tally.nothing_stored(", ".join(paths))
    return result


def _parse_xml(path: str, zone: tzinfo, result: ImportResult, at: float | None = None,
               step: float | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pass 1 for an XML file: parsed, and every time checked, before anything is written."""
    from gpu_audit.sources.nvidia_smi_xml import parse

    try:
        text = open(path, encoding="utf-8-sig", errors="replace").read()
    except OSError as e:
        raise ImportError_(f"cannot read {path}: {e.strerror}") from None
    try:
        samples, procs = parse(text, path, zone, at, step)
    except ValueError as e:
        raise ImportError_(str(e)) from None
    except GpuAuditError:
        raise
    for r in samples:
        why = time_out_of_range(r["ts"])
        if why:
            raise ImportError_(f"{path}: <timestamp>: {why}")
    result.time_formats.add("nvidia-smi XML <timestamp>" if at is None or "<timestamp>" in text else "--at")
    return samples, procs


def _import_xml(path: str, samples: list[dict[str, Any]], procs: list[dict[str, Any]], interval_s: float | None,
                stored: StoredKeys, proc_keys: StoredKeys, writer: StoreWriter, result: ImportResult) -> None:
    """One XML file (one dump or many appended): sorted per device, each instant once, rows already
    stored skipped; processes to the processes table, each (device, pid, instant) once."""
    import numpy as np

    from gpu_audit.sources.nvidia_smi_xml import ts_utc

    by_dev: dict[str, list[dict[str, Any]]] = {}
    for r in samples:
        by_dev.setdefault(r["uuid"], []).append(r)
    for uuid, rows in by_dev.items():
        ts = np.array([to_us(r["ts"]) for r in rows], dtype=np.int64)
        uniq, dt, dups, nominal = series_times(ts, interval_s)
        result.tally.duplicate_instants += dups
        result.single_sample_series += nominal == 0.0
        result.series += 1
        seen = set()
        for r in rows:
            t_us = to_us(r["ts"])
            if t_us in seen:
                continue
            seen.add(t_us)
            i = int(np.searchsorted(uniq, t_us))
            when = ts_utc(t_us / 1e6)
            if not stored.claim(uuid, when.strftime("%Y-%m-%d"), t_us):
                result.tally.already_stored += 1
                continue
            writer.add("samples", {**r, "ts": when, "host": writer.host, "interval_s": float(dt[i]), "source": "nvidia-smi-xml"})
            result.rows += 1
    for pr in procs:
        when = ts_utc(pr["ts"])
        if proc_keys.claim(row_key(pr.get("uuid"), pr.get("pid")), when.strftime("%Y-%m-%d"), to_us(pr["ts"])):
            writer.add("processes", {**pr, "ts": when, "host": writer.host})
