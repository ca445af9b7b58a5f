"""Samples to per-(device, clock hour) sums: the one heavy scan of the analysis, and the small ones
that read the same cleaned rows (percentiles, unallocated MIG time, namespaces).

"One reading per device and instant" (docs/metrics.md) is kept here at the cost of one cheap
detection: the hourly sums are taken per (device, hour, file) first, which shows duplicates and
overlapping series without a sort. A file whose samples in a device-hour stand for more time than
they span holds duplicate or overlapping rows; two files whose spans in a device-hour overlap hold
the same instants or overlapping series. Only the device-hours so flagged are re-read, counted
once per instant and cut to wall time (``gpu_audit.store.query.dedup``); a clean store pays for the
span aggregates, and for the per-file group key only where a partition holds several files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpu_audit.analyze.runner import DuckRunner as Runner  # the interface; Spark's runner has the same methods

from gpu_audit.store.query import (EARLIEST_HOUR, SUM_COLUMNS, Cleaned, hour_sums_sql, mig_free_sql, missing_columns, partition_key,
                                   samples_sql, several_per_partition, split_covered, window_where)

HOT_IDLE_S = 600.0  # 10 minutes of "idle" at high power in a device-hour: the utilization reading is wrong


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None
    idle_below: float = 5.0


@dataclass
class Scan:
    """The samples of the window, read once: per (device, hour) sums and the cleaned row source."""

    rows: str | None  # per-sample SQL, one reading per device and instant (None: rollups only)
    dh: str | None  # the local DuckDB table of per-(device, hour) sums (None: no sample files)
    repaired: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)


SCAN_HOURS = "gpu_audit_scan_hours"  # the scan's device-hour table in the local DuckDB


def scan(q: Runner, files: list[str], w: Window, rollup_files: list[str] | None = None) -> Scan:
    """Read the samples once; where the detection flags device-hours, re-read just those, repaired.
    Raw rows of a time that ``rollup_files`` cover (late rows for a rolled-up day, a rollup
    interrupted before its raw files went) are left out where the rollup has that device and minute.
    The sums stay in the local DuckDB (``SCAN_HOURS``): no frame of them is made."""
    if not files:
        return Scan(None, None)
    files, covered_from = split_covered(files, rollup_files or [])
    if covered_from is not None:
        q.rolled_up([f for f in rollup_files or [] if partition_key(f) in {partition_key(x) for x in files[covered_from:]}])
    src = q.samples_source(files, covered_from=covered_from)
    absent = getattr(src, "absent", frozenset())  # columns no file has, or NULL in every row: their sums are constants
    rows = samples_sql(src, w.since, w.until, d=q.d)
    per_file = several_per_partition(files)  # else no two files can hold the same device-hour
    q.into(SCAN_HOURS, hour_sums_sql(rows, float(w.idle_below), per_file, absent=absent, d=q.d))
    con = q.con
    no_host, early, bad = con.execute(f"""SELECT coalesce(bool_or(host IS NULL), false), coalesce(bool_or(hour < {EARLIEST_HOUR}), false),
                                                 coalesce(sum(bad_n), 0) FROM {SCAN_HOURS}""").fetchall()[0]
    if no_host or early:  # a file without a host column: the host comes from its host= folder; rows before 2000: read again, rejecting them
        src = q.samples_source(files, host_from_path=bool(no_host), covered_from=covered_from)
        rows = samples_sql(src, w.since, w.until, early=early, d=q.d)
        q.into(SCAN_HOURS, hour_sums_sql(rows, float(w.idle_below), per_file, absent=absent, d=q.d))
        bad = con.execute(f"SELECT coalesce(sum(bad_n), 0) FROM {SCAN_HOURS}").fetchall()[0][0]
    rejected = _rejected(q, src, w, files, early) if bad > 0 else []
    if not rejected:  # every row in range: the later scans need not check again
        rows = samples_sql(src, w.since, w.until, check=False, d=q.d)
    # rows without ts or uuid, or with a time before 2000, were counted as rejected: their hours are no part of the window
    con.execute(f"DELETE FROM {SCAN_HOURS} WHERE uuid IS NULL OR hour IS NULL OR hour < {EARLIEST_HOUR}")
    flagged = [(h, u, int(hr)) for h, u, hr in con.execute(f"SELECT host, uuid, hour FROM {SCAN_HOURS} WHERE suspect").fetchall()]
    flagged.sort()
    cleaned: Cleaned = q.dedup(rows, flagged)
    if flagged:
        q.into("gpu_audit_fixed_hours", hour_sums_sql(q.only_hours(cleaned.sql, "flagged_hours"), float(w.idle_below), False,
                                                      weighted=True, absent=absent, d=q.d))
        con.execute(f"DELETE FROM {SCAN_HOURS} WHERE suspect")
        con.execute(f"INSERT INTO {SCAN_HOURS} BY NAME SELECT * FROM gpu_audit_fixed_hours")
        con.execute("DROP TABLE gpu_audit_fixed_hours")
    con.execute(f"ALTER TABLE {SCAN_HOURS} DROP COLUMN suspect")
    return Scan(cleaned.sql, SCAN_HOURS, cleaned.devices, rejected)


def _rejected(q: Runner, src: str, w: Window, files: list[str], early: bool = False) -> list[dict[str, Any]]:
    """Per file, the rows that reach no sum and why (a second scan, run only when there are some)."""
    from gpu_audit.store.query import EARLIEST_US, StoreFileError, bad_sql

    found = [(q.file_name(files, i), *rest) for i, *rest in q.fetch(f"""
      SELECT file_index, count(*),
             count(*) FILTER (WHERE ts IS NULL OR uuid IS NULL),
             count(*) FILTER (WHERE interval_s IS NULL OR interval_s < 0 OR NOT CAST(interval_s AS DOUBLE) BETWEEN -1e308 AND 1e308),
             count(*) FILTER (WHERE {q.d.epoch_us("ts")} < {EARLIEST_US})
      FROM {src} {window_where(w.since, w.until, bad_sql(early, q.d), d=q.d)} GROUP BY file_index ORDER BY file_index
    """)]
    lacking = missing_columns([f for f, *_ in found])
    if lacking:
        f, cols = next(iter(lacking.items()))
        raise StoreFileError(f"cannot read {f}: a samples file without the column {cols[0]!r}",
                             hint="every samples file needs ts, uuid and interval_s (docs/store.md)")
    out = []
    for i, n, no_key, bad_dt, early in found:
        why = []
        if no_key:
            why.append(f"{no_key} without ts or uuid")
        if bad_dt:
            why.append(f"{bad_dt} with interval_s negative, NaN, infinite or null")
        if early:
            why.append(f"{early} with a time before 2000-01-01")
        if n - no_key - bad_dt - early > 0:
            why.append(f"{n - no_key - bad_dt - early} with utilization outside 0-100 %")
        out.append({"file": i, "rows": int(n), "why": "; ".join(why)})
    return out


def namespaces(q: Runner, rows: str | None, rfiles: list[str], w: Window,
               devices: list[dict[str, Any]], rsrc: str | None = None, any_rollup_namespace: bool | None = None) -> list[dict[str, Any]]:
    """Each device's spend, waste and idle cost split among the Kubernetes namespaces its samples name
    (DCGM imports label each sample with the pod then on the GPU): spend and GPU-hours by the
    namespace's share of the device's dt, waste by its share of dt x (1 - u/100) over samples with
    evidence, idle by its share of idle time (each falls back to the dt share where the device's
    weight is 0). Samples without a namespace form the ``null`` namespace, so the namespaces add up to
    the priced devices' totals. Empty (and no second scan) when no sample names a namespace."""
    rsrc = rsrc or (q.rollups_source(rfiles) if rfiles else None)
    # (``any_rollup_namespace``: the rollup scan already counted them; no probe over the rollups)
    probes = ([f"SELECT 1 FROM ({rows}) WHERE k8s_namespace IS NOT NULL"] if rows else []) + \
             ([f"SELECT 1 FROM {rsrc} WHERE k8s_namespace IS NOT NULL"] if rsrc and any_rollup_namespace is None else
              ["SELECT 1"] if any_rollup_namespace else [])
    if not probes or not q.fetch(f"SELECT count(*) FROM ({' UNION ALL '.join(probes)} LIMIT 1) p")[0][0]:  # all rows fetched: nothing left open
        return []
    import pandas as pd  # only where some sample names a namespace

    parts = []
    if rows:
        parts.append(f"""SELECT host, uuid, k8s_namespace AS ns, sum(dt) AS dt,
                 coalesce(sum(CASE WHEN u IS NOT NULL THEN dt * (1 - u / 100) END), 0) AS waste_w,
                 coalesce(sum(CASE WHEN u < {float(w.idle_below)} THEN dt END), 0) AS idle_dt
          FROM ({rows}) GROUP BY ALL""")
    if rsrc:
        parts.append(f"""SELECT host, uuid, k8s_namespace AS ns, sum(dt_s) AS dt, sum(ev_dt_s - u_dt / 100) AS waste_w,
                 sum(idle_dt_s) AS idle_dt
          FROM {rsrc} {window_where(w.since, w.until, d=q.d)} GROUP BY ALL""")
    df = q.df(f"SELECT host, uuid, ns, sum(dt) AS dt, sum(waste_w) AS waste_w, sum(idle_dt) AS idle_dt "
              f"FROM ({' UNION ALL '.join(parts)}) p GROUP BY ALL")
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


ROLLUP_SETS = "gpu_audit_rollup_sets"  # the one read of the rollups: their hourly sums and histogram groups
ROLLUP_HOURS = "gpu_audit_rollup_hours"  # the rollups' per-(device, hour) sums
ROLLUP_HIST = "gpu_audit_rollup_hist"  # the rollups' part of the histograms (host, uuid, bin, w, is_mem)
DEVICE_HOURS = "gpu_audit_device_hours"  # the analysis' device-hour table (device_hours; prices and costs: engine)


def rollup_hours(q: Runner, files: list[str], w: Window, rsrc: str | None = None) -> str:
    """The same per-(device, hour) sums as the sample scan, from rollup rows (the local table
    ``ROLLUP_HOURS``), and in the same read of the files the rollups' part of the utilization and
    memory histograms (``ROLLUP_HIST``; a rolled-up minute counts as its mean utilization and peak
    memory): a month of a large fleet is tens of thousands of files, and each read of them costs
    about 1 ms a file (docs/benchmarks.md)."""
    d = q.d
    q.into(ROLLUP_SETS, f"""
    SELECT host, uuid, hour, ubin, mbin, grouping(hour) AS g_hour, grouping(ubin) AS g_u, sum(dt_s) AS w,
           any_value(parent_uuid) AS parent_uuid, any_value(name) AS name, any_value(mig_profile) AS mig_profile,
           bool_or(mig_mode) AS mig_mode,
           max(CASE WHEN parent_uuid IS NOT NULL
                    THEN coalesce(TRY_CAST(split_part(mig_profile, 'g.', 1) AS DOUBLE), 0) / (CASE WHEN name ILIKE '%A30%' THEN 4.0 ELSE 7.0 END)
                    WHEN mig_mode THEN 0.0 ELSE 1.0 END) AS share,
           sum(n) AS n, 0 AS bad_n, sum(dt_s) AS dt_s, sum(ev_dt_s) AS ev_dt, sum(u_dt) AS u_dt, sum(idle_dt_s) AS idle_dt,
           sum(sm_dt_s) AS sm_dt, sum(sm_u_dt) AS smu_dt, sum(error_dt_s) AS error_dt,
           sum(util_gpu_dt_s) AS m_util_dt, sum(gr_engine_dt_s) AS m_gr_dt, sum(sm_active_dt_s) AS m_sm_dt,
           max(mem_max_bytes) AS mem_max, max(mem_total_bytes) AS mem_total,
           min({d.epoch_us("first_ts")}) AS first_us, max({d.epoch_us("end_ts")}) AS last_us, sum(free_dt_s) AS roll_free_dt,
           coalesce(sum(stranded_dt_s), 0) AS roll_stranded_dt,
           coalesce(sum(blind_dt_s), 0) AS roll_blind_dt, any_value(idle_below_pct) AS roll_idle_below,
           sum(energy_j) AS energy_j, sum(idle_energy_j) AS idle_energy_j, 0.0 AS hot_dt, 0.0 AS hot_udt, CAST(coalesce(sum(CASE WHEN energy_counter_dt_s >= dt_s AND dt_s > 0 THEN n END), 0) AS DOUBLE) AS counter_n,
           count(k8s_namespace) AS ns_n
    FROM (SELECT *, {d.hour("ts")} AS hour, CAST(round(CASE WHEN ev_dt_s > 0 THEN u_dt / ev_dt_s END) AS INTEGER) AS ubin,
                 CAST(floor(1000.0 * mem_max_bytes / mem_total_bytes) AS INTEGER) AS mbin
          FROM {rsrc or q.rollups_source(files)} {window_where(w.since, w.until, d=d)}) r
    GROUP BY GROUPING SETS ((host, uuid, hour), (host, uuid, ubin), (host, uuid, mbin))
    """)
    con = q.con  # views over the one table (a month of a large fleet is millions of device-hours: no copy)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ROLLUP_HOURS} AS SELECT * EXCLUDE (ubin, mbin, g_hour, g_u, w) FROM {ROLLUP_SETS} WHERE g_hour = 0")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {ROLLUP_HIST} AS
      SELECT host, uuid, CASE WHEN g_u = 0 THEN ubin ELSE mbin END AS bin, w, g_u = 1 AS is_mem FROM {ROLLUP_SETS}
      WHERE g_hour = 1 AND CASE WHEN g_u = 0 THEN ubin ELSE mbin END IS NOT NULL""")
    return ROLLUP_HOURS


_ROLL = ("roll_free_dt", "roll_blind_dt", "roll_stranded_dt")


def device_hours(q: Runner, sc: Scan, rollups: str | None = None) -> str:
    """One row per (host, uuid, clock hour) with the dt-weighted sums every number needs, as the local
    table ``DEVICE_HOURS``: the scan's sums, rollup rows, and the unallocated (``free_dt``) and unseen
    (``blind_dt``) time of GPUs in MIG mode from a small query over MIG rows only. Written once, in one
    statement: a fleet has millions of device-hours (docs/benchmarks.md)."""
    con = q.con
    zero = lambda c: f"coalesce(CAST({c} AS DOUBLE), 0.0)"  # noqa: E731
    if sc.dh and rollups:  # both: a device-hour can have raw rows and rollup rows
        first = lambda c: f"arg_min({c}, part) FILTER (WHERE {c} IS NOT NULL) AS {c}"  # noqa: E731 (the scan's value, else the rollup's)
        both = (f"SELECT *, {', '.join(f'0.0 AS {c}' for c in _ROLL)}, 0 AS part FROM {sc.dh} UNION ALL BY NAME "
                f"SELECT * EXCLUDE (roll_idle_below, ns_n), 1 AS part FROM {rollups}")
        base = f"""
      SELECT host, uuid, hour, {first("parent_uuid")}, {first("name")}, {first("mig_profile")},
             coalesce(bool_or(mig_mode), false) AS mig_mode, max(share) AS share, sum(n) AS n, sum(bad_n) AS bad_n, sum(dt_s) AS dt_s,
             {", ".join(f"coalesce(sum(CAST({c} AS DOUBLE)), 0.0) AS {c}" for c in (*SUM_COLUMNS, *_ROLL))},
             count(energy_j) > 0 AS has_energy,  -- null: no power reading and no counter (not 0 kWh)
             max(mem_max) AS mem_max, max(mem_total) AS mem_total, min(first_us) AS first_us, max(last_us) AS last_us
      FROM ({both}) b GROUP BY host, uuid, hour"""
    else:  # one source: already one row per device-hour
        src = sc.dh or rollups
        roll = ", ".join(f"{zero(c) if rollups else '0e0'} AS {c}" for c in _ROLL)
        base = f"""
      SELECT host, uuid, hour, parent_uuid, name, mig_profile, coalesce(mig_mode, false) AS mig_mode, share, n, bad_n, dt_s,
             {", ".join(f"{zero(c)} AS {c}" for c in SUM_COLUMNS)}, {roll},
             energy_j IS NOT NULL AS has_energy,  -- null: no power reading and no counter (not 0 kWh)
             mem_max, mem_total, first_us, last_us
      FROM {src}"""
    # Utilization vs power (DESIGN.md "Evidence cross-checks"): where a device-hour holds 10 minutes or
    # more of samples read as idle while the board draws over 70 % of its limit, those samples are no
    # evidence (billed; no waste, idle or unallocated claim). Rolled-up days carry no power: unchecked.
    less = {"ev_dt": "hot_dt", "u_dt": "hot_udt", "idle_dt": "hot_dt"}
    fixed = ", ".join(f"CASE WHEN hot_dt >= {HOT_IDLE_S} THEN greatest({c} - {m}, 0.0) ELSE {c} END AS {c}" for c, m in less.items())
    any_mig = sc.rows and sc.dh and con.execute(
        f"SELECT coalesce(bool_or(parent_uuid IS NOT NULL OR mig_mode), false) FROM {sc.dh}").fetchall()[0][0]
    if any_mig:  # the samples' scan saw a MIG instance or a GPU in MIG mode (else no MIG query runs)
        q.into("gpu_audit_mig_free", f"SELECT host, uuid, hour, sum(free_dt) AS free_dt, sum(blind_dt) AS blind_dt, "
                                     f"sum(stranded_dt) AS stranded_dt FROM ({mig_free_sql(sc.rows)}) m GROUP BY ALL")
        join, val = "LEFT JOIN gpu_audit_mig_free m USING (host, uuid, hour)", lambda c: f"coalesce(CAST(m.{c} AS DOUBLE), 0.0)"  # noqa: E731
    else:
        join, val = "", lambda c: "0e0"  # noqa: E731 (a DOUBLE: 0.0 is a DECIMAL in DuckDB)
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE {DEVICE_HOURS} AS
    WITH g AS ({base})
    SELECT g.* EXCLUDE ({", ".join(_ROLL)}) REPLACE ({fixed}), g.hot_dt >= {HOT_IDLE_S} AS hot_hour,
           {val("free_dt")} + g.roll_free_dt AS free_dt, {val("stranded_dt")} + g.roll_stranded_dt AS stranded_dt,
           {val("blind_dt")} + g.roll_blind_dt AS blind_dt
    FROM g {join}""")
    if any_mig:
        con.execute("DROP TABLE gpu_audit_mig_free")
    return DEVICE_HOURS


HIST = "gpu_audit_hist"  # per device: dt-weighted seconds per utilization bin (1 %) and memory bin (0.1 %)


def device_distributions(q: Runner, rows: str | None, rollup_hist: str | None = None, devices: str | None = None) -> str:
    """Per device: dt-weighted histograms of u (1 % bins) and of memory used (0.1 % of the device's
    total), from which the 95th percentiles are read (``p95_sql``), as the local table ``HIST``
    (host, uuid, bin, w, is_mem): the samples' in one scan, plus ``rollup_hist`` (rollup_hours).
    ``devices``: a local table of the (host, uuid) the rows hold (the scan's hours)."""
    parts = []
    if rows:
        # Grouped by a 64-bit hash of (host, uuid) where no two of the scan's devices share one (18 %
        # faster than two strings a row); the devices' names come back through a join.
        by_hash = devices is not None and q.d.name == "duckdb" and q.con.execute(
            f"SELECT count(DISTINCT hash(host, uuid)) = count(*) FROM (SELECT DISTINCT host, uuid FROM {devices})").fetchall()[0][0]
        key = "hash(host, uuid) AS k" if by_hash else "host, uuid"
        keys = "k" if by_hash else "host, uuid"
        q.into("gpu_audit_hist_sets", f"""
            SELECT {keys}, ubin, mbin, sum(dt) AS w, grouping(ubin) AS is_mem
            FROM (SELECT {key}, dt, CAST(round(u) AS INTEGER) AS ubin,
                         CAST(floor(1000.0 * mem_used_bytes / mem_total_bytes) AS INTEGER) AS mbin
                  FROM ({rows}) p) b
            GROUP BY GROUPING SETS (({keys}, ubin), ({keys}, mbin))
        """)
        names = (f"(SELECT h.*, d.host, d.uuid FROM gpu_audit_hist_sets h JOIN "
                 f"(SELECT DISTINCT host, uuid, hash(host, uuid) AS k FROM {devices}) d USING (k))" if by_hash else "gpu_audit_hist_sets")
        parts.append(f"""SELECT host, uuid, CASE WHEN is_mem = 0 THEN ubin ELSE mbin END AS bin, w, is_mem = 1 AS is_mem
                        FROM {names} h WHERE CASE WHEN is_mem = 0 THEN ubin ELSE mbin END IS NOT NULL""")
    if rollup_hist:
        parts.append(f"SELECT host, uuid, bin, w, is_mem FROM {rollup_hist}")
    q.con.execute(f"""CREATE OR REPLACE TEMP TABLE {HIST} AS
      SELECT host, uuid, bin, sum(w) AS w, is_mem FROM ({" UNION ALL ".join(parts)}) h GROUP BY host, uuid, bin, is_mem""")
    if rows:
        q.con.execute("DROP TABLE gpu_audit_hist_sets")
    return HIST


def p95_sql(hist: str, is_mem: bool) -> str:
    """Per device, the dt-weighted 95th percentile bin of ``hist``: the smallest bin whose cumulative
    weight reaches 95 %."""
    return f"""
      SELECT host, uuid, min(bin) AS p95 FROM (
        SELECT host, uuid, bin, sum(w) OVER (PARTITION BY host, uuid ORDER BY bin ROWS UNBOUNDED PRECEDING) AS cum,
               sum(w) OVER (PARTITION BY host, uuid) AS tot
        FROM {hist} WHERE is_mem = {"true" if is_mem else "false"}) h
      WHERE cum >= 0.95 * tot - 1e-9 GROUP BY host, uuid"""


def drop_inputs(con: Any) -> None:
    """Drop the scan's and the rollups' tables once the device-hour table and the histograms are made
    from them: a 10,000-GPU month holds millions of rows in each (the peak memory of the report)."""
    for view in (ROLLUP_HOURS, ROLLUP_HIST):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    for table in (ROLLUP_SETS, SCAN_HOURS):
        con.execute(f"DROP TABLE IF EXISTS {table}")
