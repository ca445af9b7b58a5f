"""Crash-safe, partitioned Parquet writer.

Rows are buffered in columns (lists) per table. ``flush()`` splits them by UTC date and writes one
file per (table, date) under its final name only when complete: write a dot-prefixed temp file
beside it, fsync it, rename it, fsync the folder. A reader never sees half a file; a killed
collector loses at most the rows it had not flushed yet.

File names carry the host, the run's UTC start time, a run id (pid + random) and a sequence
number, so two runs on one host, or many hosts, never collide.
"""

from __future__ import annotations

import errno
import os
import secrets
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import encode_host, partition_dir
from gpu_audit.store.schema import TABLES, with_version


class StoreError(GpuAuditError):
    """The store cannot be written (permissions, disk full, not a folder)."""


def keep_pandas_out() -> None:
    """Stop pyarrow from importing pandas in this process (the collector's start-up and memory).

    pyarrow's lazy pandas shim imports pandas on the first ``pa.array()`` of Python objects when
    pandas is installed. With ``import pandas`` blocked for that first call, the shim records "no
    pandas" and never looks again for conversions from Python objects; ``to_pandas()`` still
    imports it on demand, so nothing else in the same process breaks.
    """
    import sys

    if "pandas" in sys.modules:
        return

    class _Refuse:
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> None:
            if name == "pandas" or name.startswith("pandas."):
                raise ImportError("pandas is kept out of the collector")
            return None

    sys.meta_path.insert(0, _Refuse)  # type: ignore[arg-type]
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_Refuse)  # type: ignore[arg-type]


def check_writable(root: str) -> None:
    """Fail early, in one line, when the store root cannot be created or written."""
    probe = os.path.join(root, f".probe-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        os.makedirs(root, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())  # a full disk fails here, not later
    except OSError as e:
        raise StoreError(f"cannot write to store {root!r}: {e.strerror or e}") from None
    finally:
        try:
            os.unlink(probe)  # never left behind, even when the write failed
        except OSError:
            pass


def write_text_atomic(text: str, path: str) -> None:
    """Write a text file (findings JSON, an HTML report) so that ``path`` is replaced only by a
    complete file: a failure leaves the previous one, and no temp file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None


class NameTaken(Exception):
    """A new data file's name is already in the store (``write_parquet_atomic(exclusive=True)``)."""


def write_parquet_atomic(table: pa.Table, path: str, exclusive: bool = False) -> None:
    """Write ``table`` to ``path`` so that ``path`` exists only when complete and durable. With
    ``exclusive`` (a new data file) an existing ``path`` is never replaced: ``NameTaken`` is raised
    and nothing is written (a file of another writer that drew the same name keeps its rows)."""
    folder, name = os.path.split(path)
    # a new file's temp name is its own (two writers of one name never share a temp file); a replaced
    # file's is fixed, so that the journal's recovery finds it (store/replace.py)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp" if exclusive else f".{name}.tmp")
    # Dictionary encoding for every column but the timestamp (delta-encoded): NVML values repeat.
    # Monotonic counters (ts, the energy counter) are delta-encoded, everything else dictionary-encoded.
    delta = [c for c in ("ts", "energy_mj") if c in table.column_names]
    dictionary = [f.name for f in table.schema if f.name not in delta]
    try:
        os.makedirs(folder, exist_ok=True)
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            compression_level=9,
            use_dictionary=dictionary,
            column_encoding={c: "DELTA_BINARY_PACKED" for c in delta} or None,
            write_statistics=True,
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)  # fails where the name is taken, where os.replace would overwrite
            except FileExistsError:
                os.unlink(tmp)
                raise NameTaken(path) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                if os.path.exists(path):  # a filesystem without hard links: checked, then renamed
                    os.unlink(tmp)
                    raise NameTaken(path) from None
                os.replace(tmp, path)
            else:
                try:
                    os.unlink(tmp)  # the file is in place: a temp name left behind is swept later (compact)
                except OSError:
                    pass
        else:
            os.replace(tmp, path)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        what = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise StoreError(f"cannot write {path}: {what}") from None


class StoreWriter:
    """Buffers rows of the store's tables for one host and one run, and flushes them to files."""

    def __init__(self, root: str, host: str, started: datetime | None = None) -> None:
        self.root = root
        self.host = host
        started = started or datetime.now(timezone.utc)
        self.run_id = f"{started:%Y%m%dT%H%M%SZ}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._buf: dict[str, dict[str, list[Any]]] = {t: self._empty(t) for t in TABLES}
        self.rows_written: dict[str, int] = {t: 0 for t in TABLES}
        self.files_written: list[str] = []

    @staticmethod
    def _empty(table: str) -> dict[str, list[Any]]:
        return {name: [] for name in TABLES[table].names}

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Buffer one row; columns the row lacks are null."""
        for name, col in self._buf[table].items():
            col.append(row.get(name))

    def pending(self, table: str | None = None) -> int:
        tables = [table] if table else list(self._buf)
        return sum(len(self._buf[t]["ts"]) for t in tables)

    def flush(self) -> list[str]:
        """Write every buffered row. On failure the rows not yet written stay buffered (retried next
        flush): a flush that wrote one date's file and then failed on the next (a disk full across
        midnight) never writes the first date's rows again."""
        written: list[str] = []
        try:
            for table, cols in self._buf.items():
                if cols["ts"]:
                    self._flush_table(table, cols, written)
        finally:
            self.files_written.extend(written)
        return written

    def _flush_table(self, table: str, cols: dict[str, list[Any]], written: list[str]) -> None:
        data = pa.Table.from_pydict(cols, schema=with_version(TABLES[table]))
        # Split by UTC date of ts; a flush rarely spans midnight, so this is usually one group.
        days = {t.strftime("%Y-%m-%d") for t in (min(cols["ts"]), max(cols["ts"]))}
        if len(days) == 1:
            groups = {days.pop(): data}
        else:
            import pyarrow.compute as pc

            day = pc.strftime(data["ts"], format="%Y-%m-%d")
            groups = {d: data.filter(pc.equal(day, d)) for d in sorted(set(day.to_pylist()))}
        left = list(groups)
        try:
            for date in list(left):
                part = groups[date]
                for _ in range(1000):  # two writers that drew the same run id: the next sequence number
                    self._seq += 1
                    name = f"{encode_host(self.host)[:60]}-{self.run_id}-{self._seq:05d}.parquet"
                    path = os.path.join(partition_dir(self.root, table, self.host, date), name)
                    try:
                        write_parquet_atomic(part, path, exclusive=True)
                        break
                    except NameTaken:
                        continue
                else:  # never in practice; the rows stay buffered, not counted as written
                    raise StoreError(f"cannot write {path}: 1,000 names in a row are taken by other files")
                written.append(path)
                self.rows_written[table] += part.num_rows
                left.remove(date)
        finally:
            if left:  # keep only what was not written
                rest = pa.concat_tables([groups[d] for d in left]).to_pydict()
                self._buf[table] = {name: list(rest[name]) for name in self._buf[table]}
            else:
                self._buf[table] = self._empty(table)
