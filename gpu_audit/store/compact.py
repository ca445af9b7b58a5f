"""Compaction: many small flush files of one (table, host, date) become one file.

The compacted file replaces its sources through the journal of ``gpu_audit.store.replace``: the
sources are removed only after the new file is durably written and read back, and a run that fails
(a full disk) or is killed is undone or finished by the next one, never taken as complete. Rows
that are identical in every column (a retried flush, a file copied into the partition) are kept
once; every other row, and every column (also one this version does not know, written by a newer
collector), goes through unchanged.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from gpu_audit.store.layout import is_data_file
from gpu_audit.store.replace import recover, replace_files
from gpu_audit.store.schema import TABLES, merge_tables


def compact_partition(folder: str, table: str) -> str | None:
    """Merge every data file in ``folder`` (one table, host and date) into one; return its path."""
    recover(folder)
    names = sorted(n for n in os.listdir(folder) if is_data_file(n))
    if len(names) <= 1:
        return None
    data = merge_tables([pq.read_table(os.path.join(folder, n)) for n in names], TABLES[table])
    data = unique_rows(data)
    keys = [(k, "ascending") for k in ("host", "uuid", "endpoint", "ts") if k in data.column_names]
    data = data.sort_by(keys)
    n = 0
    while any(x.startswith(f"compact-{n}-") for x in names):
        n += 1
    return replace_files(folder, names, data, f"compact-{n}-{os.getpid()}.parquet")


def unique_rows(t: pa.Table) -> pa.Table:
    """The rows of ``t`` with rows equal in every column kept once (first one kept, order kept)."""
    if t.num_rows < 2:
        return t
    import duckdb

    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in t.column_names)
    con = duckdb.connect()
    try:
        con.register("t", t.append_column("__row", pa.array(range(t.num_rows), pa.int64())))
        keep = con.sql(f"SELECT min(__row) AS i FROM t GROUP BY {cols}").to_arrow_table()["i"]
    finally:
        con.close()
    if len(keep) == t.num_rows:
        return t
    import pyarrow.compute as pc

    return t.take(pc.sort_indices(keep))


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
