"""The few words in which DuckDB's SQL and Spark SQL differ, for the SQL both engines run.

Every figure of the scan is written once (``gpu_audit.store.query``); the builders take a
``Dialect`` and write its spelling of a time in microseconds, a clock hour, a timestamp literal, a
type name and the file a row came from. Everything else they use (FILTER clauses, window
functions, GROUPING SETS, ``any_value``, ``bool_or``, ``try_cast``, ``ilike``, ``split_part``,
``regexp_extract``) means the same in both. NaN compares above every number in both engines, so a
range check rejects NaN the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str

    def epoch_us(self, col: str) -> str:
        """A timestamp as integer microseconds since 1970 (UTC)."""
        return f"epoch_us({col})" if self.name == "duckdb" else f"unix_micros({col})"

    def hour(self, col: str = "ts") -> str:
        """The clock hour (hours since 1970) of a timestamp, as an integer."""
        return f"{self.epoch_us(col)} // 3600000000" if self.name == "duckdb" else f"{self.epoch_us(col)} div 3600000000"

    def ts(self, iso: str) -> str:
        """A timestamp literal for an ISO 8601 time with its offset."""
        return f"TIMESTAMPTZ '{iso}'" if self.name == "duckdb" else f"TIMESTAMP '{iso}'"

    def type(self, duck_type: str) -> str:
        """A DuckDB type name in this dialect."""
        if self.name == "duckdb":
            return duck_type
        return {"TIMESTAMPTZ": "TIMESTAMP", "VARCHAR": "STRING", "INTEGER": "INT"}.get(duck_type, duck_type)

    def filename(self) -> str:
        """The path of the file a row was read from."""
        return "filename" if self.name == "duckdb" else "_metadata.file_path"


DUCK = Dialect("duckdb")
SPARK = Dialect("spark")
