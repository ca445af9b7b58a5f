"""``report --engine spark``: the scan of the samples as Spark SQL (docs/scale.md).

The same SQL text as the DuckDB engine (``gpu_audit.store.query``, in the Spark dialect) runs over
the same Parquet files, local or on ``s3a://``, ``hdfs://``, ``gs://`` or ``abfs://``: the per-(device,
hour) sums and their duplicate detection, the histograms behind the p95s, the MIG, namespace and pod
sums, the rollups and the per-process sums. What comes back to the driver is those sums (one row per
device-hour: 7.2M rows for 10,000 GPUs over 30 days), the rows of the few device-hours flagged as
duplicated or overlapping (repaired here by ``query.dedup`` in DuckDB and handed back to Spark, so
every later query reads the repaired rows), and the small tables (engine counters). Everything
after the hourly sums (prices, attribution, rules, renderers) runs here, unchanged.

pyspark is an optional extra (``pip install 'gpu-audit[spark]'``) and needs Java 17.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import duckdb
import pandas as pd
import pyarrow as pa

from gpu_audit.analyze import reader
from gpu_audit.errors import GpuAuditError
from gpu_audit.store import query
from gpu_audit.store.dialect import SPARK
from gpu_audit.store.layout import is_data_file

# Roots Spark reads where they are; report mirrors s3:// locally for both engines (store/remote.py).
IN_PLACE = ("s3a://", "hdfs://", "gs://", "abfs://", "abfss://", "wasbs://")
REMOTE = ("s3://", *IN_PLACE)  # roots listed through Hadoop's filesystem rather than the local one
# Cleaned rows handed back to Spark: every column of query.samples_sql, in one order on both sides.
CLEAN_COLUMNS = ("host", "uuid", "ts_us", *query.ROW_COLUMNS)
_SESSIONS: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}


class SparkUnavailable(GpuAuditError):
    pass


def parse_conf(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``--spark-conf k=v`` options as pairs; a malformed one is refused in one line."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GpuAuditError(f"--spark-conf {item!r}: expected KEY=VALUE", hint="for example --spark-conf spark.executor.memory=8g")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def session(master: str, conf: dict[str, str]) -> Any:
    """A Spark session for ``master`` (kept for this process: a JVM takes seconds to start)."""
    key = (master, tuple(sorted(conf.items())))
    if key in _SESSIONS:
        return _SESSIONS[key]
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable("--engine spark needs pyspark, which is not installed",
                               hint="pip install 'gpu-audit[spark]' (and Java 17: apt install openjdk-17-jre-headless)") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkUnavailable("--engine spark needs Java 17, and no java is on PATH (nor JAVA_HOME set)",
                               hint="apt install openjdk-17-jre-headless, or set JAVA_HOME")
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: no warning that the host name resolves to loopback
    b = SparkSession.builder.master(master).appName("gpu-audit")
    defaults = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.log.level": "ERROR", "spark.sql.execution.arrow.pyspark.enabled": "true"}
    if master.startswith("local"):
        defaults["spark.sql.shuffle.partitions"] = "8"  # 200 tasks per shuffle cost more than the work on one machine
    for k, v in {**defaults, **conf}.items():
        b = b.config(k, v)
    try:
        spark = b.getOrCreate()
    except Exception as e:  # the JVM did not start: Java missing or too old, or a bad master URL
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SparkUnavailable(f"--engine spark: Spark did not start ({first[:200]})",
                               hint="needs Java 17 (apt install openjdk-17-jre-headless) and a reachable --spark-master") from None
    spark.sparkContext.setLogLevel("ERROR")
    _SESSIONS[key] = spark
    return spark


def _uri(path: str) -> str:
    return path if "://" in path else "file://" + os.path.abspath(path)


def _local_path(uri: str) -> str:
    if uri.startswith("file:"):
        uri = uri[5:]
        while uri.startswith("//"):
            uri = uri[1:]
    return unquote(uri)


class SparkRunner:
    """The scan on Spark; the local DuckDB ``con`` converts results and repairs flagged rows."""

    d = SPARK

    def __init__(self, con: duckdb.DuckDBPyConnection, master: str = "local[*]", conf: dict[str, str] | None = None) -> None:
        self.con = con
        self.spark = session(master, conf or {})
        self._n = 0
        self._frames: dict[tuple[str, ...], Any] = {}

    # -- running SQL --------------------------------------------------------------------------
    def _sql(self, sql: str) -> Any:
        try:
            return self.spark.sql(sql)
        except Exception as e:
            raise _one_line(e) from None

    def arrow(self, sql: str) -> pa.Table:
        try:
            t = self._sql(sql).toArrow()
        except GpuAuditError:
            raise
        except Exception as e:
            raise _one_line(e) from None
        # Spark's decimal literals (0.0) come back as decimals: doubles, as DuckDB gives them
        return t.cast(pa.schema([pa.field(f.name, pa.float64()) if pa.types.is_decimal(f.type) else f for f in t.schema]))

    def df(self, sql: str) -> pd.DataFrame:
        """Spark's result through DuckDB's conversion to pandas: both engines hand the same types."""
        t = self.arrow(sql)
        self.con.register("gpu_audit_spark_result", t)
        try:
            return self.con.execute("SELECT * FROM gpu_audit_spark_result").df()
        finally:
            self.con.unregister("gpu_audit_spark_result")

    def into(self, name: str, sql: str) -> None:
        """Spark's result as the temp table ``name`` of the local DuckDB."""
        t = self.arrow(sql)
        self.con.register("gpu_audit_spark_result", t)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM gpu_audit_spark_result")
        finally:
            self.con.unregister("gpu_audit_spark_result")

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._sql(sql).collect()]

    def _view(self, frame: Any) -> str:
        self._n += 1
        name = f"gpu_audit_v{self._n}"
        frame.createOrReplaceTempView(name)
        return name

    def _read(self, files: list[str]) -> Any:
        key = tuple(files)
        if key not in self._frames:
            from pyspark.sql import functions as F

            try:
                frame = self.spark.read.option("mergeSchema", "true").parquet(*[_uri(f) for f in files])
            except Exception as e:
                raise _one_line(e, files[0]) from None
            self._frames[key] = frame.select("*", F.col("_metadata.file_path").alias("_gpu_audit_file"))
        return self._frames[key]

    # -- the store's tables as FROM items ------------------------------------------------------
    def table_files(self, roots: list[str], table: str, since: datetime | None = None, until: datetime | None = None) -> list[str]:
        local = [r for r in roots if not r.startswith(REMOTE)]
        files = reader.table_files(local, table, since, until) if local else []
        for root in roots:
            if root.startswith(REMOTE):
                files.extend(self._remote_files(root, table, since, until))
        return sorted(files)

    def _remote_files(self, root: str, table: str, since: datetime | None, until: datetime | None) -> list[str]:
        """A remote store's files, listed by Hadoop's filesystem (the one Spark reads them with)."""
        jvm = self.spark.sparkContext._jvm
        conf = self.spark.sparkContext._jsc.hadoopConfiguration()
        pattern = jvm.org.apache.hadoop.fs.Path(root.rstrip("/") + f"/{table}/host=*/date=*/*")
        try:
            found = pattern.getFileSystem(conf).globStatus(pattern) or []
        except Exception as e:
            raise _one_line(e, root) from None
        lo = (since - timedelta(days=1)).strftime("%Y-%m-%d") if since else None
        hi = until.strftime("%Y-%m-%d") if until else None
        out = []
        for st in found:
            p = str(st.getPath().toString())
            date = p.rsplit("/", 2)[-2][5:]
            if is_data_file(p.rsplit("/", 1)[-1]) and not (lo and date < lo) and not (hi and date > hi):
                out.append(p)
        return out

    def samples_source(self, files: list[str], host_from_path: bool = False, covered_from: int | None = None) -> query.Source:
        from gpu_audit.store.schema import SAMPLES

        have = self.columns(files)
        for col in query.REQUIRED:
            if col not in have:
                raise query.StoreFileError(f"cannot read {files[0]}: a samples file without the column {col!r}",
                                           hint="every samples file needs ts, uuid and interval_s (docs/store.md)")
        types = {f.name: f.dataType.simpleString() for f in self._read(files).schema.fields}
        for f in SAMPLES:
            if query.DUCK_TYPES[str(f.type)] in ("FLOAT", "DOUBLE", "INTEGER", "BIGINT") and types.get(f.name) == "string":
                raise query.StoreFileError(f"cannot read {files[0]}: column {f.name!r} is text, expected a number",
                                           hint="a damaged or foreign file in the store: move it aside and run again")
        cols = []
        for f in SAMPLES:
            if f.name == "host" and (host_from_path or "host" not in have):
                # the file's URI escapes the folder name's own escapes (host=n%2F1 is .../host=n%252F1/...): decoded twice
                from_path = "url_decode(url_decode(regexp_extract(_gpu_audit_file, '/host=([^/]+)/', 1)))"
                cols.append(f"coalesce({'`host`' if 'host' in have else 'NULL'}, {from_path}) AS host")
            elif f.name in have:
                cols.append(f"`{f.name}`")
            else:
                cols.append(f"CAST(NULL AS {SPARK.type(query.DUCK_TYPES[str(f.type)])}) AS `{f.name}`")
        cols.append("_gpu_audit_file AS file_index")
        select = ", ".join(cols)
        absent = {f.name for f in SAMPLES if f.name not in have and f.name != "host"}
        if covered_from is None or covered_from >= len(files):
            return query.Source(f"(SELECT {select} FROM {self._view(self._read(files))})", absent)
        plain, late = files[:covered_from], files[covered_from:]
        parts = [f"SELECT {select} FROM {self._view(self._read(plain))}"] if plain else []
        parts.append(f"""SELECT s.* FROM (SELECT {select} FROM {self._view(self._read(late))}) s
          LEFT ANTI JOIN rolled_up r ON r.host = s.host AND r.uuid = s.uuid
                                    AND unix_micros(s.ts) >= r.start_us AND unix_micros(s.ts) < r.end_us""")
        return query.Source("(" + " UNION ALL ".join(parts) + ")", absent)

    def rolled_up(self, rollup_files: list[str]) -> None:
        self._sql(f"""SELECT DISTINCT host, uuid, unix_micros(ts) AS start_us,
                             unix_micros(ts) + CAST(resolution_s * 1e6 AS BIGINT) AS end_us
                      FROM {self._view(self._read(rollup_files))}""").createOrReplaceTempView("rolled_up")

    def rollups_source(self, files: list[str]) -> str:
        from gpu_audit.store.schema import ROLLUPS

        have = self.columns(files)
        cols = [f"`{f.name}`" if f.name in have else f"CAST(NULL AS {SPARK.type(query.DUCK_TYPES[str(f.type)])}) AS `{f.name}`"
                for f in ROLLUPS]
        src = f"(SELECT {', '.join(cols)} FROM {self._view(self._read(files))})"
        if not query.several_per_partition(files):
            return src
        return f"""(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY host, uuid, ts, k8s_namespace
                                                        ORDER BY n DESC, dt_s DESC) AS _rn FROM {src} r) WHERE _rn = 1)"""

    def table(self, files: list[str]) -> str:
        return f"(SELECT * FROM {self._view(self._read(files))})"

    def local_table(self, files: list[str]) -> str:
        """A small table (engine counters) read by Spark and handed to the local DuckDB."""
        self._n += 1
        name = f"gpu_audit_local{self._n}"
        self.con.register(name, self.arrow(f"SELECT * FROM {self._view(self._read(files))}").drop_columns(["_gpu_audit_file"]))
        return name

    def columns(self, files: list[str]) -> set[str]:
        return {f.name for f in self._read(files).schema.fields} - {"_gpu_audit_file"}

    # -- the flagged device-hours ----------------------------------------------------------
    def dedup(self, rows: str, flagged: list[tuple[str, str, int]]) -> query.Cleaned:
        """Rows of flagged device-hours come to the driver, are repaired by the DuckDB engine's own
        ``query.dedup``, and go back to Spark, where they replace the raw rows of those hours."""
        if not flagged:
            return query.Cleaned(rows, {})
        hours = pa.table({"host": pa.array([h for h, _, _ in flagged], pa.string()), "uuid": pa.array([u for _, u, _ in flagged], pa.string()),
                          "hour": pa.array([hr for _, _, hr in flagged], pa.int64())})
        self.spark.createDataFrame(hours).createOrReplaceTempView("flagged_hours")
        raw = self.arrow(self.only_hours(rows, "flagged_hours"))
        self.con.register("gpu_audit_flagged_rows", raw)
        cleaned = query.dedup(self.con, "SELECT * FROM gpu_audit_flagged_rows", flagged)
        cols = ", ".join(CLEAN_COLUMNS)
        fixed = self.con.sql(f"SELECT {cols} FROM ({cleaned.sql}) SEMI JOIN flagged_hours USING (host, uuid, hour)").to_arrow_table()
        # handed over as Arrow (through pandas, Spark's fallback conversion lost values); UNION ALL widens the types
        self.spark.createDataFrame(fixed.combine_chunks()).createOrReplaceTempView("gpu_audit_cleaned")
        sql = (f"SELECT {cols} FROM ({rows}) r LEFT ANTI JOIN flagged_hours f ON r.host = f.host AND r.uuid = f.uuid AND r.hour = f.hour "
               f"UNION ALL SELECT {cols} FROM gpu_audit_cleaned")
        return query.Cleaned(sql, cleaned.devices)

    def only_hours(self, rows: str, table: str) -> str:
        return f"SELECT r.* FROM ({rows}) r LEFT SEMI JOIN {table} f ON r.host = f.host AND r.uuid = f.uuid AND r.hour = f.hour"

    def file_name(self, files: list[str], key: Any) -> str:
        path = _local_path(str(key))
        return next((f for f in files if os.path.abspath(f) == path), path)

    def close(self) -> None:
        """The session stays for this process (a JVM takes seconds to start); its views are replaced."""


def _one_line(e: Exception, where: str | None = None) -> GpuAuditError:
    """A Spark error (a Java exception through py4j) as one line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.split("] ", 1)[-1] if text.startswith("[") else text
    return GpuAuditError(f"Spark failed{' on ' + where if where else ''}: {text[:300]}")
