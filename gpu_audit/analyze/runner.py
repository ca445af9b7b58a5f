"""Where the scan of the samples runs: DuckDB in this process (the default), or Spark
(``report --engine spark``, ``gpu_audit.analyze.spark``).

Both run the same SQL text, written once by ``gpu_audit.store.query`` in the runner's dialect
(``gpu_audit.store.dialect``); what differs is how a store's files become a FROM item, how a small
table is registered, and how the rows of the device-hours flagged as duplicated are repaired. A
runner's results land in the local DuckDB as tables (``into``), so that both engines hand the
analysis the same types, and the analysis after the scan runs there in SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb

from gpu_audit.analyze import reader
from gpu_audit.store import query
from gpu_audit.store.dialect import DUCK, Dialect

if TYPE_CHECKING:
    import pandas as pd


class DuckRunner:
    """The scan in this process's DuckDB connection."""

    d: Dialect = DUCK

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def df(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def into(self, name: str, sql: str) -> None:
        """The result of ``sql`` as the temp table ``name`` of the local DuckDB (the analysis after
        the scan reads it there; no frame is made)."""
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def samples_source(self, files: list[str], host_from_path: bool = False, covered_from: int | None = None) -> query.Source:
        return query.samples_source(self.con, files, host_from_path, covered_from)

    def rolled_up(self, rollup_files: list[str]) -> None:
        query.rolled_up_sql(self.con, rollup_files)

    def rollups_source(self, files: list[str]) -> str:
        return query.rollups_source(self.con, files)

    def table_files(self, roots: list[str], table: str, since: Any = None, until: Any = None) -> list[str]:
        return reader.table_files(roots, table, since, until)

    def local_table(self, files: list[str]) -> str:
        """A small table (engine counters) as a FROM item of the local DuckDB."""
        return query.read_sql(files)

    def table(self, files: list[str]) -> str:
        """A plain table's files (processes) as a FROM item."""
        return query.read_sql(files)

    def columns(self, files: list[str]) -> set[str]:
        return {r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {query.read_sql(files)}").fetchall()}

    def dedup(self, rows: str, flagged: list[tuple[str, str, int]]) -> query.Cleaned:
        return query.dedup(self.con, rows, flagged)

    def only_hours(self, rows: str, table: str) -> str:
        """The rows of the device-hours in ``table`` (host, uuid, hour)."""
        return f"SELECT * FROM ({rows}) SEMI JOIN {table} USING (host, uuid, hour)"

    def file_name(self, files: list[str], key: Any) -> str:
        return files[int(key)]

    def close(self) -> None:
        pass
