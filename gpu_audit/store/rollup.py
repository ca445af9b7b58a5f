"""Rollups: raw samples of old days rewritten per device and minute, then the raw files removed.

Each rollup row holds, for one device and one minute (``--resolution``), the sums the analysis
takes over raw samples: Σdt, Σdt with evidence, Σu·dt, Σdt idle (at the threshold given here,
recorded in ``idle_below_pct``), Σdt and Σu·dt of SM activity, Σdt with an error, Σdt per
utilization metric, the unallocated MIG time of a GPU in MIG mode, peak and total memory, and the
first and end time. A report therefore gives the same spend, waste, idle cost, means, coverage and
attribution from rollups as from the raw samples; what needs sub-minute detail (the p95s, the
utilization histogram) is computed from minute means instead.

A day is rolled up only when it ended before the cut-off. The rollup replaces the raw files
through the journal of ``gpu_audit.store.replace``: the raw files are removed only after the rollup
is durably written and read back, and a failed or killed run is undone by the next one. Raw rows
that arrive for a day already rolled up (a late import, a collector that was offline) are kept:
the report reads them beside the rollup (a device and minute the rollup has counts once), and the
next rollup merges them into a new rollup file with the old rollup's rows. A day whose raw files
hold columns this version does not know (a newer collector's) is left raw, and said.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpu_audit.duck import session
from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import is_data_file
from gpu_audit.store.query import clean_rows, mig_free_sql, rolled_up_sql, samples_source, samples_sql, several_per_partition
from gpu_audit.store.replace import recover, replace_files
from gpu_audit.store.schema import ROLLUPS, SAMPLES, merge_tables, with_version


def _rollup_sql(con: duckdb.DuckDBPyConnection, files: list[str], resolution_s: float, idle_below: float,
                rolled: list[str]) -> str:
    covered_from = None
    if rolled:  # late rows for a day already rolled up: the minutes the rollup has count once, from it
        rolled_up_sql(con, rolled)
        covered_from = 0
    src = samples_source(con, files, covered_from=covered_from)  # every column of the current schema, typed NULL where a file lacks it
    rows = clean_rows(con, samples_sql(src, early=True), several_per_partition(files)).sql  # one reading per device and instant, as the analyzer reads them
    res_us = int(resolution_s * 1e6)
    return f"""
    WITH s AS ({rows}),
    mf AS ({mig_free_sql("SELECT * FROM s")}),
    f AS (
      SELECT s.*, coalesce(mf.free_dt, 0.0) AS free_dt, coalesce(mf.blind_dt, 0.0) AS blind_dt,
             coalesce(mf.stranded_dt, 0.0) AS stranded_dt
      FROM s LEFT JOIN mf ON mf.host = s.host AND mf.uuid = s.uuid AND mf.ts_us = s.ts_us
    )
    SELECT make_timestamptz((ts_us // {res_us}) * {res_us}) AS ts, host, uuid,
           any_value(parent_uuid) AS parent_uuid, CAST(NULL AS INTEGER) AS "index", any_value(name) AS name,
           any_value(mig_profile) AS mig_profile, bool_or(mig_mode) AS mig_mode, k8s_namespace,
           {resolution_s} AS resolution_s, {idle_below} AS idle_below_pct,
           count(*) FILTER (WHERE NOT bad) AS n, sum(dt) AS dt_s,
           coalesce(sum(CASE WHEN u IS NOT NULL THEN dt END), 0) AS ev_dt_s, coalesce(sum(u * dt), 0) AS u_dt,
           coalesce(sum(CASE WHEN u < {idle_below} THEN dt END), 0) AS idle_dt_s,
           coalesce(sum(CASE WHEN sm IS NOT NULL THEN dt END), 0) AS sm_dt_s, coalesce(sum(sm * dt), 0) AS sm_u_dt,
           coalesce(sum(CASE WHEN has_error THEN dt END), 0) AS error_dt_s,
           coalesce(sum(CASE WHEN metric = 1 THEN dt END), 0) AS util_gpu_dt_s,
           coalesce(sum(CASE WHEN metric = 2 THEN dt END), 0) AS gr_engine_dt_s,
           coalesce(sum(CASE WHEN metric = 3 THEN dt END), 0) AS sm_active_dt_s,
           sum(free_dt) AS free_dt_s, sum(blind_dt) AS blind_dt_s, sum(stranded_dt) AS stranded_dt_s,
           sum(e_j) AS energy_j, sum(CASE WHEN u < {idle_below} THEN e_j END) AS idle_energy_j,
           coalesce(sum(CASE WHEN energy_j IS NOT NULL THEN dt END), 0) AS energy_counter_dt_s,
           max(mem_used_bytes) AS mem_max_bytes,
           max(mem_total_bytes) AS mem_total_bytes,
           make_timestamptz(CAST(min(ts_us - dt / w * 1e6) AS BIGINT)) AS first_ts, make_timestamptz(max(ts_us)) AS end_ts
    FROM f WHERE ts_us IS NOT NULL AND uuid IS NOT NULL GROUP BY host, uuid, ts_us // {res_us}, k8s_namespace
    ORDER BY host, uuid, ts, k8s_namespace
    """


def rollup(root: str, older_than_s: float, resolution_s: float = 60.0, idle_below: float = 5.0,
           now: datetime | None = None, skipped: list[str] | None = None) -> list[tuple[str, str, int, int]]:
    """Roll up every whole day that ended more than ``older_than_s`` ago. Returns, per day rolled,
    (host folder, date, raw rows, rollup rows); days left raw are said in ``skipped``."""
    skipped = [] if skipped is None else skipped
    if not os.path.isdir(root):
        raise GpuAuditError(f"store not found: {root}")
    if resolution_s <= 0 or 86400 % resolution_s:
        raise GpuAuditError(f"--resolution must divide a day, got {resolution_s:g} s")
    try:
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=older_than_s)
    except (OverflowError, ValueError):
        return []  # --older-than longer than the calendar: no day is that old
    base = os.path.join(root, "samples")
    done: list[tuple[str, str, int, int]] = []
    from gpu_audit.store.writer import StoreError

    with session() as con:
        try:
            _rollup_days(con, root, base, cutoff, resolution_s, idle_below, done, skipped)
        except OSError as e:
            raise StoreError(f"cannot roll up {getattr(e, 'filename', None) or root}: {e.strerror or e}") from None
    return done


def _rollup_days(con: duckdb.DuckDBPyConnection, root: str, base: str, cutoff: datetime, resolution_s: float,
                 idle_below: float, done: list[tuple[str, str, int, int]], skipped: list[str]) -> None:
    for host in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for date in sorted(os.listdir(os.path.join(base, host))):
            try:
                day = datetime.strptime(date[5:], "%Y-%m-%d").replace(tzinfo=timezone.utc)
            except ValueError:
                continue  # not a date= folder of ours
            if day + timedelta(days=1) > cutoff:
                continue
            raw_dir = os.path.join(base, host, date)
            out_dir = os.path.join(root, "rollups", host, date)
            if os.path.isdir(out_dir):
                recover(out_dir)  # a run that failed or was killed: undone or finished first
            files = [os.path.join(raw_dir, n) for n in sorted(os.listdir(raw_dir)) if is_data_file(n)] if os.path.isdir(raw_dir) else []
            if not files:
                _remove_empty(raw_dir)
                continue
            unknown = sorted({c for f in files for c in _columns(f)} - set(SAMPLES.names))
            if unknown:
                skipped.append(f"{host}/{date}: left raw, its samples hold columns this version does not know "
                               f"({', '.join(unknown[:5])}); roll it up with the gpu-audit that wrote them")
                continue
            olds = sorted(n for n in os.listdir(out_dir) if is_data_file(n)) if os.path.isdir(out_dir) else []
            new = con.sql(_rollup_sql(con, files, resolution_s, idle_below, [os.path.join(out_dir, n) for n in olds])).to_arrow_table()
            new = new.cast(with_version(ROLLUPS))
            raw_rows = int(pc.sum(new["n"]).as_py() or 0)
            table = merge_tables([pq.read_table(os.path.join(out_dir, n)) for n in olds] + [new], ROLLUPS)
            os.makedirs(out_dir, exist_ok=True)
            k = 0
            while os.path.exists(os.path.join(out_dir, f"rollup-{int(resolution_s)}s-{k}.parquet")) or f"rollup-{int(resolution_s)}s-{k}.parquet" in olds:
                k += 1
            sources = olds + [os.path.relpath(f, out_dir) for f in files]
            replace_files(out_dir, sources, table, f"rollup-{int(resolution_s)}s-{k}.parquet")
            _remove_empty(raw_dir)
            done.append((host, date[5:], raw_rows, new.num_rows))


def _columns(path: str) -> list[str]:
    import pyarrow as pa

    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise GpuAuditError(f"cannot read {path}: {str(e).splitlines()[0]}",
                            hint="a damaged or foreign file in the store: move it aside and run again") from None


def _remove_empty(folder: str) -> None:
    """The raw day's folder, and its host folder, once nothing is left in them."""
    for d in (folder, os.path.dirname(folder)):
        try:
            os.rmdir(d)
        except OSError:
            return
