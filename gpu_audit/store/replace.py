"""Replacing files in a partition without ever losing or doubling a row (compact, rollup).

One replacement is a small journal beside the files (docs/operations.md, "Maintenance"):

1. ``.replace-<id>.pending`` names the sources and the output, written and fsynced first.
2. The output is written to a temp file, fsynced, read back and checked (row count, every column),
   then renamed to its final name and the folder fsynced.
3. The journal is *committed*: renamed to ``.replace-<id>.commit`` (atomic) and the folder fsynced.
4. The sources are removed, then the journal.

A run killed or failing anywhere leaves one of two states, and ``recover`` (run first by every
compact and rollup) finishes each the only safe way:

- ``pending``: not done. Every source is still there (sources are removed only after the commit),
  so the output (if it was renamed) and any temp file are removed and the journal dropped: the
  partition is as before.
- ``commit``: done. The output was checked before the commit; if it is still there and readable with
  the rows the journal recorded, the remaining sources are removed. If it is not (someone moved it),
  nothing is removed: the sources stay and the journal is dropped.

Journals of older versions (``.compact-*.parquet.sources`` before the commit,
``compact-*.parquet.sources`` after) are read the same way.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from gpu_audit.store.writer import StoreError, write_parquet_atomic

PENDING, COMMIT = ".pending", ".commit"


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_journal(path: str, entry: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entry, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rows_if_readable(path: str) -> int | None:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException):
        return None


@dataclass(frozen=True)
class Recovered:
    rolled_back: int = 0  # replacements found unfinished and undone
    finished: int = 0  # replacements found committed whose sources were then removed


def recover(folder: str) -> Recovered:
    """Finish or undo every replacement a failed or killed run left in ``folder``."""
    back = done = 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".replace-") and name.endswith(PENDING):
            entry = _read(path)
            if entry is not None:
                _rollback(folder, entry)
            _unlink(path)
            back += 1
        elif name.startswith(".replace-") and name.endswith(COMMIT):
            entry = _read(path)
            if entry is not None:
                _finish(folder, entry)
            _unlink(path)
            done += 1
        elif name.startswith(".compact-") and name.endswith(".parquet.sources"):  # older version, before its commit
            srcs = _read(path) or []
            _rollback(folder, {"sources": srcs, "output": name[1:-len(".sources")]})
            _unlink(path)
            back += 1
        elif name.startswith("compact-") and name.endswith(".parquet.sources"):  # older version, committed
            srcs = _read(path) or []
            out = name[: -len(".sources")]
            _finish(folder, {"sources": srcs, "output": out, "rows": _rows_if_readable(os.path.join(folder, out))})
            _unlink(path)
            done += 1
    return Recovered(back, done)


def _read(path: str) -> dict | list | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # a journal cut short was written before anything else: nothing to undo


def _rollback(folder: str, entry: dict) -> None:
    """Undo a replacement that never committed: its sources are all still there, so its output
    (renamed or not) is a copy of their rows and goes."""
    out = entry.get("output")
    srcs = [s for s in entry.get("sources", []) if s != out]
    if out and all(os.path.exists(os.path.join(folder, s)) for s in srcs):
        _unlink(os.path.join(folder, out))
    if out:
        _unlink(os.path.join(folder, f".{out}.tmp"))


def _finish(folder: str, entry: dict) -> None:
    """Complete a committed replacement: remove the sources, but only while the output is there with
    the rows it was checked to hold."""
    out = entry.get("output")
    rows = entry.get("rows")
    got = _rows_if_readable(os.path.join(folder, out)) if out else None
    if got is None or (rows is not None and got != rows):
        return  # the output is gone or changed: keep every source
    for s in entry.get("sources", []):
        if s != out:
            _unlink(os.path.join(folder, s))
    _fsync_dir(folder)


def check_written(path: str, expect: pa.Table) -> None:
    """Read ``path`` back: its rows and columns must be those of ``expect``."""
    try:
        meta = pq.read_metadata(path)
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise StoreError(f"cannot read back {path}: {e}") from None
    if meta.num_rows != expect.num_rows or names != expect.column_names:
        raise StoreError(f"{path} did not read back as written ({meta.num_rows:,} rows, expected {expect.num_rows:,}): "
                         "the sources are kept")


def replace_files(folder: str, sources: list[str], data: pa.Table, output: str,
                  write: Callable[[pa.Table, str], None] = write_parquet_atomic) -> str:
    """Replace the files ``sources`` (names in ``folder``) by one file ``output`` holding ``data``,
    by the journal above. Returns the output's path. A failure anywhere raises StoreError and leaves
    the sources (and no output); a kill leaves a journal that the next ``recover`` undoes or finishes."""
    jid = secrets.token_hex(6)
    pending = os.path.join(folder, f".replace-{jid}{PENDING}")
    out_path = os.path.join(folder, output)
    entry = {"sources": sorted(sources), "output": output, "rows": data.num_rows}
    try:
        _write_journal(pending, entry)
    except OSError as e:
        _unlink(pending + ".tmp")
        _unlink(pending)
        raise StoreError(f"cannot write to {folder}: {e.strerror or e}") from None
    try:
        write(data, out_path)
        check_written(out_path, data)
        os.replace(pending, os.path.join(folder, f".replace-{jid}{COMMIT}"))
        _fsync_dir(folder)
    except (OSError, StoreError) as e:
        try:
            _rollback(folder, entry)
            _unlink(pending)
        except OSError:
            pass  # the pending journal stays: the next run undoes it
        if isinstance(e, StoreError):
            raise
        raise StoreError(f"cannot write {out_path}: {e.strerror or e}") from None
    try:
        _finish(folder, entry)
        _unlink(os.path.join(folder, f".replace-{jid}{COMMIT}"))
    except OSError as e:  # committed: the next run removes what is left
        raise StoreError(f"compacted into {out_path}, but could not remove the old files: {e.strerror or e} "
                         "(the next run finishes)") from None
    return out_path
