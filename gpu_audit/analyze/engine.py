"""Samples to money: spend, waste, idle cost, attribution of cost to models.

Every number follows docs/metrics.md (the project's account of DESIGN.md "What every number
means"). The heavy work is one DuckDB aggregation to one row per (device, clock hour); pandas only
sees those small frames. No Python loop runs per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from gpu_audit.analyze.hourly import COLUMNS as HOURLY_COLUMNS, HourlyColumns
from gpu_audit.analyze.pricing import Pricing
from gpu_audit.analyze.reader import table_files
from gpu_audit.analyze.tokens import TokenLog
from gpu_audit.duck import session
from gpu_audit.errors import GpuAuditError

class EmptyStore(GpuAuditError):
    pass


@dataclass(frozen=True)
class AnalyzeSettings:
    idle_below: float = 5.0
    since: datetime | None = None
    until: datetime | None = None
    memory_limit: str = "1GB"
    threads: int | None = None


def _sql_list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


_DUCK_TYPES = {"timestamp[us, tz=UTC]": "TIMESTAMPTZ", "string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT",
               "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN"}


def samples_source(con: duckdb.DuckDBPyConnection, files: list[str]) -> str:
    """A SELECT over the files with every column of the current schema: columns that no file has
    (a store written by an older schema version, or an importer that has fewer fields) are typed
    NULLs, so the analysis reads every version."""
    from gpu_audit.store.schema import SAMPLES

    src = f"read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false)"
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    cols = [f'"{f.name}"' if f.name in have else f'CAST(NULL AS {_DUCK_TYPES[str(f.type)]}) AS "{f.name}"' for f in SAMPLES]
    return f"(SELECT {', '.join(cols)} FROM {src})"


def _samples_sql(src: str, s: AnalyzeSettings) -> str:
    cond = _window_where(s)
    # share: 1 for a whole GPU; a MIG device's compute slices over its GPU's (7, or 4 on an A30);
    # 0 for a GPU in MIG mode, which is not billed itself (its unallocated slices are, elsewhere).
    # String work (profile, name) runs only in the MIG branches. metric: 1 util_gpu_pct,
    # 2 gr_engine_active_pct, 3 sm_active_pct, null without evidence.
    return f"""
      SELECT host, uuid, parent_uuid, name, mig_profile, coalesce(mig_mode, false) AS mig_mode,
             epoch_us(ts) AS ts_us, CAST(interval_s AS DOUBLE) AS dt,
             epoch_us(ts) // 3600000000 AS hour,
             CAST(coalesce(util_gpu_pct, gr_engine_active_pct, sm_active_pct) AS DOUBLE) AS u,
             CASE WHEN util_gpu_pct IS NOT NULL THEN 1 WHEN gr_engine_active_pct IS NOT NULL THEN 2
                  WHEN sm_active_pct IS NOT NULL THEN 3 END AS metric,
             CAST(sm_active_pct AS DOUBLE) AS sm,
             mem_used_bytes, mem_total_bytes, error IS NOT NULL AS has_error, k8s_namespace,
             CASE WHEN parent_uuid IS NOT NULL OR mig_mode THEN
                  (CASE WHEN name ILIKE '%A30%' THEN 4.0 ELSE 7.0 END) END AS total_slices,
             CASE WHEN parent_uuid IS NOT NULL THEN TRY_CAST(split_part(mig_profile, 'g.', 1) AS DOUBLE) END AS slices
      FROM {src}
      {cond}
    """


def _window_where(s: AnalyzeSettings, *extra: str) -> str:
    """The WHERE clause selecting ts in [since, until), with any extra conditions."""
    where = list(extra)
    if s.since:
        where.append(f"ts >= TIMESTAMPTZ '{s.since.isoformat()}'")
    if s.until:
        where.append(f"ts < TIMESTAMPTZ '{s.until.isoformat()}'")
    return ("WHERE " + " AND ".join(where)) if where else ""


def rollups_source(con: duckdb.DuckDBPyConnection, files: list[str]) -> str:
    """Rollup files, with ``k8s_namespace`` as a typed NULL where no file has it (schema version 1)."""
    src = f"read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false)"
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    return src if "k8s_namespace" in have else f"(SELECT *, CAST(NULL AS VARCHAR) AS k8s_namespace FROM {src})"


def namespaces(con: duckdb.DuckDBPyConnection, src: str | None, rfiles: list[str], s: AnalyzeSettings,
               devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each device's spend, waste and idle cost split among the Kubernetes namespaces its samples name
    (DCGM imports label each sample with the pod then on the GPU): spend and GPU-hours by the
    namespace's share of the device's dt, waste by its share of dt x (1 - u/100) over samples with
    evidence, idle by its share of idle time (each falls back to the dt share where the device's
    weight is 0). Samples without a namespace form the ``null`` namespace, so the namespaces add up to
    the priced devices' totals. Empty (and no second scan) when no sample names a namespace."""
    rsrc = rollups_source(con, rfiles) if rfiles else None
    probes = ([f"SELECT 1 FROM {src} WHERE k8s_namespace IS NOT NULL"] if src else []) + \
             ([f"SELECT 1 FROM {rsrc} WHERE k8s_namespace IS NOT NULL"] if rsrc else [])
    if not probes or not con.execute(f"SELECT EXISTS ({' UNION ALL '.join(probes)})").fetchall()[0][0]:  # all rows fetched: nothing left open
        return []
    parts = []
    if src:
        parts.append(f"""SELECT host, uuid, k8s_namespace AS ns, sum(dt) AS dt,
                 coalesce(sum(CASE WHEN u IS NOT NULL THEN dt * (1 - u / 100) END), 0) AS waste_w,
                 coalesce(sum(CASE WHEN u < {float(s.idle_below)} THEN dt END), 0) AS idle_dt
          FROM ({_samples_sql(src, s)}) GROUP BY ALL""")
    if rsrc:
        parts.append(f"""SELECT host, uuid, k8s_namespace AS ns, sum(dt_s) AS dt, sum(ev_dt_s - u_dt / 100) AS waste_w,
                 sum(idle_dt_s) AS idle_dt
          FROM {rsrc} {_window_where(s)} GROUP BY ALL""")
    df = con.execute(f"SELECT host, uuid, ns, sum(dt) AS dt, sum(waste_w) AS waste_w, sum(idle_dt) AS idle_dt "
                     f"FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL").df()
    by_dev = {(d["host"], d["uuid"]): d for d in devices}
    tot = {k: (float(r["dt"]), float(r["waste_w"]), float(r["idle_dt"]))
           for k, r in df.groupby(["host", "uuid"])[["dt", "waste_w", "idle_dt"]].sum().iterrows()}
    out: dict[Any, dict[str, Any]] = {}
    for r in df.itertuples(index=False):  # one row per device and namespace: a Python loop over devices
        d = by_dev.get((r.host, r.uuid))
        if d is None or d.get("spend_usd") is None:
            continue
        t_dt, t_waste, t_idle = tot[(r.host, r.uuid)]
        dt_share = r.dt / t_dt if t_dt > 0 else 0.0
        ns = None if pd.isna(r.ns) else r.ns
        e = out.setdefault(ns, {"namespace": ns, "devices": 0, "gpu_hours": 0.0, "spend_usd": 0.0, "waste_usd": 0.0, "idle_usd": 0.0})
        e["devices"] += 1
        e["gpu_hours"] += d["gpu_hours"] * dt_share
        e["spend_usd"] += d["spend_usd"] * dt_share
        e["waste_usd"] += (d["waste_usd"] or 0.0) * (r.waste_w / t_waste if t_waste > 0 else dt_share)
        e["idle_usd"] += (d["idle_usd"] or 0.0) * (r.idle_dt / t_idle if t_idle > 0 else dt_share)
    return sorted(out.values(), key=lambda e: -e["spend_usd"])


def rollup_hours(con: duckdb.DuckDBPyConnection, files: list[str], s: AnalyzeSettings) -> pd.DataFrame:
    """The same per-(device, hour) sums as device_hours, from rollup rows."""
    src = f"read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false)"
    return con.execute(f"""
    SELECT host, uuid, epoch_us(ts) // 3600000000 AS hour,
           any_value(parent_uuid) AS parent_uuid, any_value(name) AS name, any_value(mig_profile) AS mig_profile,
           bool_or(mig_mode) AS mig_mode,
           max(CASE WHEN parent_uuid IS NOT NULL
                    THEN coalesce(TRY_CAST(split_part(mig_profile, 'g.', 1) AS DOUBLE), 0) / (CASE WHEN name ILIKE '%A30%' THEN 4.0 ELSE 7.0 END)
                    WHEN mig_mode THEN 0.0 ELSE 1.0 END) AS share,
           sum(n) AS n, sum(dt_s) AS dt_s, sum(ev_dt_s) AS ev_dt, sum(u_dt) AS u_dt, sum(idle_dt_s) AS idle_dt,
           sum(sm_dt_s) AS sm_dt, sum(sm_u_dt) AS smu_dt, sum(error_dt_s) AS error_dt,
           sum(util_gpu_dt_s) AS m_util_dt, sum(gr_engine_dt_s) AS m_gr_dt, sum(sm_active_dt_s) AS m_sm_dt,
           max(mem_max_bytes) AS mem_max, max(mem_total_bytes) AS mem_total,
           min(epoch_us(first_ts)) AS first_us, max(epoch_us(end_ts)) AS last_us, sum(free_dt_s) AS roll_free_dt,
           any_value(idle_below_pct) AS roll_idle_below
    FROM {src} {_window_where(s)} GROUP BY host, uuid, epoch_us(ts) // 3600000000
    """).df()


def device_hours(con: duckdb.DuckDBPyConnection, src: str | None, s: AnalyzeSettings, rollups: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (host, uuid, clock hour) with the dt-weighted sums every number needs.

    One pass with a plain GROUP BY (no join, no window function); the unallocated slices of GPUs in
    MIG mode come from a second, small query over MIG rows only, merged here.
    """
    idle = float(s.idle_below)
    # A device's share is constant, so the query sums plain dt-weighted terms and share is applied
    # per row of the result: waste = share x (ev_dt - u_dt / 100), idle = share x idle_dt.
    q = f"""
    SELECT host, uuid, hour,
           any_value(parent_uuid) AS parent_uuid, any_value(name) AS name, any_value(mig_profile) AS mig_profile,
           bool_or(mig_mode) AS mig_mode,
           max(CASE WHEN parent_uuid IS NOT NULL THEN coalesce(slices, 0) / total_slices
                    WHEN mig_mode THEN 0.0 ELSE 1.0 END) AS share,
           count(*) AS n, sum(dt) AS dt_s,
           sum(CASE WHEN u IS NOT NULL THEN dt END) AS ev_dt,
           sum(u * dt) AS u_dt,
           sum(CASE WHEN u < {idle} THEN dt END) AS idle_dt,
           sum(CASE WHEN sm IS NOT NULL THEN dt END) AS sm_dt,
           sum(sm * dt) AS smu_dt,
           sum(CASE WHEN has_error THEN dt END) AS error_dt,
           sum(CASE WHEN metric = 1 THEN dt END) AS m_util_dt,
           sum(CASE WHEN metric = 2 THEN dt END) AS m_gr_dt,
           sum(CASE WHEN metric = 3 THEN dt END) AS m_sm_dt,
           max(mem_used_bytes) AS mem_max, max(mem_total_bytes) AS mem_total,
           min(ts_us) AS first_us, max(ts_us + dt * 1e6) AS last_us
    FROM ({_samples_sql(src, s)}) GROUP BY host, uuid, hour
    """
    dh = con.execute(q).df() if src else pd.DataFrame()
    if rollups is not None and not rollups.empty and dh.empty:
        dh = rollups.drop(columns=["roll_idle_below"])  # already one row per (device, hour)
    elif rollups is not None and not rollups.empty:
        agg = {c: "sum" for c in ("n", "dt_s", "ev_dt", "u_dt", "idle_dt", "sm_dt", "smu_dt", "error_dt", "m_util_dt", "m_gr_dt",
                                  "m_sm_dt", "roll_free_dt")}
        agg.update(parent_uuid="first", name="first", mig_profile="first", mig_mode="max", share="max", mem_max="max",
                   mem_total="max", first_us="min", last_us="max")
        both = pd.concat([dh.assign(roll_free_dt=0.0), rollups.drop(columns=["roll_idle_below"])], ignore_index=True)
        both["mig_mode"] = both["mig_mode"].fillna(False).astype(bool)  # object dtype would make pandas loop in Python
        for c in ("ev_dt", "u_dt", "idle_dt", "sm_dt", "smu_dt", "error_dt", "m_util_dt", "m_gr_dt", "m_sm_dt", "roll_free_dt"):
            both[c] = both[c].astype(float).fillna(0.0)
        dh = both.groupby(["host", "uuid", "hour"], as_index=False, dropna=False).agg(agg)
    else:
        dh["roll_free_dt"] = 0.0
    for col in ("ev_dt", "u_dt", "idle_dt", "sm_dt", "smu_dt", "error_dt", "m_util_dt", "m_gr_dt", "m_sm_dt"):
        dh[col] = dh[col].astype(float).fillna(0.0)
    sh = dh["share"].astype(float)
    dh["share_dt"] = sh * dh["dt_s"]
    dh["ev_share_dt"] = sh * dh["ev_dt"]
    dh["waste_share_dt"] = sh * (dh["ev_dt"] - dh["u_dt"] / 100)
    dh["idle_share_dt"] = sh * dh["idle_dt"]
    dh["sm_share_dt"] = sh * dh["sm_dt"]
    dh["sm_waste_share_dt"] = sh * (dh["sm_dt"] - dh["smu_dt"] / 100)
    if not src:
        dh["free_dt"] = dh["roll_free_dt"].astype(float)
        return dh
    free = con.execute(f"""
    WITH m AS (SELECT * FROM ({_samples_sql(src, s)}) WHERE mig_mode OR parent_uuid IS NOT NULL),
    alloc AS (SELECT host, parent_uuid, ts_us, sum(slices) AS used FROM m WHERE parent_uuid IS NOT NULL GROUP BY ALL)
    SELECT p.host, p.uuid, p.hour,
           sum(greatest(0.0, 1.0 - coalesce(a.used, 0) / p.total_slices) * p.dt) AS free_dt
    FROM m p LEFT JOIN alloc a ON a.host = p.host AND a.parent_uuid = p.uuid AND a.ts_us = p.ts_us
    WHERE p.mig_mode AND p.parent_uuid IS NULL
    GROUP BY p.host, p.uuid, p.hour
    """).df()
    dh = dh.merge(free, on=["host", "uuid", "hour"], how="left") if not free.empty else dh.assign(free_dt=0.0)
    dh["free_dt"] = dh["free_dt"].astype(float).fillna(0.0) + dh["roll_free_dt"].astype(float).fillna(0.0)
    return dh


def device_distributions(con: duckdb.DuckDBPyConnection, src: str | None, s: AnalyzeSettings,
                         rollup_files: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per device, in one scan: dt-weighted histograms of u (1 % bins) and of memory used (0.1 % of
    the device's total), from which the 95th percentiles are read. Rolled-up minutes count as their
    mean utilization and peak memory."""
    parts = []
    if src:
        parts.append(f"SELECT host, uuid, u, mem_used_bytes, mem_total_bytes, dt FROM ({_samples_sql(src, s)})")
    if rollup_files:
        parts.append(f"""SELECT host, uuid, CASE WHEN ev_dt_s > 0 THEN u_dt / ev_dt_s END AS u, mem_max_bytes AS mem_used_bytes,
                         mem_total_bytes, dt_s AS dt
                         FROM read_parquet({_sql_list(rollup_files)}, union_by_name = true, hive_partitioning = false) {_window_where(s)}""")
    h = con.execute(f"""
        SELECT host, uuid, CAST(round(u) AS INTEGER) AS ubin,
               CAST(round(1000.0 * mem_used_bytes / mem_total_bytes) AS INTEGER) AS mbin,
               sum(dt) AS w, grouping(ubin) AS is_mem
        FROM ({" UNION ALL ".join(parts)})
        GROUP BY GROUPING SETS ((host, uuid, ubin), (host, uuid, mbin))
    """).df()
    util = h[(h["is_mem"] == 0) & h["ubin"].notna()].rename(columns={"ubin": "bin"})[["host", "uuid", "bin", "w"]]
    mem = h[(h["is_mem"] == 1) & h["mbin"].notna()].rename(columns={"mbin": "bin"})[["host", "uuid", "bin", "w"]]
    return util, weighted_p95(mem).rename(columns={"p95_util_pct": "mem_p95_permille"})


def weighted_p95(hist: pd.DataFrame) -> pd.DataFrame:
    """The dt-weighted 95th percentile: the smallest bin whose cumulative weight reaches 95 %."""
    if hist.empty:
        return pd.DataFrame(columns=["host", "uuid", "p95_util_pct"])
    h = hist.sort_values(["host", "uuid", "bin"])
    h["cum"] = h.groupby(["host", "uuid"])["w"].cumsum()
    h["tot"] = h.groupby(["host", "uuid"])["w"].transform("sum")
    hit = h[h["cum"] >= 0.95 * h["tot"] - 1e-9]
    return hit.groupby(["host", "uuid"], as_index=False)["bin"].first().rename(columns={"bin": "p95_util_pct"})


_KNOWN_HOST = "host IN (SELECT host FROM sample_hosts)"  # a token record's host has samples


def _in_window(start: float, end: float) -> str:
    return f"epoch_us(ts) >= {int(start * 1e6)} AND epoch_us(ts) < {int(end * 1e6)}"


def _token_where(start: float, end: float) -> str:
    """Token records that are attributed: in the window, from a host with samples."""
    return f"{_in_window(start, end)} AND {_KNOWN_HOST}"


def token_hours(con: duckdb.DuckDBPyConnection, tokens: pa.Table, hosts: set[str], start: float, end: float) -> pd.DataFrame:
    """Token records summed per (host, model, clock hour) in DuckDB, flagged for the window and for
    hosts with samples; the per-request table is registered as ``tokens_in`` and never becomes a
    pandas frame (6.9M demo requests: 4.2 GB peak before, as Python strings per record)."""
    con.register("tokens_in", tokens)
    con.register("sample_hosts", pa.table({"host": pa.array(sorted(hosts), pa.string())}))
    return con.execute(f"""
        SELECT host, model, CAST(epoch_us(ts) // 3600000000 AS BIGINT) AS hour, min(epoch_us(ts)) AS _ts,
               CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
               count(*) AS records, ({_in_window(start, end)}) AS in_window, ({_KNOWN_HOST}) AS known_host
        FROM tokens_in GROUP BY ALL
    """).df()


def flag_rows(rows: pd.DataFrame, hosts: set[str], start: float, end: float) -> pd.DataFrame:
    """Hourly token rows from engine counters, flagged as token_hours flags its rows (one record a row)."""
    return rows.assign(records=1, in_window=(rows["_ts"] >= start * 1e6) & (rows["_ts"] < end * 1e6),
                       known_host=rows["host"].isin(hosts))


def engine_data(con: duckdb.DuckDBPyConnection, roots: list[str], s: AnalyzeSettings) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """From the engine table: hourly token deltas per (host, model), and per-model engine statistics.

    Counters are stored as scraped; a series is one (host, endpoint, model). A sample's delta is its
    value minus the previous one of its series; a value below the previous one is a counter reset
    (a restarted server), whose delta is the new value; a series' first scrape has no delta.
    """
    files = table_files(roots, "engine", s.since, s.until)
    if not files:
        return pd.DataFrame(), {}
    src = (f"(SELECT * FROM read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false) "
           f"{_window_where(s, 'error IS NULL', 'model IS NOT NULL')})")

    def delta(col: str) -> str:
        prev = f"lag({col}) OVER w"
        return f"CASE WHEN {prev} IS NULL OR {col} IS NULL THEN 0 WHEN {col} >= {prev} THEN {col} - {prev} ELSE {col} END AS d_{col}"

    d = f"""
      SELECT host, model, engine, epoch_us(ts) AS ts_us, epoch_us(ts) // 3600000000 AS hour,
             {delta('prompt_tokens_total')}, {delta('generation_tokens_total')}, {delta('preemptions_total')},
             {delta('prefix_cache_queries_total')}, {delta('prefix_cache_hits_total')},
             requests_running, requests_waiting, kv_cache_usage_pct, kv_capacity_tokens, prefix_cache_hit_pct
      FROM {src} WINDOW w AS (PARTITION BY host, endpoint, model ORDER BY ts)
    """
    hourly = con.execute(f"""
      SELECT host, model, hour, min(ts_us) AS _ts, CAST(sum(d_prompt_tokens_total) AS BIGINT) AS prompt_tokens,
             CAST(sum(d_generation_tokens_total) AS BIGINT) AS completion_tokens, CAST(NULL AS VARCHAR) AS gpu_uuid
      FROM ({d}) GROUP BY host, model, hour HAVING sum(d_generation_tokens_total) > 0 OR sum(d_prompt_tokens_total) > 0
    """).df()
    stats = {}
    for row in con.execute(f"""
      SELECT model, any_value(engine), count(*), avg(requests_running), max(requests_running), avg(requests_waiting),
             avg(kv_cache_usage_pct), quantile_cont(kv_cache_usage_pct, 0.95), max(kv_capacity_tokens),
             sum(d_preemptions_total), sum(d_prefix_cache_hits_total), sum(d_prefix_cache_queries_total), avg(prefix_cache_hit_pct),
             list(DISTINCT host ORDER BY host)
      FROM ({d}) GROUP BY model
    """).fetchall():
        m, eng, n, run, runmax, wait, kv, kv95, cap, pre, hits, queries, hitpct, hosts = row
        stats[m] = {"engine": eng, "scrapes": int(n), "mean_requests_running": _f(run), "max_requests_running": _f(runmax),
                    "mean_requests_waiting": _f(wait), "mean_kv_cache_usage_pct": _f(kv), "p95_kv_cache_usage_pct": _f(kv95),
                    "kv_capacity_tokens": _f(cap), "preemptions": _f(pre),
                    "prefix_cache_hit_pct": (100 * hits / queries) if queries else _f(hitpct), "hosts": list(hosts)}
    return hourly, stats


def top_processes(con: duckdb.DuckDBPyConnection, roots: list[str], s: AnalyzeSettings) -> dict[tuple[str, str], dict[str, Any]]:
    """Per device, the process that held the most GPU memory in the window (name, pid, bytes)."""
    files = table_files(roots, "processes", s.since, s.until)
    if not files:
        return {}
    cond = _window_where(s)
    rows = con.execute(f"""
        SELECT host, uuid, arg_max(name, used_mem_bytes) AS name, arg_max(pid, used_mem_bytes) AS pid,
               max(used_mem_bytes) AS used_mem_bytes
        FROM read_parquet({_sql_list(files)}, union_by_name = true, hive_partitioning = false) {cond} GROUP BY host, uuid
    """).fetchall()
    return {(h, u): {"name": n, "pid": int(p) if p is not None else None, "used_mem_bytes": _f(b)} for h, u, n, p, b in rows}


def model_request_stats(con: duckdb.DuckDBPyConnection, start: float, end: float) -> dict[str, dict[str, Any]]:
    """Per model, from the attributed token records (``tokens_in``, registered by token_hours): request
    count, completion-length quantiles, tokens beyond the 95th-percentile length, the share of short
    requests, and the hosts."""
    rows = con.execute(f"""
        WITH t AS (SELECT * FROM tokens_in WHERE {_token_where(start, end)}),
             q AS (SELECT model, quantile_cont(completion_tokens, 0.95) AS p95 FROM t GROUP BY model)
        SELECT t.model, count(*) AS requests,
               quantile_cont(completion_tokens, 0.5) AS p50, any_value(q.p95) AS p95,
               quantile_cont(completion_tokens, 0.99) AS p99, quantile_cont(prompt_tokens, 0.5) AS prompt_p50,
               sum(greatest(completion_tokens - q.p95, 0)) AS excess,
               avg(CASE WHEN completion_tokens <= 64 THEN 1.0 ELSE 0.0 END) AS short_share,
               list(DISTINCT host ORDER BY host) AS hosts,
               list(DISTINCT gpu_uuid ORDER BY gpu_uuid) FILTER (WHERE gpu_uuid IS NOT NULL) AS gpus
        FROM t JOIN q USING (model) GROUP BY t.model
    """).fetchall()
    return {m: {"requests": int(n), "completion_p50": float(p50), "completion_p95": float(p95), "completion_p99": float(p99),
                "prompt_p50": float(pp), "completion_tokens_beyond_p95": float(ex), "short_request_share": float(sh),
                "hosts": list(hosts), "gpus": list(gpus or [])} for m, n, p50, p95, p99, pp, ex, sh, hosts, gpus in rows}


def window_of(dh: pd.DataFrame, s: AnalyzeSettings) -> tuple[float, float]:
    """The report window [start, end) in epoch seconds: --since/--until, else the data's extent."""
    start = s.since.timestamp() if s.since else float(dh["first_us"].min()) / 1e6
    end = s.until.timestamp() if s.until else float(dh["last_us"].max()) / 1e6
    return start, end


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _f(v: Any) -> float | None:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return float(v)


def attribute(dh: pd.DataFrame, toks: pd.DataFrame | None) -> dict[str, Any]:
    """Split each host's hourly GPU cost among the models that produced output tokens there.

    ``toks``: token counts per (host, model, hour) with ``records``, ``in_window`` and ``known_host``
    (token_hours, flag_rows). Returns per-model totals, the unattributed cost, per-model hourly
    series and counts of token records left out (host without samples, outside the window).
    """
    host_hour = dh.groupby(["host", "hour"], as_index=False)["spend_usd"].sum()
    out: dict[str, Any] = {"models": [], "unattributed_usd": float(host_hour["spend_usd"].sum()),
                           "records_outside_window": 0, "records_unknown_host": 0, "model_hourly": []}
    if toks is None or toks.empty:
        return out
    in_win, known = toks["in_window"].astype(bool), toks["known_host"].astype(bool)
    out["records_outside_window"] = int(toks.loc[~in_win, "records"].sum())
    out["records_unknown_host"] = int(toks.loc[in_win & ~known, "records"].sum())
    t = toks[in_win & known]
    tok = t.groupby(["host", "hour", "model"], as_index=False)[["prompt_tokens", "completion_tokens"]].sum()
    # Shares per host-hour among models with output tokens in that hour.
    hour_tot = tok.groupby(["host", "hour"])["completion_tokens"].transform("sum")
    tok["share"] = np.where(hour_tot > 0, tok["completion_tokens"] / hour_tot.where(hour_tot > 0, 1), 0.0)
    # Fallback shares per host over the whole window (for hours without tokens).
    host_model = tok.groupby(["host", "model"], as_index=False)["completion_tokens"].sum()
    htot = host_model.groupby("host")["completion_tokens"].transform("sum")
    host_model["share"] = np.where(htot > 0, host_model["completion_tokens"] / htot.where(htot > 0, 1), 0.0)
    hours_with_output = set(map(tuple, tok.loc[hour_tot > 0, ["host", "hour"]].drop_duplicates().to_numpy().tolist()))
    hh = host_hour.copy()
    hh["has_tokens"] = [(h, hr) in hours_with_output for h, hr in zip(hh["host"], hh["hour"])]
    direct = hh[hh["has_tokens"]].merge(tok[tok["share"] > 0][["host", "hour", "model", "share"]], on=["host", "hour"])
    fallback = hh[~hh["has_tokens"]].merge(host_model[host_model["share"] > 0][["host", "model", "share"]], on="host")
    parts = pd.concat([direct, fallback], ignore_index=True)
    parts["cost_usd"] = parts["spend_usd"] * parts["share"]
    attributed = float(parts["cost_usd"].sum()) if not parts.empty else 0.0
    out["unattributed_usd"] = float(host_hour["spend_usd"].sum()) - attributed
    cost = parts.groupby("model")["cost_usd"].sum() if not parts.empty else pd.Series(dtype=float)
    counts = t.groupby("model")[["prompt_tokens", "completion_tokens"]].sum()
    for model in sorted(set(counts.index) | set(cost.index)):
        c = float(cost.get(model, 0.0))
        p = int(counts.loc[model, "prompt_tokens"]) if model in counts.index else 0
        o = int(counts.loc[model, "completion_tokens"]) if model in counts.index else 0
        out["models"].append({
            "model": model, "prompt_tokens": p, "completion_tokens": o, "cost_usd": c,
            "cost_per_1m_output_tokens": c / o * 1e6 if o else None,
            "cost_per_1m_tokens": c / (p + o) * 1e6 if (p + o) else None,
        })
    if not parts.empty:
        mh = parts.groupby(["model", "hour"], as_index=False)["cost_usd"].sum()
        th = tok.groupby(["model", "hour"], as_index=False)[["prompt_tokens", "completion_tokens"]].sum()
        mh = mh.merge(th, on=["model", "hour"], how="left").fillna({"prompt_tokens": 0, "completion_tokens": 0})
        out["model_hourly"] = [[r.model, _iso(r.hour * 3600), float(r.cost_usd), int(r.prompt_tokens), int(r.completion_tokens)]
                               for r in mh.sort_values(["model", "hour"]).itertuples()]
    return out


def analyze(roots: list[str], pricing: Pricing, tokens: TokenLog | None, s: AnalyzeSettings,
            step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The findings (schema_version 1) for the stores at ``roots``. ``step`` is told the name of each
    stage as it starts (ANALYZE_STAGES, in order), for a progress display."""
    with session(s.memory_limit, s.threads) as con:
        return _analyze(con, roots, pricing, tokens, s, step or (lambda _name: None))


ANALYZE_STAGES = ("scanning samples per device and hour", "percentiles", "devices and costs",
                  "processes, engines and cost per model")


def _analyze(con: duckdb.DuckDBPyConnection, roots: list[str], pricing: Pricing, tokens: TokenLog | None,
             s: AnalyzeSettings, step: Callable[[str], None]) -> dict[str, Any]:
    step(ANALYZE_STAGES[0])
    rfiles = table_files(roots, "rollups", s.since, s.until)
    rolled = {os.path.dirname(f).split(os.sep + "rollups" + os.sep)[-1] for f in rfiles}
    # A day that has both (a rollup interrupted before the raw folder was removed) is read from the rollup.
    files = [f for f in table_files(roots, "samples", s.since, s.until)
             if os.path.dirname(f).split(os.sep + "samples" + os.sep)[-1] not in rolled]
    if not files and not rfiles:
        raise EmptyStore(f"no samples in {', '.join(roots)}" + (" in the window" if s.since or s.until else ""))
    src = samples_source(con, files) if files else None
    ru = rollup_hours(con, rfiles, s) if rfiles else None
    rollup_idle = sorted({float(x) for x in ru["roll_idle_below"].dropna()}) if ru is not None else []
    dh = device_hours(con, src, s, ru)
    if dh.empty:
        raise EmptyStore(f"no samples in {', '.join(roots)} between --since and --until")
    step(ANALYZE_STAGES[1])
    hist, mem = device_distributions(con, src, s, rfiles)
    start, end = window_of(dh, s)
    window_h = (end - start) / 3600

    # Prices per device (host, name): the pricing file, then the catalog; None = unpriced.
    devs = dh.groupby(["host", "uuid"], as_index=False).agg(name=("name", "first"))
    # A device without a name (a DCGM series without modelName) is NaN here: no name, not a float.
    prices = {(h, u): pricing.price(h, n if isinstance(n, str) else None) for h, u, n in devs.itertuples(index=False)}
    dh["price"] = [prices[(h, u)].per_hour if prices[(h, u)] else np.nan for h, u in zip(dh["host"], dh["uuid"])]
    dh["free_dt"] = dh["free_dt"].astype(float).fillna(0.0)
    p = dh["price"].fillna(0.0)
    dh["gpu_s"] = dh["share_dt"] + dh["free_dt"]
    dh["spend_usd"] = p * dh["gpu_s"] / 3600
    dh["waste_usd"] = p * (dh["waste_share_dt"] + dh["free_dt"]) / 3600
    dh["idle_usd"] = p * (dh["idle_share_dt"] + dh["free_dt"]) / 3600
    dh["unalloc_usd"] = p * dh["free_dt"] / 3600
    dh["sm_waste_usd"] = p * dh["sm_waste_share_dt"] / 3600

    g = dh.groupby(["host", "uuid"], as_index=False)
    dev = g.agg(
        parent_uuid=("parent_uuid", "first"), name=("name", "first"), mig_profile=("mig_profile", "first"),
        mig_mode=("mig_mode", "max"), share=("share", "max"), dt_s=("dt_s", "sum"), gpu_s=("gpu_s", "sum"),
        ev_dt=("ev_dt", "sum"), u_dt=("u_dt", "sum"), idle_share_dt=("idle_share_dt", "sum"), free_dt=("free_dt", "sum"),
        spend_usd=("spend_usd", "sum"), waste_usd=("waste_usd", "sum"), idle_usd=("idle_usd", "sum"),
        unalloc_usd=("unalloc_usd", "sum"), sm_share_dt=("sm_share_dt", "sum"), sm_waste_usd=("sm_waste_usd", "sum"),
        error_dt=("error_dt", "sum"), mem_max=("mem_max", "max"), mem_total=("mem_total", "max"),
        m_util=("m_util_dt", "sum"), m_gr=("m_gr_dt", "sum"), m_sm=("m_sm_dt", "sum"),
    )
    dev = dev.merge(weighted_p95(hist), on=["host", "uuid"], how="left").merge(mem, on=["host", "uuid"], how="left")
    dev = dev.sort_values(["host", "uuid"]).reset_index(drop=True)
    window_s = end - start

    step(ANALYZE_STAGES[2])
    devices, unpriced, no_evidence, gaps, read_errors = [], [], [], [], []
    for r in dev.itertuples(index=False):
        pr = prices[(r.host, r.uuid)]
        parent_in_mig = bool(r.mig_mode) and (r.parent_uuid is None or pd.isna(r.parent_uuid))
        metric = max((("util_gpu_pct", r.m_util), ("gr_engine_active_pct", r.m_gr), ("sm_active_pct", r.m_sm)),
                     key=lambda kv: kv[1] or 0)
        has_ev = r.ev_dt > 0
        d = {
            "host": r.host, "uuid": r.uuid, "name": None if pd.isna(r.name) else r.name,
            "parent_uuid": None if pd.isna(r.parent_uuid) else r.parent_uuid,
            "mig_profile": None if pd.isna(r.mig_profile) else r.mig_profile,
            "mig_mode": bool(r.mig_mode), "share": float(r.share),
            "gpu_hours": r.gpu_s / 3600,
            "mean_util_pct": r.u_dt / r.ev_dt if has_ev else None,
            "p95_util_pct": _f(r.p95_util_pct) if has_ev else None,
            "utilization_metric": metric[0] if has_ev else None,
            "idle_hours": (r.idle_share_dt + r.free_dt) / 3600,
            "peak_memory_bytes": _f(r.mem_max), "memory_total_bytes": _f(r.mem_total),
            "p95_memory_bytes": (r.mem_p95_permille / 1000 * r.mem_total) if not (pd.isna(r.mem_p95_permille) or pd.isna(r.mem_total)) else None,
            "price_per_hour": pr.per_hour if pr else None, "price_source": pr.source if pr else None,
            "price_provider": pr.provider if pr else None,
            "spend_usd": r.spend_usd if pr else None, "waste_usd": r.waste_usd if pr else None,
            "idle_usd": r.idle_usd if pr else None,
            "unallocated_usd": r.unalloc_usd if pr and parent_in_mig else None,
            "waste_sm_active_usd": r.sm_waste_usd if pr and r.sm_share_dt > 0 else None,
            "coverage_pct": 100 * r.dt_s / window_s if window_s > 0 else None,
            "covered_hours": r.dt_s / 3600,
            "error_hours": r.error_dt / 3600,
        }
        devices.append(d)
        if pr is None:
            unpriced.append({"host": r.host, "uuid": r.uuid, "name": d["name"]})
        if not has_ev and not parent_in_mig:
            no_evidence.append({"host": r.host, "uuid": r.uuid, "name": d["name"], "mig_profile": d["mig_profile"],
                                "why": "its samples stand for no time (interval_s 0: a single imported point; import with --interval)"
                                if not r.dt_s else
                                "no utilization reading (MIG device without GPM or DCGM)" if d["parent_uuid"]
                                else "no utilization reading"})
        if d["error_hours"] > 0:  # billed, with no utilization reading: the device could not be read
            read_errors.append({"host": r.host, "uuid": r.uuid, "name": d["name"], "error_hours": d["error_hours"]})
        missing = window_s - r.dt_s
        if not parent_in_mig and window_s > 0 and missing > max(0.01 * window_s, 60):
            gaps.append({"host": r.host, "uuid": r.uuid, "missing_hours": missing / 3600,
                         "coverage_pct": d["coverage_pct"]})

    billable = [d for d in devices if not (d["mig_mode"] and d["parent_uuid"] is None)]
    priced = dh["price"].notna()
    ev = dh["ev_dt"].sum()
    sm_rows = dh[priced & (dh["sm_share_dt"] > 0)]
    fleet = {
        "devices": len(billable),
        "gpu_hours": float(dh["gpu_s"].sum() / 3600),
        "spend_usd": float(dh.loc[priced, "spend_usd"].sum()),
        "waste_usd": float(dh.loc[priced, "waste_usd"].sum()),
        "idle_usd": float(dh.loc[priced, "idle_usd"].sum()),
        "unallocated_usd": float(dh.loc[priced, "unalloc_usd"].sum()),
        "idle_hours": float((dh["idle_share_dt"] + dh["free_dt"]).sum() / 3600),
        "mean_util_pct": float(dh["u_dt"].sum() / ev) if ev > 0 else None,
        "unattributed_usd": None,
        "coverage_pct": float(sum(d["coverage_pct"] or 0 for d in billable) / len(billable)) if billable else None,
        "unpriced_gpu_hours": float(dh.loc[~priced, "gpu_s"].sum() / 3600),
        "waste_sm_active_usd": float(sm_rows["sm_waste_usd"].sum()) if not sm_rows.empty else None,
        "waste_util_on_sm_devices_usd": float(sm_rows["waste_usd"].sum()) if not sm_rows.empty else None,
    }
    fleet["utilization_pct_of_spend"] = (100 * (1 - fleet["waste_usd"] / fleet["spend_usd"])) if fleet["spend_usd"] else None
    # Spend in three parts for the report: productive (spend - waste), idle, and the rest of the waste
    # (busy but under-used). Idle samples waste (1 - u) of their cost, so waste >= idle up to u < 5 %.
    fleet["spend_split"] = {"productive_usd": fleet["spend_usd"] - fleet["waste_usd"], "idle_usd": fleet["idle_usd"],
                            "underused_usd": max(0.0, fleet["waste_usd"] - fleet["idle_usd"])}

    step(ANALYZE_STAGES[3])
    ns_costs = namespaces(con, src, rfiles, s, devices)
    procs = top_processes(con, roots, s)
    for d in devices:
        d["top_process"] = procs.get((d["host"], d["uuid"]))

    sample_hosts = set(dh["host"])
    toks_df = token_hours(con, tokens.table, sample_hosts, start, end) if tokens is not None and tokens.table.num_rows else None
    engine_hourly, engine_stats = engine_data(con, roots, s)
    token_source = "token logs" if toks_df is not None else None
    if toks_df is None and not engine_hourly.empty:
        toks_df = flag_rows(engine_hourly, sample_hosts, start, end)  # no token logs: the engines' counters are the token source
        token_source = "engine counters"
    att = attribute(dh[priced], toks_df)
    fleet["unattributed_usd"] = att["unattributed_usd"] if toks_df is not None else fleet["spend_usd"]

    stats = model_request_stats(con, start, end) if token_source == "token logs" else {}
    if token_source == "token logs":
        con.unregister("tokens_in")
    for m in att["models"]:
        m.update(stats.get(m["model"], {}))
        if token_source == "engine counters":
            m["hosts"] = engine_stats.get(m["model"], {}).get("hosts", [])
        m["engine"] = engine_stats.get(m["model"])
    out_tokens = sum(m["completion_tokens"] for m in att["models"])
    fleet["cost_per_1m_output_tokens"] = (
        (fleet["spend_usd"] - fleet["unattributed_usd"]) / out_tokens * 1e6 if out_tokens else None)
    series = {
        "device_hourly": {"columns": list(HOURLY_COLUMNS), "rows": _hourly_columns(dh)},
        "model_hourly": {"columns": ["model", "hour", "cost_usd", "prompt_tokens", "completion_tokens"],
                         "rows": att["model_hourly"]},
        "utilization_histogram": _fleet_histogram(hist),
    }
    return {
        "schema_version": 1,
        "generated_at": _iso(datetime.now(timezone.utc).timestamp()),
        "window": {"start": _iso(start), "end": _iso(end), "hours": window_h},
        "utilization_metric": _fleet_metric(devices),
        "idle_below_pct": s.idle_below,
        "token_source": token_source,
        "fleet": fleet,
        "devices": devices,
        "models": att["models"],
        "namespaces": ns_costs,
        "api_prices": [vars(a) for a in pricing.api.values()],
        "recommendations": [],
        "series": series,
        "data_quality": {
            "gaps": gaps,
            "unpriced_devices": unpriced,
            "devices_without_evidence": no_evidence,
            "devices_with_read_errors": read_errors,
            "rejected_token_records": ({"count": tokens.bad, "examples": tokens.bad_examples} if tokens is not None else {"count": 0, "examples": []}),
            "token_records_outside_window": att["records_outside_window"],
            "token_records_unknown_host": att["records_unknown_host"],
            "rollup_idle_below_pct": [x for x in rollup_idle if x != s.idle_below],
        },
        "inputs": {"stores": roots, "pricing": pricing.path, "token_logs": tokens.files if tokens else []},
    }


def _hourly_columns(dh: pd.DataFrame) -> HourlyColumns:
    """The device-hourly series, column-wise (a fleet has millions of device-hours)."""
    ev = dh["ev_dt"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ev > 0, dh["u_dt"].to_numpy(dtype=float) / np.where(ev > 0, ev, 1), np.nan)
    return HourlyColumns(dh["host"], dh["uuid"], dh["hour"], {
        "mean_util_pct": mean, "mem_max_bytes": dh["mem_max"].to_numpy(dtype=float, na_value=np.nan),
        "spend_usd": np.where(dh["price"].isna().to_numpy(), np.nan, dh["spend_usd"].to_numpy(dtype=float)),
        "covered_s": dh["dt_s"].to_numpy(dtype=float), "idle_s": np.where(ev > 0, dh["idle_dt"].to_numpy(dtype=float), np.nan),
        "evidence_s": ev})


def _fleet_metric(devices: list[dict[str, Any]]) -> str:
    used = sorted({d["utilization_metric"] for d in devices if d["utilization_metric"]})
    return used[0] if len(used) == 1 else ("mixed: " + ", ".join(used) if used else "none")


def _fleet_histogram(hist: pd.DataFrame) -> dict[str, Any]:
    """dt-weighted hours of device time per 10 % utilization bucket, fleet-wide."""
    if hist.empty:
        return {"bins": [], "hours": []}
    b = (hist["bin"].clip(0, 100) // 10).clip(upper=9)
    hours = hist.groupby(b)["w"].sum() / 3600
    return {"bins": [f"{10 * i}-{10 * i + 10}%" for i in range(10)], "hours": [float(hours.get(i, 0.0)) for i in range(10)]}
