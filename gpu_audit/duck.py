"""DuckDB connections for gpu-audit: UTC, a memory limit, a private spill folder, and DuckDB's errors
turned into one line at this edge (a damaged file in a store names the file)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from gpu_audit.errors import GpuAuditError


_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B|bytes)?\s*", re.IGNORECASE)


def connect(memory_limit: str = "1GB", threads: int | None = None, temp_dir: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB. What does not fit ``memory_limit`` spills to ``temp_dir`` (DuckDB's own
    default is a `.tmp` folder in the working directory, which a cron job's may not be)."""
    if not _SIZE.fullmatch(memory_limit):  # checked before it goes into SQL text
        raise GpuAuditError(f"--memory-limit: cannot read {memory_limit!r} as a size", hint="for example 1GB or 512MB")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    try:
        con.execute(f"SET memory_limit='{memory_limit.strip()}'")
    except duckdb.Error:
        raise GpuAuditError(f"--memory-limit: cannot read {memory_limit!r} as a size", hint="for example 1GB or 512MB") from None
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET enable_progress_bar=false")  # our own progress display, not DuckDB's
    if threads:
        con.execute(f"SET threads={int(threads)}")
    if temp_dir:
        con.execute("SET temp_directory='" + temp_dir.replace("'", "''") + "'")
    return con


def list_table(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, tuple[str, list]]) -> None:
    """The temp table ``name`` from Python lists: {column: (DuckDB type, values)}, all of one length.
    (Lists go in as parameters: an Arrow table built from Python objects would import pandas.)"""
    cols = ", ".join(f"unnest(${i + 1}::{t}[]) AS {c}" for i, (c, (t, _)) in enumerate(columns.items()))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {cols}", [v for _, v in columns.values()])


@contextmanager
def session(memory_limit: str = "1GB", threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with a private spill folder, both gone afterwards."""
    tmp = tempfile.mkdtemp(prefix="gpu-audit-duckdb-")
    try:
        con = connect(memory_limit, threads, tmp)
        try:
            yield con
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None  # Ctrl-C during a query: the CLI's one line and exit 130
        except RuntimeError as e:
            if "interrupted" in str(e).lower():
                raise KeyboardInterrupt from None
            raise
        except duckdb.Error as e:
            raise user_error(e, memory_limit) from None
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def user_error(e: duckdb.Error, memory_limit: str) -> GpuAuditError:
    """What went wrong, in one line: the memory limit, a file that cannot be read, or DuckDB's first line."""
    if isinstance(e, duckdb.OutOfMemoryException):
        return GpuAuditError(f"the analysis needs more memory than its limit ({memory_limit})",
                             hint="raise --memory-limit, narrow --since/--until, or roll up old days (gpu-audit rollup)")
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    m = re.search(r"'([^']+\.parquet)'", str(e))
    if m:
        reason = text.split("Error: ", 1)[-1].replace(f" '{m.group(1)}'", "").strip().rstrip(":")
        return GpuAuditError(f"cannot read {m.group(1)}: {reason}",
                             hint="a damaged or foreign file in the store: move it aside and run again")
    return GpuAuditError(f"DuckDB failed: {text}")
