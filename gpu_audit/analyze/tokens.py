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
import time
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
    ("cached_tokens", pa.int64()),  # prompt tokens served from a prefix or prompt cache, where the log says
    ("reasoning_tokens", pa.int64()),  # completion tokens spent on reasoning, where the log says
    ("request_id", pa.string()),  # request_id, or the API's id (chatcmpl-..., msg_...): a request counted once
])
LABELS = ("model", "host", "gpu_uuid")


MAX_TOKENS = 10**9  # per request: beyond this a count is a logging error (and sums would overflow int64)
MAX_NAME = 200  # characters of a model, host or GPU name; longer names are cut with a marker and counted
CUT_MARK = "…[cut]"


class TokenLogError(GpuAuditError):
    pass


@dataclass
class TokenLog:
    table: pa.Table
    files: list[str] = field(default_factory=list)
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)  # "file:line: why"
    names_cut: int = 0  # distinct names longer than MAX_NAME, cut with CUT_MARK
    chunks_without_usage: int = 0  # streamed chunks that carry no usage (skipped, not errors)
    duplicate_requests: int = 0  # records whose request id an earlier record had (counted once)
    files_read_once: list[str] = field(default_factory=list)  # "b.jsonl: the same content as a.jsonl"


def epoch_seconds(v: float) -> float:
    """Epoch seconds from a number in seconds, milliseconds, microseconds or nanoseconds, told apart
    by size (seconds reach 1e11 only in the year 5138)."""
    a = abs(v)
    return v / 1e9 if a >= 1e17 else v / 1e6 if a >= 1e14 else v / 1e3 if a >= 1e11 else v


def _ts(v: Any) -> datetime:
    t = _ts_any(v)
    from gpu_audit.sources.sink import time_out_of_range

    why = time_out_of_range(t.timestamp())
    if why:
        raise ValueError(why)
    return t


def _ts_any(v: Any) -> datetime:
    if isinstance(v, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(epoch_seconds(float(v)), tz=timezone.utc)
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    s = str(v).strip()
    try:
        return datetime.fromtimestamp(epoch_seconds(float(s)), tz=timezone.utc)
    except ValueError:
        pass
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or v is None or v == "":
        raise ValueError(f"{name} missing")
    n = float(v)
    if not n == n or n < 0 or n != int(n):
        raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
    if n > MAX_TOKENS:
        raise ValueError(f"{name} {v!r} is more than {MAX_TOKENS:,} tokens for one request")
    return int(n)


class NoUsage(Exception):
    """A streamed chunk without usage (only the final chunk of a stream carries it): skipped, counted."""


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _opt(v: Any, name: str) -> int | None:
    return None if v is None else _count(v, name)


def _record(r: dict[str, Any]) -> tuple[Any, ...]:
    """One request from any usage shape: flat fields; an OpenAI-style body (``usage`` with
    ``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``, or
    DeepSeek's ``prompt_cache_hit_tokens``); an Anthropic-style ``usage`` (``input_tokens``,
    ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``: the prompt is
    their sum); OpenTelemetry GenAI span attributes (``gen_ai.request.model``,
    ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, flat or under ``attributes``)."""
    if not isinstance(r, dict):
        raise ValueError("not an object")
    attrs = r.get("attributes") if isinstance(r.get("attributes"), dict) else r
    if any(k.startswith("gen_ai.") for k in attrs):
        return _otel(r, attrs)
    usage = r.get("usage") if isinstance(r.get("usage"), dict) else None
    if usage is None and ("choices" in r or r.get("object") == "chat.completion.chunk") and "prompt_tokens" not in r:
        raise NoUsage()
    u = usage if usage is not None else r
    when = r.get("timestamp", r.get("created"))
    if when is None:
        raise ValueError("no timestamp or created")
    model, host = r.get("model"), r.get("host") or _DEFAULT_HOST
    if not model or not isinstance(model, str):
        raise ValueError("no model")
    if not host or not isinstance(host, str):
        raise ValueError("no host (give --tokens-host for a log from one server)")
    gpu = r.get("gpu_uuid")
    if "input_tokens" in u and "prompt_tokens" not in u:  # Anthropic: input_tokens excludes what the cache served
        read = _opt(u.get("cache_read_input_tokens"), "cache_read_input_tokens") or 0
        made = _opt(u.get("cache_creation_input_tokens"), "cache_creation_input_tokens") or 0
        prompt = _count(u.get("input_tokens"), "input_tokens") + read + made
        completion = _count(u.get("output_tokens"), "output_tokens")
        cached, reasoning = (read if "cache_read_input_tokens" in u else None), None
    else:
        prompt, completion = _count(u.get("prompt_tokens"), "prompt_tokens"), _count(u.get("completion_tokens"), "completion_tokens")
        cached = _opt(_get(u, "prompt_tokens_details", "cached_tokens"), "cached_tokens")
        if cached is None:
            cached = _opt(u.get("prompt_cache_hit_tokens", u.get("cached_tokens")), "cached_tokens")
        reasoning = _opt(_get(u, "completion_tokens_details", "reasoning_tokens"), "reasoning_tokens")
        if reasoning is None:
            reasoning = _opt(u.get("reasoning_tokens"), "reasoning_tokens")
    return (_ts(when), model, host, prompt, completion, str(gpu) if gpu else None, cached, reasoning, _request_id(r))


def _request_id(r: dict[str, Any]) -> str | None:
    v = next((r[k] for k in ("request_id", "id", "span_id", "spanId") if r.get(k) not in (None, "")), None)
    return None if v is None or isinstance(v, (dict, list, bool)) else str(v)[:200]


def _otel(r: dict[str, Any], a: dict[str, Any]) -> tuple[Any, ...]:
    model = a.get("gen_ai.request.model") or a.get("gen_ai.response.model")
    if not model or not isinstance(model, str):
        raise ValueError("no gen_ai.request.model")
    when = next((v for v in (r.get("timestamp"), r.get("start_time"), r.get("startTimeUnixNano"), r.get("start_time_unix_nano"),
                             r.get("created")) if v is not None), None)
    if when is None:
        raise ValueError("no timestamp or start time")
    host = r.get("host") or a.get("host.name") or _get(r, "resource", "host.name") or _DEFAULT_HOST
    if not host or not isinstance(host, str):
        raise ValueError("no host (host, or the resource attribute host.name)")
    cached = _opt(a.get("gen_ai.usage.cache_read_input_tokens", a.get("gen_ai.usage.cached_tokens")), "cached_tokens")
    reasoning = _opt(a.get("gen_ai.usage.reasoning_tokens"), "reasoning_tokens")
    return (_ts(when), model, host, _count(a.get("gen_ai.usage.input_tokens"), "gen_ai.usage.input_tokens"),
            _count(a.get("gen_ai.usage.output_tokens"), "gen_ai.usage.output_tokens"), r.get("gpu_uuid"), cached, reasoning,
            _request_id(r))


def _rows_jsonl(path: str) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, ValueError(f"not JSON ({e.msg})")
            except RecursionError:
                yield i, ValueError("not a request record (nested too deeply)")


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


def _to_ts(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp column (naive = UTC), epoch seconds, or strings (ISO 8601 or epoch seconds) as UTC
    microseconds. Raises ValueError for a string it cannot read."""
    utc = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(col.type):
        return col.cast(utc) if col.type.tz else pc.assume_timezone(col, "UTC").cast(utc)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        # seconds, or milliseconds/microseconds/nanoseconds told apart by size (epoch_seconds); rounded to
        # the microsecond as datetime.fromtimestamp rounds (a float's digits beyond it do not cast)
        x = pc.cast(col, pa.float64())
        a = pc.abs(x)
        scale = pc.if_else(pc.greater_equal(a, 1e17), 1e-3, pc.if_else(pc.greater_equal(a, 1e14), 1.0,
                           pc.if_else(pc.greater_equal(a, 1e11), 1e3, 1e6)))
        us = pc.round(pc.multiply(x, scale))
        most = pc.max(pc.abs(us)).as_py()
        if most is not None and most > 2.5e17:  # beyond the year 9999
            raise ValueError("epoch time out of range")
        return pc.cast(us, pa.int64()).cast(utc)
    if pa.types.is_null(col.type):
        return pa.chunked_array([pa.nulls(len(col), utc)])
    return pa.chunked_array([pa.array([_ts(v) if v is not None else None for v in col.to_pylist()], utc)])


def _label(col: pa.ChunkedArray | None, n: int) -> pa.ChunkedArray:
    if col is None:
        return pa.chunked_array([pa.nulls(n, LABEL)])
    if col.type == LABEL:
        return col
    if pa.types.is_dictionary(col.type):  # a dictionary of another index or value type
        col = col.cast(col.type.value_type)
    return pc.dictionary_encode(col.cast(pa.string())).cast(LABEL)


def _counts(col: Any) -> Any:
    """Token counts as int64; a count that int64 cannot hold (a uint64 or double beyond it) reads as -1:
    rejected with the other bad rows, never an overflow."""
    if pa.types.is_integer(col.type) and col.type.bit_width <= 32 or col.type == pa.int64():
        return col.cast(pa.int64())
    x = pc.cast(col, pa.float64()) if not pa.types.is_null(col.type) else col
    if pa.types.is_null(x.type):
        return x.cast(pa.int64())
    fits = pc.and_(pc.less_equal(pc.abs(x), 9.0e18), pc.equal(x, pc.floor(x)))
    return pc.cast(pc.if_else(fits, x, -1.0), pa.int64())


def _tokens_table(ts: pa.ChunkedArray, model: Any, host: Any, prompt: Any, completion: Any, gpu: Any,
                  cached: Any = None, reasoning: Any = None, request_id: Any = None) -> tuple[pa.Table, pa.ChunkedArray]:
    """The token table and its mask of good rows (a time from 2000-01-01 to tomorrow, a model, a
    host, counts >= 0)."""
    n = len(ts)
    if _DEFAULT_HOST is not None:  # --tokens-host: records without a host are that host's
        host = pc.fill_null(host.cast(pa.string()) if host is not None and pa.types.is_dictionary(host.type) else host, _DEFAULT_HOST) \
            if host is not None else pa.chunked_array([pa.array([_DEFAULT_HOST] * n, pa.string())])
    out = pa.table({"ts": ts, "model": _label(model, n), "host": _label(host, n), "prompt_tokens": _counts(prompt),
                    "completion_tokens": _counts(completion), "gpu_uuid": _label(gpu, n),
                    "cached_tokens": _counts(cached) if cached is not None else pa.nulls(n, pa.int64()),
                    "reasoning_tokens": _counts(reasoning) if reasoning is not None else pa.nulls(n, pa.int64()),
                    "request_id": _ids(request_id, n)}, schema=TOKENS)
    def count_ok(c: str) -> Any:
        v = pc.fill_null(out[c], -1)
        return pc.and_(pc.greater_equal(v, 0), pc.less_equal(v, MAX_TOKENS))

    from gpu_audit.sources.sink import EARLIEST

    lo = pa.scalar(int(EARLIEST * 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(int((time.time() + 86400) * 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    in_range = pc.fill_null(pc.and_(pc.greater_equal(out["ts"], lo), pc.less_equal(out["ts"], hi)), False)
    ok = pc.and_(pc.and_(in_range, pc.and_(pc.is_valid(out["model"]), pc.is_valid(out["host"]))),
                 pc.and_(count_ok("prompt_tokens"), count_ok("completion_tokens")))
    return out, ok


def _ids(col: Any, n: int) -> Any:
    """Request ids as strings (a number is an id too), or nulls."""
    if col is None or pa.types.is_null(col.type):
        return pa.nulls(n, pa.string())
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_integer(col.type)):
        return pa.nulls(n, pa.string())
    return col.cast(pa.string())


def _id_column(t: pa.Table) -> Any:
    """The request id column of a table read whole: request_id, else id."""
    for c in ("request_id", "id"):
        if c in t.column_names:
            return t[c]
    return None


def _extras(t: pa.Table) -> tuple[Any, Any]:
    """The flat cached_tokens and reasoning_tokens columns, where a file has them (integers)."""
    out = []
    for c in ("cached_tokens", "reasoning_tokens"):
        col = t[c] if c in t.column_names else None
        out.append(col if col is not None and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) else None)
    return out[0], out[1]


PARQUET_BAD = "a missing field, a negative token count or a time before 2000 or after tomorrow"  # (or one over MAX_TOKENS)


def _parquet(path: str, log: TokenLog, strict: bool, max_examples: int) -> pa.Table:
    """Parquet token logs, vectorised: millions of records load in seconds. Rows with a missing
    field or a negative count are rejected (row numbers from 1)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    when = "timestamp" if "timestamp" in names else "created" if "created" in names else None
    missing = [c for c in ("model", "host", "prompt_tokens", "completion_tokens") if c not in names
               and not (c == "host" and _DEFAULT_HOST is not None)]
    if when is None or missing:
        raise TokenLogError(f"{path}: token log lacks column(s) {', '.join(missing + ['timestamp'] * (when is None))}")
    wanted = [c for c in (when, "model", "host", "prompt_tokens", "completion_tokens", "gpu_uuid", "cached_tokens", "reasoning_tokens",
                          "request_id", "id") if c in names]
    t = pq.read_table(path, columns=wanted, read_dictionary=[c for c in LABELS if c in names])
    try:
        ts = _to_ts(t[when])
    except ValueError as e:
        raise TokenLogError(f"{path}: {when}: {e}") from None
    out, ok = _tokens_table(ts, t["model"], t["host"] if "host" in names else None, t["prompt_tokens"], t["completion_tokens"],
                            t["gpu_uuid"] if "gpu_uuid" in names else None, *_extras(t), _id_column(t))
    bad = pc.invert(ok)
    nbad = pc.sum(bad).as_py() or 0
    if not nbad:
        return out  # no copy of millions of good rows
    first = [i + 1 for i in pc.indices_nonzero(bad.combine_chunks())[:max_examples].to_pylist()]
    if strict:
        raise TokenLogError(f"bad token record at {path}:{first[0]}: {PARQUET_BAD}")
    log.bad += nbad
    for i in first[: max_examples - len(log.bad_examples)]:
        log.bad_examples.append(f"{path}:{i}: {PARQUET_BAD}")
    return out.filter(ok)


def _whole(t: pa.Table, prompt: pa.ChunkedArray, completion: pa.ChunkedArray, cached: Any = None,
           reasoning: Any = None) -> pa.Table | None:
    """The token table of a file a vectorised reader took whole, or None (for the line reader) where a
    time cannot be read or any record would be rejected."""
    try:
        times = [_to_ts(t[c]) for c in ("timestamp", "created") if c in t.column_names]
    except ValueError:
        return None
    if not times:
        return None
    ts = times[0] if len(times) == 1 else pc.coalesce(*times)
    flat_cached, flat_reasoning = _extras(t)
    out, ok = _tokens_table(ts, t["model"], t["host"], prompt, completion, t["gpu_uuid"] if "gpu_uuid" in t.column_names else None,
                            cached if cached is not None else flat_cached, reasoning if reasoning is not None else flat_reasoning,
                            _id_column(t))
    return out if pc.all(ok).as_py() is not False else None


def _jsonl_fast(path: str) -> pa.Table | None:
    """A clean JSONL log read by pyarrow's JSON reader, vectorised (flat records and OpenAI-style
    ``usage`` bodies alike). None where the file needs the line-by-line reader: JSON that does not
    parse, a field whose type varies or is not what a record needs, or any record the line reader
    would reject (so that rejected records are named by their line)."""
    import pyarrow.json as pj

    try:
        t = pj.read_json(path)
    except (pa.ArrowException, OSError):
        return None
    names = set(t.column_names)
    usage = t["usage"] if "usage" in names and pa.types.is_struct(t["usage"].type) else None
    plain = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details",
             "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"}
    if names & {"choices", "object", "attributes"} or any(k.startswith("gen_ai.") for k in names) or (
            usage is not None and {usage.type.field(i).name for i in range(usage.type.num_fields)} - plain) or (
            "usage" in names and usage is None):
        return None  # streamed chunks, usage details, Anthropic or OpenTelemetry shapes: the line reader knows them

    def count(name: str) -> pa.ChunkedArray | None:
        top = t[name] if name in names else None
        nested = None
        if usage is not None and usage.type.get_field_index(name) >= 0:
            nested = pa.chunked_array([pc.struct_field(c, [usage.type.get_field_index(name)]) for c in usage.chunks],
                                      usage.type.field(name).type)
        if top is not None and nested is not None:  # a record with a usage body takes its counts from it
            if top.type != nested.type:
                return None
            return pc.if_else(pc.is_valid(usage), nested, top)
        return nested if nested is not None else top

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    labels = [t[c] for c in ("model", "host") if c in names]
    if (prompt is None or completion is None or len(labels) < 2
            or not all(pa.types.is_integer(c.type) for c in (prompt, completion))
            or not all(pa.types.is_string(c.type) for c in labels)
            or ("gpu_uuid" in names and not (pa.types.is_string(t["gpu_uuid"].type) or pa.types.is_null(t["gpu_uuid"].type)))):
        return None
    cached = _nested(usage, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = _nested(usage, "prompt_cache_hit_tokens")
    reasoning = _nested(usage, "completion_tokens_details", "reasoning_tokens")
    if any(c is not None and not (pa.types.is_integer(c.type) or pa.types.is_null(c.type)) for c in (cached, reasoning)):
        return None
    return _whole(t, prompt, completion, cached, reasoning)


def _nested(col: Any, *path: str) -> Any:
    """A field inside struct columns (``usage.prompt_tokens_details.cached_tokens``), or None."""
    for name in path:
        if col is None or not pa.types.is_struct(col.type) or col.type.get_field_index(name) < 0:
            return None
        i = col.type.get_field_index(name)
        col = pa.chunked_array([pc.struct_field(c, [i]) for c in col.chunks], col.type.field(i).type)
    return col


def _csv_fast(path: str) -> pa.Table | None:
    """A clean CSV log read by pyarrow's CSV reader, vectorised. None where the file needs the
    line-by-line reader: missing columns (it says which), counts that are not whole numbers, or any
    record it would reject (so that rejected records are named by their line)."""
    import pyarrow.csv as pcsv

    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            header = set(next(csv.reader(f), []))
    except OSError:
        return None
    need = {"model", "host", "prompt_tokens", "completion_tokens"}
    if not need <= header or not ({"timestamp", "created"} & header):
        return None
    wanted = [c for c in ("timestamp", "created", "model", "host", "prompt_tokens", "completion_tokens", "gpu_uuid", "request_id", "id")
              if c in header]
    text = {c: pa.string() for c in ("model", "host", "gpu_uuid", "request_id", "id")}  # a host named 123 is still a name
    try:
        t = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(include_columns=wanted, column_types=text,
                                                                    strings_can_be_null=True))
    except (pa.ArrowException, OSError):
        return None
    if not all(pa.types.is_integer(t[c].type) for c in ("prompt_tokens", "completion_tokens")):
        return None
    return _whole(t, t["prompt_tokens"], t["completion_tokens"])


READERS = {".jsonl": _rows_jsonl, ".ndjson": _rows_jsonl, ".json": _rows_jsonl, ".csv": _rows_csv, ".parquet": None}


def load_tokens(paths: list[str], strict: bool = False, max_examples: int = 5, default_host: str | None = None) -> TokenLog:
    """Token logs into one table. ``default_host`` is the host of records that name none (``--tokens-host``)."""
    global _DEFAULT_HOST
    _DEFAULT_HOST = default_host
    try:
        return _load_tokens(paths, strict, max_examples)
    finally:
        _DEFAULT_HOST = None


_DEFAULT_HOST: str | None = None  # --tokens-host while a load runs


def _load_tokens(paths: list[str], strict: bool = False, max_examples: int = 5) -> TokenLog:
    cols: dict[str, list[Any]] = {n: [] for n in TOKENS.names}
    log = TokenLog(table=TOKENS.empty_table(), files=list(paths))
    tables: list[pa.Table] = []  # vectorised reads: Parquet, and JSONL or CSV that pyarrow's readers take whole
    seen: dict[str, str] = {}  # real path or content hash -> the path first given
    for path in paths:
        first = _seen_before(path, seen)
        if first is not None:
            log.files_read_once.append(f"{path}: the same {'file' if os.path.realpath(path) in seen else 'content'} as {first}: read once")
            continue
        before = (len(cols["ts"]), sum(t.num_rows for t in tables), log.bad, log.chunks_without_usage)
        _read_one(path, cols, tables, log, strict, max_examples)
        if (len(cols["ts"]), sum(t.num_rows for t in tables), log.bad, log.chunks_without_usage) == before:
            raise TokenLogError(f"{path}: empty token log: no records", hint="give a log with one record per request (docs/report.md)")
    return _finish(cols, tables, log)


def _seen_before(path: str, seen: dict[str, str]) -> str | None:
    """The path given earlier for the same file (by real path) or the same bytes (by SHA-256)."""
    real = os.path.realpath(path)
    if real in seen:
        return seen[real]
    if not os.path.isfile(path):
        return None  # said by the reader
    from gpu_audit.sources.sink import file_sha256

    try:
        sha = file_sha256(path)
    except OSError:
        return None
    if sha in seen:
        return seen[sha]
    seen[real] = seen[sha] = path
    return None


def _read_one(path: str, cols: dict[str, list[Any]], tables: list[pa.Table], log: TokenLog, strict: bool, max_examples: int) -> None:
    """One token log into ``cols`` (records read line by line) or ``tables`` (read whole)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in READERS:
        raise TokenLogError(f"{path}: unknown token log format {ext or '(no extension)'!r}",
                            hint="use .jsonl, .csv or .parquet")
    if not os.path.exists(path):
        raise TokenLogError(f"token log not found: {path}")
    reader = READERS[ext]
    if reader in (_rows_jsonl, _rows_csv):
        fast = _jsonl_fast(path) if reader is _rows_jsonl else _csv_fast(path)
        if fast is not None:
            tables.append(fast)
            return
    if reader is None:
        try:
            tables.append(_parquet(path, log, strict, max_examples))
        except pa.ArrowException as e:
            raise TokenLogError(f"{path}: not a readable Parquet token log: {e}") from None
        return
    try:
        for line, raw in reader(path):
            try:
                if isinstance(raw, Exception):
                    raise raw
                rec = _record(raw)
            except NoUsage:
                log.chunks_without_usage += 1
                continue
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


def _finish(cols: dict[str, list[Any]], tables: list[pa.Table], log: TokenLog) -> TokenLog:
    rows = pa.table({n: pa.array(cols[n], pa.string() if n in LABELS else TOKENS.field(n).type) for n in TOKENS.names})
    rows = pa.table({n: pc.dictionary_encode(rows[n]).cast(LABEL) if n in LABELS else rows[n] for n in TOKENS.names}, schema=TOKENS)
    log.table, log.names_cut = cut_names(pa.concat_tables([rows, *tables]))
    log.table, log.duplicate_requests = once_per_request(log.table)
    return log


def once_per_request(t: pa.Table) -> tuple[pa.Table, int]:
    """Records with a request id that an earlier record had dropped (a log given twice under two
    names, a log that repeats a request): each request counts once. Records without an id all stay."""
    ids = t["request_id"]
    if ids.null_count == len(ids) or len(ids) < 2:
        return t, 0
    idx = pa.table({"id": ids, "i": pa.array(range(len(ids)), pa.int64())}).filter(pc.is_valid(ids))
    first = idx.group_by("id", use_threads=False).aggregate([("i", "min")])
    if first.num_rows == idx.num_rows:
        return t, 0
    keep = pc.or_(pc.is_null(ids), pc.is_in(pa.array(range(len(ids)), pa.int64()), value_set=first["i_min"]))
    return t.filter(keep), idx.num_rows - first.num_rows


def cut_names(t: pa.Table) -> tuple[pa.Table, int]:
    """Model, host and GPU names longer than MAX_NAME characters cut, with CUT_MARK (on the dictionaries
    only: millions of rows share a few names). Returns the table and how many distinct names were cut."""
    cut: set[str] = set()
    cols = {}
    for name in LABELS:
        chunks = []
        for ch in t[name].chunks:
            d = ch.dictionary
            long = pc.greater(pc.utf8_length(d), MAX_NAME)
            if pc.any(long).as_py():
                cut |= {v for v, x in zip(d.to_pylist(), long.to_pylist()) if x}
                d = pc.if_else(long, pc.binary_join_element_wise(pc.utf8_slice_codeunits(d, 0, MAX_NAME), CUT_MARK, ""), d)
                ch = pa.DictionaryArray.from_arrays(ch.indices, d)
            chunks.append(ch)
        cols[name] = pa.chunked_array(chunks, LABEL)
    if not cut:
        return t, 0
    return pa.table({n: cols.get(n, t[n]) for n in TOKENS.names}, schema=TOKENS), len(cut)
