"""Compaction: many small flush files of one (table, host, date) become one file.

The new file is written completely (atomic rename) before the small ones are removed, so a crash
at any point leaves either the old files or the new one readable — never a gap. A crash between
the rename and the removals leaves both, which a reader would count twice; the compacted file's
name records the files it replaced (``.sources`` beside it) so that the next compaction finishes
the removal before doing anything else.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from gpu_audit.store.layout import is_data_file
from gpu_audit.store.schema import TABLES, with_version
from gpu_audit.store.writer import write_parquet_atomic


def _finish(folder: str) -> None:
    for name in os.listdir(folder):
        if name.endswith(".sources"):
            with open(os.path.join(folder, name)) as f:
                for src in json.load(f):
                    try:
                        os.unlink(os.path.join(folder, src))
                    except FileNotFoundError:
                        pass
            os.unlink(os.path.join(folder, name))


def compact_partition(folder: str, table: str) -> str | None:
    """Merge every data file in ``folder`` (one table, host and date) into one; return its path."""
    _finish(folder)
    files = sorted(n for n in os.listdir(folder) if is_data_file(n) and not n.startswith("compact-"))
    olds = sorted(n for n in os.listdir(folder) if is_data_file(n) and n.startswith("compact-"))
    if len(files) + len(olds) <= 1:
        return None
    parts = [pq.read_table(os.path.join(folder, n)) for n in olds + files]
    schema = with_version(TABLES[table])
    data = pa.concat_tables([p.select([c for c in schema.names if c in p.column_names]) for p in parts], promote_options="default")
    keys = [(k, "ascending") for k in ("host", "uuid", "endpoint", "ts") if k in data.column_names]
    data = data.sort_by(keys).cast(schema) if data.schema.names == schema.names else data.sort_by(keys)
    name = f"compact-{len(os.listdir(folder))}-{os.getpid()}.parquet"
    path = os.path.join(folder, name)
    marker = os.path.join(folder, f".{name}.sources")
    with open(marker, "w") as f:
        json.dump(olds + files, f)
    write_parquet_atomic(data, path)
    os.replace(marker, os.path.join(folder, f"{name}.sources"))
    _finish(folder)
    return path


STALE_S = 3600.0  # a temp or probe file older than this belongs to a writer that died


def remove_stale(folder: str, now: float | None = None) -> int:
    """Remove temp files (``.*.tmp``) and write probes (``.probe-*``) older than an hour from
    ``folder``: a killed or disk-full writer leaves them; no reader ever reads them."""
    import time

    now = time.time() if now is None else now
    n = 0
    for name in os.listdir(folder):
        if name.startswith(".") and (name.endswith(".tmp") or name.startswith(".probe-")):
            path = os.path.join(folder, name)
            try:
                if now - os.path.getmtime(path) > STALE_S:
                    os.unlink(path)
                    n += 1
            except FileNotFoundError:
                pass
    return n


def compact_store(root: str, tables: tuple[str, ...] = tuple(TABLES)) -> list[str]:
    """Compact every partition of ``root``, and remove stale temp and probe files. A store that
    cannot be written (read-only, disk full) is one line, never a traceback."""
    from gpu_audit.store.writer import StoreError

    try:
        return _compact_store(root, tables)
    except OSError as e:
        raise StoreError(f"cannot compact {getattr(e, 'filename', None) or root}: {e.strerror or e}") from None


def _compact_store(root: str, tables: tuple[str, ...]) -> list[str]:
    out = []
    if os.path.isdir(root):
        remove_stale(root)
    for table in tables:
        base = os.path.join(root, table)
        if not os.path.isdir(base):
            continue
        for host in sorted(os.listdir(base)):
            for date in sorted(os.listdir(os.path.join(base, host))):
                remove_stale(os.path.join(base, host, date))
                p = compact_partition(os.path.join(base, host, date), table)
                if p:
                    out.append(p)
    return out
