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

from gpu_audit.errors import GpuAuditError

TOKENS = pa.schema([
    ("ts", pa.timestamp("us", tz="UTC")),
    ("model", pa.string()),
    ("host", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
])


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


def _record(r: dict[str, Any]) -> tuple[datetime, str, str, int, int]:
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
    return (_ts(when), model, host, _count(usage.get("prompt_tokens"), "prompt_tokens"),
            _count(usage.get("completion_tokens"), "completion_tokens"))


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


def _rows_parquet(path: str) -> Iterable[tuple[int, Any]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    for i, row in enumerate(t.to_pylist(), 1):
        yield i, row


READERS = {".jsonl": _rows_jsonl, ".ndjson": _rows_jsonl, ".json": _rows_jsonl, ".csv": _rows_csv, ".parquet": _rows_parquet}


def load_tokens(paths: list[str], strict: bool = False, max_examples: int = 5) -> TokenLog:
    cols: dict[str, list[Any]] = {n: [] for n in TOKENS.names}
    log = TokenLog(table=TOKENS.empty_table(), files=list(paths))
    for path in paths:
        ext = os.path.splitext(path)[1].lower()
        reader = READERS.get(ext)
        if reader is None:
            raise TokenLogError(f"{path}: unknown token log format {ext or '(no extension)'!r}",
                                hint="use .jsonl, .csv or .parquet")
        if not os.path.exists(path):
            raise TokenLogError(f"token log not found: {path}")
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
    log.table = pa.Table.from_pydict(cols, schema=TOKENS)
    return log
