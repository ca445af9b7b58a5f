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

import pandas as pd

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
    dh: pd.DataFrame
    repaired: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def scan(q: Runner, files: list[str], w: Window, rollup_files: list[str] | None = None) -> Scan:
    """Read the samples once; where the detection flags device-hours, re-read just those, repaired.
    Raw rows of a time that ``rollup_files`` cover (late rows for a rolled-up day, a rollup
    interrupted before its raw files went) are left out where the rollup has that device and minute."""
    if not files:
        return Scan(None, pd.DataFrame())
    files, covered_from = split_covered(files, rollup_files or [])
    if covered_from is not None:
        q.rolled_up([f for f in rollup_files or [] if partition_key(f) in {partition_key(x) for x in files[covered_from:]}])
    src = q.samples_source(files, covered_from=covered_from)
    absent = getattr(src, "absent", frozenset())  # columns no file has: their sums are constants
    rows = samples_sql(src, w.since, w.until, d=q.d)
    per_file = several_per_partition(files)  # else no two files can hold the same device-hour
    dh = q.df(hour_sums_sql(rows, float(w.idle_below), per_file, absent=absent, d=q.d))
    early = bool((dh["hour"] < EARLIEST_HOUR).any())  # rows before 2000: read again, rejecting them
    if dh["host"].isna().any() or early:  # a file without a host column: the host comes from its host= folder
        src = q.samples_source(files, host_from_path=bool(dh["host"].isna().any()), covered_from=covered_from)
        rows = samples_sql(src, w.since, w.until, early=early, d=q.d)
        dh = q.df(hour_sums_sql(rows, float(w.idle_below), per_file, absent=absent, d=q.d))
    rejected = _rejected(q, src, w, files, early) if dh["bad_n"].sum() > 0 else []
    if not rejected:  # every row in range: the later scans need not check again
        rows = samples_sql(src, w.since, w.until, check=False, d=q.d)
    # rows without ts or uuid, or with a time before 2000, were counted as rejected: their hours are no part of the window
    dh = dh[dh["uuid"].notna() & dh["hour"].notna() & (dh["hour"] >= EARLIEST_HOUR)]
    sus = dh.loc[dh["suspect"].astype(bool), ["host", "uuid", "hour"]]
    flagged = sorted((h, u, int(hr)) for h, u, hr in sus.itertuples(index=False))
    cleaned: Cleaned = q.dedup(rows, flagged)
    if flagged:
        fixed = q.df(hour_sums_sql(q.only_hours(cleaned.sql, "flagged_hours"), float(w.idle_below), False, weighted=True,
                                      absent=absent, d=q.d))
        keys = pd.MultiIndex.from_frame(dh[["host", "uuid", "hour"]].astype({"hour": "int64"}))
        dh = pd.concat([dh[~keys.isin(flagged)], fixed], ignore_index=True)
    return Scan(cleaned.sql, dh.drop(columns=["suspect"]), cleaned.devices, rejected)


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


def rollup_hours(q: Runner, files: list[str], w: Window, rsrc: str | None = None) -> pd.DataFrame:
    """The same per-(device, hour) sums as the sample scan, from rollup rows."""
    d = q.d
    return q.df(f"""
    SELECT host, uuid, {d.hour("ts")} AS hour,
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
    FROM {rsrc or q.rollups_source(files)} {window_where(w.since, w.until, d=d)} GROUP BY host, uuid, {d.hour("ts")}
    """)


def device_hours(q: Runner, sc: Scan, rollups: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (host, uuid, clock hour) with the dt-weighted sums every number needs: the scan's
    sums, rollup rows, and the unallocated (``free_dt``) and unseen (``blind_dt``) time of GPUs in MIG
    mode from a small query over MIG rows only."""
    dh = sc.dh
    if rollups is not None and not rollups.empty and dh.empty:
        dh = rollups.drop(columns=["roll_idle_below"])  # already one row per (device, hour)
    elif rollups is not None and not rollups.empty:
        agg = {c: "sum" for c in ("n", "bad_n", "dt_s", *SUM_COLUMNS, "roll_free_dt", "roll_blind_dt", "roll_stranded_dt")}
        agg.update(parent_uuid="first", name="first", mig_profile="first", mig_mode="max", share="max", mem_max="max",
                   mem_total="max", first_us="min", last_us="max")
        both = pd.concat([dh.assign(roll_free_dt=0.0, roll_blind_dt=0.0, roll_stranded_dt=0.0), rollups.drop(columns=["roll_idle_below"])],
                         ignore_index=True)
        both["mig_mode"] = both["mig_mode"].fillna(False).astype(bool)  # object dtype would make pandas loop in Python
        for c in (*SUM_COLUMNS, "roll_free_dt", "roll_blind_dt", "roll_stranded_dt"):
            both[c] = both[c].astype(float).fillna(0.0)
        dh = both.groupby(["host", "uuid", "hour"], as_index=False, dropna=False).agg(agg)
    else:
        dh = dh.assign(roll_free_dt=0.0, roll_blind_dt=0.0, roll_stranded_dt=0.0)
    dh["has_energy"] = dh["energy_j"].notna()  # null: no power reading and no counter (not 0 kWh)
    for col in SUM_COLUMNS:
        dh[col] = dh[col].astype(float).fillna(0.0)
    # Utilization vs power (DESIGN.md "Evidence cross-checks"): where a device-hour holds 10 minutes or
    # more of samples read as idle while the board draws over 70 % of its limit, those samples are no
    # evidence (billed; no waste, idle or unallocated claim). Rolled-up days carry no power: unchecked.
    hot = dh["hot_dt"] >= HOT_IDLE_S
    dh["hot_hour"] = hot
    if hot.any():
        for col, less in (("ev_dt", "hot_dt"), ("u_dt", "hot_udt"), ("idle_dt", "hot_dt")):
            dh.loc[hot, col] = (dh.loc[hot, col] - dh.loc[hot, less]).clip(lower=0.0)
    sh = dh["share"].astype(float)
    dh["share_dt"] = sh * dh["dt_s"]
    dh["ev_share_dt"] = sh * dh["ev_dt"]
    dh["waste_share_dt"] = sh * (dh["ev_dt"] - dh["u_dt"] / 100)
    dh["idle_share_dt"] = sh * dh["idle_dt"]
    dh["sm_share_dt"] = sh * dh["sm_dt"]
    dh["sm_waste_share_dt"] = sh * (dh["sm_dt"] - dh["smu_dt"] / 100)
    free = q.df(f"SELECT host, uuid, hour, sum(free_dt) AS free_dt, sum(blind_dt) AS blind_dt, sum(stranded_dt) AS stranded_dt "
                f"FROM ({mig_free_sql(sc.rows)}) m GROUP BY ALL") if sc.rows and _any_mig(sc.dh) else pd.DataFrame()
    dh = dh.merge(free, on=["host", "uuid", "hour"], how="left") if not free.empty else dh.assign(free_dt=0.0, blind_dt=0.0, stranded_dt=0.0)
    dh["free_dt"] = dh["free_dt"].astype(float).fillna(0.0) + dh["roll_free_dt"].astype(float).fillna(0.0)
    dh["stranded_dt"] = dh["stranded_dt"].astype(float).fillna(0.0) + dh["roll_stranded_dt"].astype(float).fillna(0.0)
    dh["blind_dt"] = dh["blind_dt"].astype(float).fillna(0.0) + dh["roll_blind_dt"].astype(float).fillna(0.0)
    return dh


def device_distributions(q: Runner, rows: str | None, w: Window,
                         rollup_files: list[str] | None = None, rsrc: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per device, in one scan: dt-weighted histograms of u (1 % bins) and of memory used (0.1 % of
    the device's total), from which the 95th percentiles are read. Rolled-up minutes count as their
    mean utilization and peak memory."""
    parts = []
    if rows:
        parts.append(f"SELECT host, uuid, u, mem_used_bytes, mem_total_bytes, dt FROM ({rows})")
    if rollup_files:
        parts.append(f"""SELECT host, uuid, CASE WHEN ev_dt_s > 0 THEN u_dt / ev_dt_s END AS u, mem_max_bytes AS mem_used_bytes,
                         mem_total_bytes, dt_s AS dt
                         FROM {rsrc or q.rollups_source(rollup_files)} {window_where(w.since, w.until, d=q.d)}""")
    h = q.df(f"""
        SELECT host, uuid, ubin, mbin, sum(dt) AS w, grouping(ubin) AS is_mem
        FROM (SELECT host, uuid, dt, CAST(round(u) AS INTEGER) AS ubin,
                     CAST(floor(1000.0 * mem_used_bytes / mem_total_bytes) AS INTEGER) AS mbin
              FROM ({" UNION ALL ".join(parts)}) p) b
        GROUP BY GROUPING SETS ((host, uuid, ubin), (host, uuid, mbin))
    """)
    util = h[(h["is_mem"] == 0) & h["ubin"].notna()].rename(columns={"ubin": "bin"})[["host", "uuid", "bin", "w"]]
    mem = h[(h["is_mem"] == 1) & h["mbin"].notna()].rename(columns={"mbin": "bin"})[["host", "uuid", "bin", "w"]]
    return util, weighted_p95(mem).rename(columns={"p95_util_pct": "mem_p95_permille"})


def _any_mig(dh: pd.DataFrame) -> bool:
    """Whether the samples' scan saw a MIG instance or a GPU in MIG mode (else no MIG query runs)."""
    return bool(dh["parent_uuid"].notna().any() or dh["mig_mode"].fillna(False).astype(bool).any())


def weighted_p95(hist: pd.DataFrame) -> pd.DataFrame:
    """The dt-weighted 95th percentile: the smallest bin whose cumulative weight reaches 95 %."""
    if hist.empty:
        return pd.DataFrame(columns=["host", "uuid", "p95_util_pct"])
    h = hist.sort_values(["host", "uuid", "bin"])
    h["cum"] = h.groupby(["host", "uuid"])["w"].cumsum()
    h["tot"] = h.groupby(["host", "uuid"])["w"].transform("sum")
    hit = h[h["cum"] >= 0.95 * h["tot"] - 1e-9]
    return hit.groupby(["host", "uuid"], as_index=False)["bin"].first().rename(columns={"bin": "p95_util_pct"})
