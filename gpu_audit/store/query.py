"""The SQL over a store's samples that the analyzer and the rollup both read (below both of them).

``samples_sql`` turns stored rows into the per-sample columns every sum needs (dt, u, share parts),
with values outside their range neutralised: a row whose ``interval_s`` is negative, NaN or
infinite, or whose utilization is outside [0, 100], is *rejected* (``bad``): it stands for no time
and carries no evidence, so it reaches no sum; the analyzer counts such rows per file.

``dedup`` makes "one reading per device and instant" true in the device-hours that the cheap
detection of ``hour_sums_sql`` (docs/metrics.md) flags: an instant read k times counts each reading
1/k, and where series still overlap, each sample's dt is cut to the gap since the device's previous
sample, so that a device is never billed more than wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.dialect import DUCK, Dialect

DUCK_TYPES = {"timestamp[us, tz=UTC]": "TIMESTAMPTZ", "string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT",
              "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN"}
REQUIRED = ("ts", "uuid", "interval_s")  # without these a samples file cannot be read at all
TOLERANCE_US = 1000  # 1 ms: float rounding of dt, never a real overlap


HOST_FROM_PATH = r"url_decode(regexp_extract(filename, '[/\\]host=([^/\\]+)[/\\]', 1))"


class StoreFileError(GpuAuditError):
    pass


class Source(str):
    """A samples FROM item (SQL text) that knows which schema columns no file of it has, or every row
    holds NULL in (``all_null_columns``), so that ``samples_sql`` and ``hour_sums_sql`` can write
    their expressions without them (a store without MIG, energy counters or GPM reads 30 % faster;
    docs/benchmarks.md)."""

    absent: frozenset[str]

    def __new__(cls, sql: str, absent: frozenset[str] | set[str] = frozenset()) -> "Source":
        s = super().__new__(cls, sql)
        s.absent = frozenset(absent)
        return s


def sql_list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def read_sql(files: list[str], union: bool = True) -> str:
    """The files as a FROM item. ``union``: columns matched by name across files of different schemas
    (a store written by several versions); without it every file is read with the first file's
    schema, which only ``uniform`` files may be."""
    return f"read_parquet({sql_list(files)}, union_by_name = {'true' if union else 'false'}, hive_partitioning = false)"


UNIFORM_CHECK_ABOVE = 64  # files: below this, binding by name costs little


def needs_union(con: duckdb.DuckDBPyConnection, files: list[str]) -> bool:
    """Whether the files differ in their columns (names, types), so that they must be read by name
    (``union_by_name``). Binding by name keeps every file's schema in memory, about 70 KB a file:
    2.5 GB for the 37,500 day files of a month of 1,250 hosts, where their footers, read once here,
    cost 80 MB."""
    if len(files) <= UNIFORM_CHECK_ABOVE:
        return True
    n = con.execute(f"""SELECT count(DISTINCT cols) FROM (
        SELECT file_name, string_agg(concat_ws(':', name, type, converted_type, logical_type, repetition_type), ',' ORDER BY name) AS cols
        FROM parquet_schema({sql_list(files)}) GROUP BY file_name)""").fetchall()[0][0]
    return n != 1


def window_where(since: datetime | None, until: datetime | None, *extra: str, d: Dialect = DUCK) -> str:
    """The WHERE clause selecting ts in [since, until), with any extra conditions."""
    where = list(extra)
    if since:
        where.append(f"ts >= {d.ts(since.isoformat())}")
    if until:
        where.append(f"ts < {d.ts(until.isoformat())}")
    return ("WHERE " + " AND ".join(where)) if where else ""


def samples_source(con: duckdb.DuckDBPyConnection, files: list[str], host_from_path: bool = False,
                   covered_from: int | None = None) -> Source:
    """A SELECT over the files with every column of the current schema: columns that no file has
    (a store written by an older schema version, or an importer that has fewer fields) are typed
    NULLs, so the analysis reads every version. A file without ``ts``, ``uuid`` or ``interval_s``
    is refused by name. With ``host_from_path`` a row without ``host`` takes it from its
    ``host=`` folder (a store written by another tool, with the host only as the partition).

    ``covered_from``: the files from this index on lie in partitions that also have rollups; their
    rows in a (host, uuid) interval that the temp table ``rolled_up`` (``rolled_up_sql``) covers
    are left out, so that a rollup and the raw rows of the same time count once."""
    from gpu_audit.store.schema import SAMPLES

    union = needs_union(con, files)
    src = read_sql(files, union)
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    have = set(types)
    _check_types(types, files)
    for col in REQUIRED:
        if col not in have:
            raise StoreFileError(f"cannot read {files[0]}: a samples file without the column {col!r}",
                                 hint="every samples file needs ts, uuid and interval_s (docs/store.md)")
    cols = []
    # Absent: no file has the column, or every row of every file holds NULL in it (footer statistics).
    nulls = all_null_columns(con, files)
    absent = {f.name for f in SAMPLES if f.name != "host" and (f.name not in have or f.name in nulls)}
    for f in SAMPLES:
        if f.name == "host" and (host_from_path or "host" not in have):
            cols.append(f'coalesce({"host" if "host" in have else "NULL"}, {HOST_FROM_PATH}) AS host')
        elif f.name in have:
            cols.append(f'"{f.name}"')
        else:
            cols.append(f'CAST(NULL AS {DUCK_TYPES[str(f.type)]}) AS "{f.name}"')
    if covered_from is None or covered_from >= len(files):
        return Source(f"(SELECT {', '.join(cols)}, file_index FROM {src})", absent)
    plain, late = files[:covered_from], files[covered_from:]
    parts = [f"SELECT {', '.join(cols)}, file_index FROM {read_sql(plain, union)}"] if plain else []
    parts.append(f"""SELECT * FROM (SELECT {', '.join(cols)}, file_index + {len(plain)} AS file_index FROM {read_sql(late, union)}) s
      WHERE NOT EXISTS (SELECT 1 FROM rolled_up r WHERE r.host = s.host AND r.uuid = s.uuid
                        AND epoch_us(s.ts) >= r.start_us AND epoch_us(s.ts) < r.end_us)""")
    return Source("(" + " UNION ALL BY NAME ".join(parts) + ")", absent)


def all_null_columns(con: duckdb.DuckDBPyConnection, files: list[str]) -> set[str]:
    """The columns in which every row of every file is NULL, from the files' footer statistics (exact
    null counts; a row group without statistics counts as holding values). The store's writer writes
    every column of the schema, so a GPU without MIG, GPM or an energy counter leaves those columns
    NULL, and the scan writes what it computes from them alone as constants."""
    return {r[0] for r in con.execute(f"""
        SELECT path_in_schema FROM parquet_metadata({sql_list(files)}) GROUP BY path_in_schema
        HAVING bool_and(stats_null_count IS NOT NULL AND stats_null_count = row_group_num_rows)""").fetchall()}


def partition_key(path: str) -> tuple[str, str]:
    """A file's partition as (``host=...``, ``date=...``), the same in every copy of a store."""
    import os

    d = os.path.dirname(path)
    return os.path.basename(os.path.dirname(d)), os.path.basename(d)


def rolled_up_sql(con: duckdb.DuckDBPyConnection, rollup_files: list[str]) -> None:
    """The temp table ``rolled_up`` (host, uuid, start_us, end_us): the intervals the rollups cover,
    for ``samples_source(covered_from=...)``."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE rolled_up AS
      SELECT DISTINCT host, uuid, epoch_us(ts) AS start_us, epoch_us(ts) + CAST(resolution_s * 1e6 AS BIGINT) AS end_us
      FROM {read_sql(rollup_files)}""")


def split_covered(files: list[str], rollup_files: list[str]) -> tuple[list[str], int | None]:
    """The sample files ordered so that those in a partition that also has rollups (in any of the
    stores read) come last, and the index where they begin (None: no such file)."""
    rolled = {partition_key(f) for f in rollup_files}
    plain = [f for f in files if partition_key(f) not in rolled]
    late = [f for f in files if partition_key(f) in rolled]
    return plain + late, (len(plain) if late else None)


def rollups_source(con: duckdb.DuckDBPyConnection, files: list[str]) -> str:
    """Rollup files, with every column of the current rollup schema: a column no file has (an older
    schema version: k8s_namespace before 2, blind_dt_s before 3) is a typed NULL. Where one partition
    has several rollup files (two copies of a store, a merge interrupted), each (host, uuid, minute,
    namespace) counts once: the row standing for the most samples."""
    from gpu_audit.store.schema import ROLLUPS

    src = read_sql(files, needs_union(con, files))
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    missing = [f'CAST(NULL AS {DUCK_TYPES[str(f.type)]}) AS "{f.name}"' for f in ROLLUPS if f.name not in have]
    src = src if not missing else f"(SELECT *, {', '.join(missing)} FROM {src})"
    if not several_per_partition(files):
        return src
    return f"""(SELECT * FROM {src} QUALIFY row_number() OVER (PARTITION BY host, uuid, ts, k8s_namespace
                                                        ORDER BY n DESC, dt_s DESC) = 1)"""


_NUMERIC = {"FLOAT", "DOUBLE", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "UINTEGER", "UBIGINT", "USMALLINT",
            "UTINYINT", "DECIMAL"}


def _check_types(types: dict[str, str], files: list[str]) -> None:
    """A numeric column that some file stores as text (utilization as "50 %") would fail deep in a
    query with no file named: name the file and the column here, in one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpu_audit.store.schema import SAMPLES

    for f in SAMPLES:
        want, got = DUCK_TYPES[str(f.type)], types.get(f.name)
        if got is None or want not in _NUMERIC or got.split("(")[0] in _NUMERIC:
            continue
        for path in files:
            schema = pq.read_schema(path)
            if f.name in schema.names and not (pa.types.is_integer(schema.field(f.name).type) or pa.types.is_floating(schema.field(f.name).type)
                                               or pa.types.is_decimal(schema.field(f.name).type) or pa.types.is_null(schema.field(f.name).type)):
                raise StoreFileError(f"cannot read {path}: column {f.name!r} is {schema.field(f.name).type}, expected a number",
                                     hint="a damaged or foreign file in the store: move it aside and run again")


def missing_columns(files: list[str]) -> dict[str, list[str]]:
    """Per file, the required columns it lacks (read from the footers of the files given)."""
    import pyarrow.parquet as pq

    out = {}
    for f in files:
        if "://" in f:
            continue  # a remote file Spark read (s3a://, hdfs://): its schema was checked there, merged
        names = set(pq.read_schema(f).names)
        lack = [c for c in REQUIRED if c not in names]
        if lack:
            out[f] = lack
    return out


_UTIL = ("util_gpu_pct", "gr_engine_active_pct", "sm_active_pct")
# NaN compares above every number in DuckDB, so BETWEEN rejects NaN and infinities as well as values out of range.
EARLIEST_SQL = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"  # older times are not real samples (sources.sink.EARLIEST)
EARLIEST_US = 946684800 * 10**6


def _bad(absent: frozenset[str] = frozenset()) -> str:
    """The range test of a stored row (a utilization column no file has is NULL: it passes)."""
    return ("(ts IS NULL OR uuid IS NULL OR NOT coalesce(interval_s BETWEEN 0 AND 1e12, false)"
            + "".join(f" OR NOT coalesce({c} BETWEEN 0 AND 100, true)" for c in _UTIL if c not in absent) + ")")


def bad_sql(early: bool, d: Dialect = DUCK, absent: frozenset[str] = frozenset()) -> str:
    """The test of a rejected row (``_bad``; with ``early``, also a time before 2000-01-01)."""
    bad = _bad(absent)
    return f"({bad[1:-1]} OR {d.epoch_us('ts')} < {EARLIEST_US})" if early else bad
# Rows before 2000 are rare (written before the importers refused them): the scan finds their hours
# (hour < EARLIEST_HOUR) without a per-row test, and only then reads again with this one.
EARLIEST_HOUR = 946684800 // 3600  # 2000-01-01 as a clock hour


def samples_sql(src: str, since: datetime | None = None, until: datetime | None = None, check: bool = True,
                early: bool = False, d: Dialect = DUCK, absent: frozenset[str] | None = None) -> str:
    """Per-sample rows with the columns every sum needs.

    share: 1 for a whole GPU; a MIG device's compute slices over its GPU's (7, or 4 on an A30); 0 for
    a GPU in MIG mode, which is not billed itself (its unallocated slices are, elsewhere). String
    work (profile, name) runs only in the MIG branches. metric: 1 util_gpu_pct, 2
    gr_engine_active_pct, 3 sm_active_pct, null without evidence; ``bad``: out of range, reaching no
    sum (dt 0, no u). ``check=False`` skips the range check
    (``bad`` is false): for the later scans of rows that the first scan found all in range; ``early``
    also rejects rows before 2000-01-01.

    ``absent``: columns that no file has (typed NULLs in ``src``; by default ``src.absent`` where src
    is a ``Source``). Every output column stays, with the same type: what is computed from them alone
    is written as the constant it is, so that no row pays for it."""
    a = frozenset(getattr(src, "absent", frozenset()) if absent is None else absent)
    dt = "CASE WHEN bad THEN 0.0 ELSE CAST(interval_s AS DOUBLE) END"
    util = [c for c in _UTIL if c not in a]
    u = f"CASE WHEN NOT bad THEN CAST(coalesce({', '.join(util)}) AS DOUBLE) END" if util else "CAST(NULL AS DOUBLE)"
    metric = ("CASE WHEN bad THEN NULL " + " ".join(f"WHEN {c} IS NOT NULL THEN {_UTIL.index(c) + 1}" for c in util) + " END"
              if util else "CAST(NULL AS INTEGER)")
    sm = "CASE WHEN NOT bad THEN CAST(sm_active_pct AS DOUBLE) END" if "sm_active_pct" not in a else "CAST(NULL AS DOUBLE)"
    counter = "CASE WHEN NOT bad AND energy_j >= 0 THEN energy_j END" if "energy_j" not in a else "CAST(NULL AS DOUBLE)"
    power_dt = f"CAST(power_w AS DOUBLE) * {dt}" if "power_w" not in a else None
    e_j = (f"coalesce({counter}, {power_dt})" if "energy_j" not in a and power_dt else power_dt or counter)
    mig = "parent_uuid" not in a or "mig_mode" not in a
    total = (f"""CASE WHEN {' OR '.join(x for x in ('parent_uuid IS NOT NULL', 'mig_mode') if x.split()[0] not in a)} THEN
                  (CASE WHEN name ILIKE '%A30%' THEN 4e0 ELSE 7e0 END) END""" if mig else "CAST(NULL AS DOUBLE)")
    slices = ("CASE WHEN parent_uuid IS NOT NULL THEN TRY_CAST(split_part(mig_profile, 'g.', 1) AS DOUBLE) END"
              if "parent_uuid" not in a else "CAST(NULL AS DOUBLE)")
    return f"""
      SELECT host, uuid, parent_uuid, name, mig_profile, {"coalesce(mig_mode, false)" if "mig_mode" not in a else "false"} AS mig_mode,
             source, file_index, {d.epoch_us("ts")} AS ts_us, {d.hour("ts")} AS hour, bad,
             {dt} AS dt, 1e0 AS w, {u} AS u, {metric} AS metric, {sm} AS sm,
             mem_used_bytes, mem_total_bytes, {"error IS NOT NULL" if "error" not in a else "false"} AS has_error, k8s_namespace, k8s_pod,
             power_w, power_limit_w, {counter} AS energy_j,
             -- the energy this sample stands for: the counter's delta, else power x dt (a bad row's dt is 0)
             {e_j} AS e_j, {total} AS total_slices, {slices} AS slices
      FROM (SELECT *, {bad_sql(early, d, a) if check else "false"} AS bad FROM {src} {window_where(since, until, d=d)})
    """


@dataclass(frozen=True)
class Cleaned:
    """Where the samples were made one reading per device and instant."""

    sql: str  # per-sample rows (samples_sql's columns), every (host, uuid, ts) once
    devices: dict[tuple[str, str], dict[str, Any]]  # per repaired device: duplicate_rows, overlap_hours


ROW_COLUMNS = ("parent_uuid", "name", "mig_profile", "mig_mode", "source", "file_index", "hour", "bad", "dt", "w", "u", "metric", "power_w", "power_limit_w",
               "sm", "mem_used_bytes", "mem_total_bytes", "has_error", "k8s_namespace", "k8s_pod", "total_slices", "slices", "energy_j", "e_j")


def _hours_table(con: duckdb.DuckDBPyConnection, name: str, hours: list[tuple[str, str, int]]) -> None:
    import pyarrow as pa

    con.register(name, pa.table({"host": pa.array([h for h, _, _ in hours], pa.string()),
                                 "uuid": pa.array([u for _, u, _ in hours], pa.string()),
                                 "hour": pa.array([hr for _, _, hr in hours], pa.int64())}))


def dedup(con: duckdb.DuckDBPyConnection, rows_sql: str, flagged: list[tuple[str, str, int]]) -> Cleaned:
    """The rows of the ``flagged`` device-hours made one reading per device and instant.

    An instant read k times counts each reading 1/k (``w``; dt / k): exact copies (a file imported
    twice, a retried flush) then sum to one reading, with no row rewritten and no sort, only a narrow
    table of the repeated instants. Where a device-hour still stands for more time than it spans
    (overlapping series at different offsets), its rows are rewritten: one per instant (the reading in
    range, without an error, with the longest dt), each dt cut to the gap since the device's previous
    sample, so that the device is billed wall time once. Other rows pass untouched."""
    if not flagged:
        return Cleaned(rows_sql, {})
    _hours_table(con, "flagged_hours", flagged)
    con.execute(f"""
      CREATE OR REPLACE TEMP TABLE repeated_instants AS
      SELECT hash(host, uuid) AS dev, ts_us, count(*) AS copies
      FROM (SELECT host, uuid, ts_us FROM ({rows_sql}) SEMI JOIN flagged_hours USING (host, uuid, hour))
      GROUP BY ALL HAVING count(*) > 1
    """)
    devs = {d: (h, u) for h, u, d in con.execute(
        "SELECT DISTINCT host, uuid, hash(host, uuid) FROM flagged_hours").fetchall()}
    dups = {devs[d]: int(n) for d, n in con.execute(
        "SELECT dev, sum(copies - 1) FROM repeated_instants GROUP BY dev").fetchall() if d in devs}
    weighted = rows_sql if not dups else f"""
      SELECT r.* REPLACE (r.dt / coalesce(k.copies, 1) AS dt, r.w / coalesce(k.copies, 1) AS w,
                          r.energy_j / coalesce(k.copies, 1) AS energy_j, r.e_j / coalesce(k.copies, 1) AS e_j)
      FROM ({rows_sql}) r LEFT JOIN repeated_instants k ON k.dev = hash(r.host, r.uuid) AND k.ts_us = r.ts_us"""
    over = [(h, u, int(hr)) for h, u, hr in con.execute(f"""
      SELECT host, uuid, hour FROM ({weighted}) SEMI JOIN flagged_hours USING (host, uuid, hour) GROUP BY ALL
      HAVING sum(dt) * 1e6 > max(ts_us) - min(ts_us - dt / w * 1e6) + {TOLERANCE_US} ORDER BY ALL""").fetchall()]
    cut: dict[tuple[str, str], float] = {}
    sql = weighted
    if over:  # overlapping series: one row per instant, each dt cut to the gap since the previous sample
        _hours_table(con, "overlap_hours", over)
        score = "(CASE WHEN bad THEN 0 ELSE 4 END + CASE WHEN has_error THEN 0 ELSE 2 END + dt / 1e12)"
        con.execute(f"""
          CREATE OR REPLACE TEMP TABLE cut_samples AS
          WITH one AS (
            SELECT host, uuid, ts_us, arg_max(struct_pack({", ".join(ROW_COLUMNS)}), {score}) AS p
            FROM ({rows_sql}) SEMI JOIN overlap_hours USING (host, uuid, hour) GROUP BY host, uuid, ts_us)
          SELECT host, uuid, ts_us, {", ".join(f"p.{c} AS {c}" for c in ROW_COLUMNS if c not in ("dt", "w"))}, 1.0 AS w,
                 least(p.dt, coalesce((ts_us - lag(ts_us) OVER (PARTITION BY host, uuid, p.bad ORDER BY ts_us)) / 1e6, p.dt)) AS dt,
                 p.dt AS dt_before_cut
          FROM one
        """)
        # power x dt follows the cut dt (a counter's delta is the energy of its own interval: it stays)
        con.execute("UPDATE cut_samples SET e_j = e_j * dt / dt_before_cut WHERE dt_before_cut > 0 AND energy_j IS NULL")
        cut = {(h, u): float(c or 0) for h, u, c in con.execute(
            "SELECT host, uuid, sum(dt_before_cut - dt) FROM cut_samples GROUP BY ALL").fetchall()}
        sql = (f"SELECT * FROM ({weighted}) ANTI JOIN overlap_hours USING (host, uuid, hour) "
               "UNION ALL BY NAME SELECT * EXCLUDE (dt_before_cut) FROM cut_samples")
    devices = {k: {"host": k[0], "uuid": k[1], "duplicate_rows": dups.get(k, 0), "overlap_hours": cut.get(k, 0.0) / 3600}
               for k in sorted(set(dups) | set(cut))}
    return Cleaned(sql, devices)


# (column, per-sample expression summed per file and device-hour, how the files' values combine)
_SUMS = (
    ("parent_uuid", "any_value(parent_uuid)", "any_value"), ("name", "any_value(name)", "any_value"),
    ("mig_profile", "any_value(mig_profile)", "any_value"), ("mig_mode", "bool_or(mig_mode)", "bool_or"),
    ("share", "max(CASE WHEN parent_uuid IS NOT NULL THEN coalesce(slices, 0) / total_slices WHEN mig_mode THEN 0.0 ELSE 1.0 END)", "max"),
    ("n", "count(*)", "sum"), ("bad_n", "count(*) FILTER (WHERE bad)", "sum"), ("dt_s", "sum(dt)", "sum"),
    ("ev_dt", "sum(CASE WHEN u IS NOT NULL THEN dt END)", "sum"), ("u_dt", "sum(u * dt)", "sum"),
    ("idle_dt", "sum(CASE WHEN u < {idle} THEN dt END)", "sum"),
    ("sm_dt", "sum(CASE WHEN sm IS NOT NULL THEN dt END)", "sum"), ("smu_dt", "sum(sm * dt)", "sum"),
    ("error_dt", "sum(CASE WHEN has_error THEN dt END)", "sum"),
    ("m_util_dt", "sum(CASE WHEN metric = 1 THEN dt END)", "sum"), ("m_gr_dt", "sum(CASE WHEN metric = 2 THEN dt END)", "sum"),
    ("m_sm_dt", "sum(CASE WHEN metric = 3 THEN dt END)", "sum"),
    ("mem_max", "max(mem_used_bytes)", "max"), ("mem_total", "max(mem_total_bytes)", "max"),
    # Energy of a physical GPU: the counter's deltas where the samples carry them, else power x dt.
    ("energy_j", "sum(e_j)", "sum"),
    ("idle_energy_j", "sum(CASE WHEN u < {idle} THEN e_j END)", "sum"),
    ("counter_n", "count(energy_j)", "sum"),
    # samples read as idle while the board draws over 70 % of its power limit (utilization vs power)
    # ("idle" while drawing over 70 % of the power limit: the reading is not what the GPU does; a bad row has no u)
    ("hot_dt", "sum(dt) FILTER (WHERE u < 5 AND power_w > 0.7 * power_limit_w)", "sum"),
    ("hot_udt", "sum(u * dt) FILTER (WHERE u < 5 AND power_w > 0.7 * power_limit_w)", "sum"),
    # Where the time the samples stand for begins and ends: backward intervals [ts - dt, ts].
    # ({span_dt} is dt / w where readings were weighted: a reading counted 1/k still spans its interval.)
    ("first_us", "min(ts_us - {span_dt} * 1e6)", "min"), ("last_us", "max(ts_us)", "max"),
)
SUM_COLUMNS = ("ev_dt", "u_dt", "idle_dt", "sm_dt", "smu_dt", "error_dt", "m_util_dt", "m_gr_dt", "m_sm_dt", "energy_j",
               "idle_energy_j", "counter_n", "hot_dt", "hot_udt")


# What a sum is where the columns it reads are absent from every file: (column, needs, constant).
_CONSTANT_SUMS = (
    ("parent_uuid", ("parent_uuid",), "CAST(NULL AS VARCHAR)"), ("mig_profile", ("mig_profile",), "CAST(NULL AS VARCHAR)"),
    ("mig_mode", ("mig_mode",), "false"), ("share", ("parent_uuid", "mig_mode"), "CAST(1.0 AS DOUBLE)"),
    ("sm_dt", ("sm_active_pct",), "CAST(NULL AS DOUBLE)"), ("smu_dt", ("sm_active_pct",), "CAST(NULL AS DOUBLE)"),
    ("error_dt", ("error",), "CAST(NULL AS DOUBLE)"),
    ("m_util_dt", ("util_gpu_pct",), "CAST(NULL AS DOUBLE)"), ("m_gr_dt", ("gr_engine_active_pct",), "CAST(NULL AS DOUBLE)"),
    ("m_sm_dt", ("sm_active_pct",), "CAST(NULL AS DOUBLE)"), ("counter_n", ("energy_j",), "CAST(0 AS BIGINT)"),
    ("energy_j", ("energy_j", "power_w"), "CAST(NULL AS DOUBLE)"), ("idle_energy_j", ("energy_j", "power_w"), "CAST(NULL AS DOUBLE)"),
    ("hot_dt", ("power_limit_w",), "CAST(NULL AS DOUBLE)"), ("hot_udt", ("power_limit_w",), "CAST(NULL AS DOUBLE)"),
    ("hot_dt", ("power_w",), "CAST(NULL AS DOUBLE)"), ("hot_udt", ("power_w",), "CAST(NULL AS DOUBLE)"),
    *((c, _UTIL, "CAST(NULL AS DOUBLE)") for c in ("ev_dt", "u_dt", "idle_dt", "idle_energy_j", "hot_dt", "hot_udt")),
)


def constant_sums(absent: frozenset[str], d: Dialect = DUCK) -> dict[str, str]:
    """The sums of hour_sums_sql that are constants when the columns ``absent`` are (every input of
    them absent): their value, typed as the sum would be."""
    out: dict[str, str] = {}
    for col, needs, value in _CONSTANT_SUMS:
        if all(n in absent for n in needs):
            out.setdefault(col, value.replace("VARCHAR", d.type("VARCHAR")))
    return out


def hour_sums_sql(rows: str, idle: float, per_file: bool = True, weighted: bool = False,
                  absent: frozenset[str] = frozenset(), d: Dialect = DUCK) -> str:
    """Per (device, hour): the sums, and ``suspect`` where rows stand for more time than they span
    (backward intervals [ts - dt, ts] are disjoint within one clean series: duplicates or overlapping
    series) or, with ``per_file``, where two files' spans overlap. Without ``per_file`` (each
    partition holds one file, as after compact) the sums are taken in one level. A sum over columns
    ``absent`` from every file (``constant_sums``) is its constant, not a sum per row."""
    const = constant_sums(frozenset(absent), d)
    inner = ", ".join(f"{const.get(c) or e.format(idle=idle, span_dt='dt / w' if weighted else 'dt')} AS {c}" for c, e, _ in _SUMS)
    if not per_file:
        return f"""
    SELECT *, dt_s * 1e6 > last_us - first_us + {TOLERANCE_US} AS suspect
    FROM (SELECT host, uuid, hour, {inner} FROM ({rows}) GROUP BY host, uuid, hour)
    """
    outer = ", ".join(f"{const.get(c) or f'{agg}({c})'} AS {c}" for c, _, agg in _SUMS)
    return f"""
    WITH f AS (
      SELECT host, uuid, hour, file_index, {inner}
      FROM ({rows}) GROUP BY host, uuid, hour, file_index),
    o AS (
      SELECT *, coalesce(first_us < max(last_us) OVER (PARTITION BY host, uuid, hour ORDER BY first_us
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) - {TOLERANCE_US}, false)
                OR dt_s * 1e6 > last_us - first_us + {TOLERANCE_US} AS suspect
      FROM f)
    SELECT host, uuid, hour, {outer}, bool_or(suspect) AS suspect FROM o GROUP BY host, uuid, hour
    """


def several_per_partition(files: list[str]) -> bool:
    """Whether some host/date partition holds more than one file, in one store or across the copies
    of a store read together (then files can overlap)."""
    keys = [partition_key(f) for f in files]
    return len(set(keys)) < len(keys)


# Instances are visible where the source lists them (the NVML collector always does); from DCGM only
# where the parent's activity is explained by its visible instances (GR_ENGINE_ACTIVE at most 5 points
# above their share-weighted sum): a parent busier than that runs instances the scrape does not show.
MIG_VISIBLE = ("(p.source NOT IN ('nvidia-smi', 'dcgm') OR (a.used IS NOT NULL AND (p.source <> 'dcgm' OR p.u IS NULL "
               "OR p.u <= coalesce(a.used_u, 0) / p.total_slices + 5)))")


def mig_free_sql(rows: str) -> str:
    """Per sample of a GPU in MIG mode: ``free_dt``, the time of its slices that no instance held, and
    ``blind_dt``, the time of the slices no visible instance holds where the source does not show every
    instance (an nvidia-smi CSV log, a DCGM scrape without GPU_I series, or one whose parent is busier
    than its visible instances): invisible is not idle, so that time is billed with no evidence; and
    ``stranded_dt``, slices no instance holds that no new instance could use, since the instances hold
    every memory slice (DESIGN.md "MIG slices that can still be allocated"): billed, not idle."""
    return f"""
    WITH m AS (SELECT * FROM ({rows}) WHERE mig_mode OR parent_uuid IS NOT NULL),
    alloc AS (SELECT host, parent_uuid, ts_us, sum(slices * w) AS used, sum(slices * w * u) AS used_u,
                     -- memory eighths each instance holds: its profile's GB over an eighth of the GPU's memory
                     sum(round(TRY_CAST(regexp_extract(mig_profile, 'g[.]([0-9]+)gb', 1) AS DOUBLE)
                               / nullif(max_mem_gib / 8, 0)) * w) AS used_mem
              FROM m LEFT JOIN (SELECT host AS h2, uuid AS p2, max(mem_total_bytes) / 1073741824.0 AS max_mem_gib FROM m
                                WHERE mig_mode AND parent_uuid IS NULL GROUP BY ALL) t ON t.h2 = m.host AND t.p2 = m.parent_uuid
              WHERE parent_uuid IS NOT NULL GROUP BY ALL),
    f AS (
    SELECT p.*, CASE WHEN {MIG_VISIBLE} THEN greatest(0.0, 1.0 - coalesce(a.used, 0) / p.total_slices) * p.dt ELSE 0.0 END AS open_dt,
           -- compute no new instance can use: every memory slice is taken (4 x 1g.20gb on an A100 80GB)
           coalesce(a.used_mem, 0) >= 8 AS mem_full,
           CASE WHEN {MIG_VISIBLE} THEN 0.0 ELSE greatest(0.0, 1.0 - coalesce(a.used, 0) / p.total_slices) * p.dt END AS blind_dt
    FROM m p LEFT JOIN alloc a ON a.host = p.host AND a.parent_uuid = p.uuid AND a.ts_us = p.ts_us
    WHERE p.mig_mode AND p.parent_uuid IS NULL)
    SELECT f.*, CASE WHEN mem_full THEN 0.0 ELSE open_dt END AS free_dt,
           CASE WHEN mem_full THEN open_dt ELSE 0.0 END AS stranded_dt
    FROM f
    """


def clean_rows(con: duckdb.DuckDBPyConnection, rows: str, per_file: bool = True) -> Cleaned:
    """``rows`` made one reading per device and instant: the devices that hour_sums_sql flags, deduplicated."""
    flagged = [(h, u, int(hr)) for h, u, hr in con.execute(
        f"SELECT host, uuid, hour FROM ({hour_sums_sql(rows, 5.0, per_file)}) WHERE suspect ORDER BY ALL").fetchall()]
    return dedup(con, rows, flagged)
