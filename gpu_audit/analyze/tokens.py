"""Token logs: one record per request, as JSONL, CSV or Parquet.

Fields: ``timestamp`` (ISO 8601, naive = UTC, or epoch seconds), ``model``, ``host``,
``prompt_tokens``, ``completion_tokens``; optional ``gpu_uuid``, ``request_id``, ``latency_ms``.
A JSON record may instead carry an OpenAI-style body: ``created`` (epoch seconds), ``model``,
``host`` and ``usage: {prompt_tokens, completion_tokens}``; ``*_tokens_details`` are ignored.

Bad records are counted with their line numbers (the first few are shown); ``strict`` makes the
first one an error.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from gpu_audit.errors import GpuAuditError

# Few models, hosts and GPUs across millions of requests: their strings are dictionary-encoded.
LABEL = pa.dictionary(pa.int32(), pa.string())
TOKENS = pa.schema([
    ("ts", pa.timestamp("us", tz="UTC")),
    ("model", LABEL),
    ("host", LABEL),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("gpu_uuid", LABEL),
])
LABELS = ("model", "host", "gpu_uuid")


class TokenLogError(GpuAuditError):
    pass


@dataclass
class TokenLog:
    table: pa.Table
    files: list[str] = field(default_factory=list)
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)  # "file:line: why"


def _ts(v: Any) -> datetime:
    if isinstance(v, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(float(v), tz=timezone.utc)
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    s = str(v).strip()
    try:
        return datetime.fromtimestamp(float(s), tz=timezone.utc)
    except ValueError:
        pass
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or v is None or v == "":
        raise ValueError(f"{name} missing")
    n = float(v)
    if n < 0 or n != int(n):
        raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
    return int(n)


def _record(r: dict[str, Any]) -> tuple[datetime, str, str, int, int, str | None]:
    if not isinstance(r, dict):
        raise ValueError("not an object")
    usage = r.get("usage") if isinstance(r.get("usage"), dict) else r
    when = r.get("timestamp", r.get("created"))
    if when is None:
        raise ValueError("no timestamp or created")
    model, host = r.get("model"), r.get("host")
    if not model or not isinstance(model, str):
        raise ValueError("no model")
    if not host or not isinstance(host, str):
        raise ValueError("no host")
    gpu = r.get("gpu_uuid")
    return (_ts(when), model, host, _count(usage.get("prompt_tokens"), "prompt_tokens"),
            _count(usage.get("completion_tokens"), "completion_tokens"), str(gpu) if gpu else None)


def _rows_jsonl(path: str) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, ValueError(f"not JSON ({e.msg})")


def _rows_csv(path: str) -> Iterable[tuple[int, Any]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        need = {"model", "host", "prompt_tokens", "completion_tokens"}
        cols = set(reader.fieldnames or [])
        if not need <= cols or not ({"timestamp", "created"} & cols):
            missing = sorted((need - cols) | ({"timestamp"} if not ({"timestamp", "created"} & cols) else set()))
            raise TokenLogError(f"{path}:1: token log CSV lacks column(s) {', '.join(missing)}")
        for row in reader:
            yield reader.line_num, row


def _parquet(path: str, log: TokenLog, strict: bool, max_examples: int) -> pa.Table:
    """Parquet token logs, vectorised: millions of records load in seconds. Rows with a missing
    field or a negative count are rejected (row numbers from 1)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    when = "timestamp" if "timestamp" in names else "created" if "created" in names else None
    missing = [c for c in ("model", "host", "prompt_tokens", "completion_tokens") if c not in names]
    if when is None or missing:
        raise TokenLogError(f"{path}: token log lacks column(s) {', '.join(missing + ['timestamp'] * (when is None))}")
    wanted = [c for c in (when, "model", "host", "prompt_tokens", "completion_tokens", "gpu_uuid") if c in names]
    t = pq.read_table(path, columns=wanted, read_dictionary=[c for c in LABELS if c in names])
    ts = t[when]
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("us", tz="UTC")) if ts.type.tz else pc.assume_timezone(ts, "UTC").cast(pa.timestamp("us", tz="UTC"))
    elif pa.types.is_integer(ts.type) or pa.types.is_floating(ts.type):
        ts = pc.cast(pc.multiply(pc.cast(ts, pa.float64()), 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    else:
        try:
            ts = pa.chunked_array([pa.array([_ts(v) if v is not None else None for v in ts.to_pylist()], pa.timestamp("us", tz="UTC"))])
        except ValueError as e:
            raise TokenLogError(f"{path}: {when}: {e}") from None
    def label(name: str) -> pa.ChunkedArray:
        if name not in t.column_names:
            return pa.chunked_array([pa.nulls(t.num_rows, LABEL)])
        col = t[name]
        if col.type == LABEL:
            return col
        if pa.types.is_dictionary(col.type):  # a dictionary of another index or value type
            col = col.cast(col.type.value_type)
        return pc.dictionary_encode(col.cast(pa.string())).cast(LABEL)

    out = pa.table({"ts": ts, "model": label("model"), "host": label("host"),
                    "prompt_tokens": t["prompt_tokens"].cast(pa.int64()), "completion_tokens": t["completion_tokens"].cast(pa.int64()),
                    "gpu_uuid": label("gpu_uuid")}, schema=TOKENS)
    ok = pc.and_(pc.and_(pc.is_valid(out["ts"]), pc.and_(pc.is_valid(out["model"]), pc.is_valid(out["host"]))),
                 pc.and_(pc.greater_equal(pc.fill_null(out["prompt_tokens"], -1), 0), pc.greater_equal(pc.fill_null(out["completion_tokens"], -1), 0)))
    bad = pc.invert(ok)
    nbad = pc.sum(bad).as_py() or 0
    if not nbad:
        return out  # no copy of millions of good rows
    first = [i + 1 for i in pc.indices_nonzero(bad.combine_chunks())[:max_examples].to_pylist()]
    if strict:
        raise TokenLogError(f"bad token record at {path}:{first[0]}: a missing field or a negative token count")
    log.bad += nbad
    for i in first[: max_examples - len(log.bad_examples)]:
        log.bad_examples.append(f"{path}:{i}: a missing field or a negative token count")
    return out.filter(ok)


READERS = {".jsonl": _rows_jsonl, ".ndjson": _rows_jsonl, ".json": _rows_jsonl, ".csv": _rows_csv, ".parquet": None}


def load_tokens(paths: list[str], strict: bool = False, max_examples: int = 5) -> TokenLog:
    cols: dict[str, list[Any]] = {n: [] for n in TOKENS.names}
    log = TokenLog(table=TOKENS.empty_table(), files=list(paths))
    parquet: list[pa.Table] = []
    for path in paths:
        ext = os.path.splitext(path)[1].lower()
        if ext not in READERS:
            raise TokenLogError(f"{path}: unknown token log format {ext or '(no extension)'!r}",
                                hint="use .jsonl, .csv or .parquet")
        if not os.path.exists(path):
            raise TokenLogError(f"token log not found: {path}")
        reader = READERS[ext]
        if reader is None:
            try:
                parquet.append(_parquet(path, log, strict, max_examples))
            except pa.ArrowException as e:
                raise TokenLogError(f"{path}: not a readable Parquet token log: {e}") from None
            continue
        try:
            for line, raw in reader(path):
                try:
                    if isinstance(raw, Exception):
                        raise raw
                    rec = _record(raw)
                except (ValueError, TypeError, OverflowError, OSError) as e:
                    msg = f"{path}:{line}: {e}"
                    if strict:
                        raise TokenLogError(f"bad token record at {msg}") from None
                    log.bad += 1
                    if len(log.bad_examples) < max_examples:
                        log.bad_examples.append(msg)
                    continue
                for name, v in zip(TOKENS.names, rec):
                    cols[name].append(v)
        except OSError as e:
            raise TokenLogError(f"cannot read token log {path}: {e.strerror or e}") from None
        except pa.ArrowException as e:
            raise TokenLogError(f"{path}: not a readable Parquet file: {e}") from None
    rows = pa.table({n: pa.array(cols[n], pa.string() if n in LABELS else TOKENS.field(n).type) for n in TOKENS.names})
    rows = pa.table({n: pc.dictionary_encode(rows[n]).cast(LABEL) if n in LABELS else rows[n] for n in TOKENS.names}, schema=TOKENS)
    log.table = pa.concat_tables([rows, *parquet])
    return log
