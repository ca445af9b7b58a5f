"""Samples to money: spend, waste, idle cost, attribution of cost to models.

Every number follows docs/metrics.md (the project's account of DESIGN.md "What every number
means"). The heavy work is one DuckDB aggregation to one row per (device, clock hour), kept as a
DuckDB table; prices, energy, per-device and fleet figures are SQL over it. pandas is imported only
to split token records and workloads among models and workloads. No Python loop runs per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import duckdb
import numpy as np
import pyarrow as pa

from gpu_audit.hourly import COLUMNS as HOURLY_COLUMNS, HourlyColumns
from gpu_audit.analyze.pricing import Pricing
from gpu_audit.analyze.runner import DuckRunner, DuckRunner as Runner
from gpu_audit.duck import list_table, session
from gpu_audit.errors import GpuAuditError
from gpu_audit.analyze.usage import (DEVICE_HOURS, ROLLUP_HIST, Scan, Window, device_distributions, device_hours, drop_inputs,
                                     namespaces, p95_sql, rollup_hours, scan)
from gpu_audit.store.query import window_where

if TYPE_CHECKING:
    import pandas as pd

    from gpu_audit.analyze.tokens import TokenLog

class EmptyStore(GpuAuditError):
    pass


@dataclass(frozen=True)
class AnalyzeSettings:
    idle_below: float = 5.0
    since: datetime | None = None
    until: datetime | None = None
    memory_limit: str = "1GB"
    threads: int | None = None
    params_b: dict[str, float] = field(default_factory=dict)  # [models."name"] params_b from the settings file
    engine: str = "duckdb"  # where the scan runs: duckdb, or spark (docs/scale.md)
    spark_master: str = "local[*]"
    spark_conf: tuple[tuple[str, str], ...] = ()


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
        SELECT host, gpu_uuid, model, CAST(epoch_us(ts) // 3600000000 AS BIGINT) AS hour, min(epoch_us(ts)) AS _ts,
               CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
               CAST(sum(cached_tokens) AS BIGINT) AS cached_tokens, CAST(sum(reasoning_tokens) AS BIGINT) AS reasoning_tokens,
               count(*) AS records, ({_in_window(start, end)}) AS in_window, ({_KNOWN_HOST}) AS known_host
        FROM tokens_in GROUP BY ALL
    """).df()


def flag_rows(rows: pd.DataFrame, hosts: set[str], start: float, end: float) -> pd.DataFrame:
    """Hourly token rows from engine counters, flagged as token_hours flags its rows (one record a row)."""
    return rows.assign(records=1, in_window=(rows["_ts"] >= start * 1e6) & (rows["_ts"] < end * 1e6),
                       known_host=rows["host"].isin(hosts))


def engine_data(con: duckdb.DuckDBPyConnection, roots: list[str], s: AnalyzeSettings,
                q: Runner | None = None) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]]]:
    """From the engine table: hourly token deltas per (host, model), and per-model engine statistics.

    Counters are stored as scraped; a series is one (host, endpoint, model). A sample's delta is its
    value minus the previous one of its series; a value below the previous one is a counter reset
    (a restarted server), whose delta is the new value; a series' first scrape has no delta.
    """
    q = q or DuckRunner(con)
    files = q.table_files(roots, "engine", s.since, s.until)
    if not files:
        return None, {}
    src = f"(SELECT * FROM {q.local_table(files)} {window_where(s.since, s.until, 'error IS NULL', 'model IS NOT NULL')})"

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


def top_processes(q: Runner, roots: list[str], s: AnalyzeSettings) -> dict[tuple[str, str], dict[str, Any]]:
    """Per device, the process that held the most GPU memory in the window (name, pid, bytes)."""
    files = q.table_files(roots, "processes", s.since, s.until)
    if not files:
        return {}
    cond = window_where(s.since, s.until, d=q.d)
    rows = q.fetch(f"""
        SELECT host, uuid, max_by(name, used_mem_bytes) AS name, max_by(pid, used_mem_bytes) AS pid,
               max(used_mem_bytes) AS used_mem_bytes
        FROM {q.table(files)} p {cond} GROUP BY host, uuid
    """)
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


def window_of(con: duckdb.DuckDBPyConnection, dh: str, s: AnalyzeSettings) -> tuple[float, float]:
    """The report window [start, end) in epoch seconds: --since/--until, else the data's extent."""
    lo, hi = con.execute(f"SELECT min(first_us), max(last_us) FROM {dh}").fetchall()[0]
    start = s.since.timestamp() if s.since else float(lo) / 1e6
    end = s.until.timestamp() if s.until else float(hi) / 1e6
    return start, end


def _model_energy(energy: dict[str, pd.Series], model: str, output: int) -> dict[str, Any]:
    """A model's attributed kWh, Wh and gCO2e per 1M output tokens, output tokens per kWh."""
    kwh = float(energy["kwh"].get(model, 0.0)) if "kwh" in energy else None
    co2 = float(energy["kgco2e"].get(model, 0.0)) if "kgco2e" in energy else None
    return {"energy_kwh": kwh, "wh_per_1m_output_tokens": kwh * 1000 / output * 1e6 if kwh and output else None,
            "gco2e_per_1m_output_tokens": co2 * 1000 / output * 1e6 if co2 and output else None,
            "output_tokens_per_kwh": output / kwh if kwh else None}


def _int_or_none(v: Any) -> int | None:
    import pandas as pd  # (a value of attribute's frames)

    return None if v is None or pd.isna(v) else int(v)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _f(v: Any) -> float | None:
    """A number as a float; None for null or NaN."""
    if v is None:
        return None
    x = float(v)
    return None if x != x else x


def attribute(dh: pd.DataFrame, toks: pd.DataFrame | None) -> dict[str, Any]:
    """Split GPU cost among the models that produced output tokens, at the finest level the logs allow
    (DESIGN.md "Cost per model").

    ``toks``: token counts per (host, gpu_uuid, model, hour) with ``records``, ``in_window`` and
    ``known_host`` (token_hours, flag_rows). A record whose (host, gpu_uuid) names a device is
    attributed to that device: each device's cost in each hour is split among the models with output
    tokens on it that hour (else by its model shares over the window); a device that served no tokens
    stays unattributed. Records without a matching gpu_uuid are attributed per host, over the host's
    devices that no gpu_uuid record claims. Returns per-model totals with their ``attribution``
    (device, host, or mixed), the unattributed cost, per-model hourly series and counts of token
    records left out (host without samples, outside the window).
    """
    import pandas as pd  # only where there are token records to attribute
    out: dict[str, Any] = {"models": [], "unattributed_usd": float(dh["spend_usd"].sum()),
                           "records_outside_window": 0, "records_unknown_host": 0, "model_hourly": []}
    if toks is None or toks.empty:
        return out
    in_win, known = toks["in_window"].astype(bool), toks["known_host"].astype(bool)
    out["records_outside_window"] = int(toks.loc[~in_win, "records"].sum())
    out["records_unknown_host"] = int(toks.loc[in_win & ~known, "records"].sum())
    t = toks[in_win & known].copy()
    gpu = t["gpu_uuid"] if "gpu_uuid" in t else pd.Series([None] * len(t), index=t.index)
    devs = set(dh[["host", "uuid"]].drop_duplicates().itertuples(index=False, name=None))
    t["unit"] = ["*" if g is None or (isinstance(g, float) and g != g) or (h, g) not in devs else g for h, g in zip(t["host"], gpu)]
    claimed = set(zip(t.loc[t["unit"] != "*", "host"], t.loc[t["unit"] != "*", "unit"]))
    own = pd.Series([k in claimed for k in zip(dh["host"], dh["uuid"])], index=dh.index, dtype=bool)
    vals = [c for c in ("spend_usd", "kwh", "kgco2e") if c in dh]  # energy is attributed like cost
    per_dev = dh[own].groupby(["host", "uuid", "hour"], as_index=False)[vals].sum().rename(columns={"uuid": "unit"})
    per_host = dh[~own].groupby(["host", "hour"], as_index=False)[vals].sum().assign(unit="*")
    cost_hours = pd.concat([per_dev, per_host], ignore_index=True)
    cost_hours["unit"] = cost_hours["unit"].astype(str)  # an empty part would make the key a float column
    keys = ["host", "unit"]
    tok = t.groupby([*keys, "hour", "model"], as_index=False)[["prompt_tokens", "completion_tokens"]].sum()
    # Shares per unit-hour among models with output tokens in that hour.
    hour_tot = tok.groupby([*keys, "hour"])["completion_tokens"].transform("sum")
    tok["share"] = np.where(hour_tot > 0, tok["completion_tokens"] / hour_tot.where(hour_tot > 0, 1), 0.0)
    # Fallback shares per unit over the whole window (for hours without tokens).
    unit_model = tok.groupby([*keys, "model"], as_index=False)["completion_tokens"].sum()
    utot = unit_model.groupby(keys)["completion_tokens"].transform("sum")
    unit_model["share"] = np.where(utot > 0, unit_model["completion_tokens"] / utot.where(utot > 0, 1), 0.0)
    with_output = tok.loc[hour_tot > 0, [*keys, "hour"]].drop_duplicates().assign(has_tokens=True)
    ch = cost_hours.merge(with_output, on=[*keys, "hour"], how="left")
    ch["has_tokens"] = ch["has_tokens"].fillna(False).astype(bool)
    def join(a: pd.DataFrame, b: pd.DataFrame, on: list[str]) -> pd.DataFrame:
        return a.merge(b, on=on) if len(a) and len(b) else pd.DataFrame(columns=[*a.columns, "model", "share"])

    direct = join(ch[ch["has_tokens"]], tok[tok["share"] > 0][[*keys, "hour", "model", "share"]], [*keys, "hour"])
    fallback = join(ch[~ch["has_tokens"]], unit_model[unit_model["share"] > 0][[*keys, "model", "share"]], keys)
    parts = pd.concat([x for x in (direct, fallback) if len(x)], ignore_index=True) if len(direct) or len(fallback) else direct
    parts["cost_usd"] = parts["spend_usd"] * parts["share"]
    for c in vals[1:]:
        parts[c] = parts[c].astype(float) * parts["share"].astype(float)
    attributed = float(parts["cost_usd"].sum()) if not parts.empty else 0.0
    out["unattributed_usd"] = float(dh["spend_usd"].sum()) - attributed
    cost = parts.groupby("model")["cost_usd"].sum() if not parts.empty else pd.Series(dtype=float)
    energy = {c: parts.groupby("model")[c].sum() for c in vals[1:]} if not parts.empty else {}
    counts = t.groupby("model")[["prompt_tokens", "completion_tokens"]].sum()
    extra = {c: t.groupby("model")[c].sum(min_count=1) for c in ("cached_tokens", "reasoning_tokens") if c in t}
    levels = t.assign(dev=t["unit"] != "*").groupby("model")["dev"].agg(["all", "any"])
    for model in sorted(set(counts.index) | set(cost.index)):
        c = float(cost.get(model, 0.0))
        p = int(counts.loc[model, "prompt_tokens"]) if model in counts.index else 0
        o = int(counts.loc[model, "completion_tokens"]) if model in counts.index else 0
        lv = levels.loc[model] if model in levels.index else None
        cached, reasoning = (_int_or_none(extra[c].get(model)) if c in extra else None for c in ("cached_tokens", "reasoning_tokens"))
        out["models"].append({
            "model": model, "attribution": None if lv is None else "device" if lv["all"] else "mixed" if lv["any"] else "host",
            "prompt_tokens": p, "completion_tokens": o, "cost_usd": c,
            "cached_tokens": cached, "reasoning_tokens": reasoning,
            "cache_hit_pct": 100 * cached / p if cached is not None and p else None,
            **_model_energy(energy, model, o),
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
    say = step or (lambda _name: None)
    with session(s.memory_limit, s.threads) as con:
        run = _Run(con, roots, pricing, tokens, s, _runner(con, s))
        try:
            for name, stage in zip(ANALYZE_STAGES, (_scan_stage, _percentiles_stage, _devices_stage, _models_stage)):
                say(name)
                stage(run)
        finally:
            run.q.close()
        return run.findings()


def _runner(con: duckdb.DuckDBPyConnection, s: AnalyzeSettings) -> Runner:
    if s.engine == "spark":
        from gpu_audit.analyze.spark import SparkRunner

        return SparkRunner(con, s.spark_master, dict(s.spark_conf))
    return DuckRunner(con)


ANALYZE_STAGES = ("scanning samples per device and hour", "percentiles", "devices and costs",
                  "processes, engines and cost per model")


@dataclass
class _Run:
    """One analysis: its inputs, and what each stage leaves for the next."""

    con: duckdb.DuckDBPyConnection
    roots: list[str]
    pricing: Pricing
    tokens: TokenLog | None
    s: AnalyzeSettings
    q: Runner  # where the scan runs (DuckDB here, or Spark)
    w: Window = field(init=False)
    sc: Scan | None = None
    rfiles: list[str] = field(default_factory=list)
    dh: str | None = None  # the device-hour table in the local DuckDB (usage.DEVICE_HOURS)
    dev: list[Any] | None = None  # per device: its sums (a row with attribute access)
    hist: str | None = None  # the histograms' table (usage.HIST)
    rollup_idle: list[float] = field(default_factory=list)
    rsrc: str | None = None  # the rollups' FROM item (rollups_source), built once
    rollup_namespaces: bool | None = None  # whether some rollup row names a namespace
    start: float = 0.0
    end: float = 0.0
    prices: dict[tuple[str, str], Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, Any] = field(default_factory=dict)
    out: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.w = Window(self.s.since, self.s.until, self.s.idle_below)

    def findings(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "generated_at": _iso(datetime.now(timezone.utc).timestamp()),
            "window": {"start": _iso(self.start), "end": _iso(self.end), "hours": (self.end - self.start) / 3600},
            "utilization_metric": _fleet_metric(self.devices),
            "idle_below_pct": self.s.idle_below,
            "fleet": self.fleet,
            "devices": self.devices,
            **self.out,
            "api_prices": [vars(a) for a in self.pricing.api.values()],
            "recommendations": [],
            "data_quality": self.quality,
            "inputs": {"stores": self.roots, "pricing": self.pricing.path, "token_logs": self.tokens.files if self.tokens else []},
        }


def _scan_stage(r: _Run) -> None:
    """Every sample of the window read once into per-(device, hour) sums (and rollup rows)."""
    s = r.s
    r.rfiles = r.q.table_files(r.roots, "rollups", s.since, s.until)
    # Raw rows of a rolled-up day (late rows, an interrupted rollup) are read too; where the rollup
    # has their device and minute they count once (usage.scan).
    files = r.q.table_files(r.roots, "samples", s.since, s.until)
    if not files and not r.rfiles:
        raise EmptyStore(f"no samples in {', '.join(r.roots)}" + (" in the window" if s.since or s.until else ""))
    r.sc = scan(r.q, files, r.w, r.rfiles)
    r.rsrc = r.q.rollups_source(r.rfiles) if r.rfiles else None  # read the rollups' footers once
    ru = rollup_hours(r.q, r.rfiles, r.w, r.rsrc) if r.rfiles else None
    if ru is not None:
        ns_n, idle = r.con.execute(f"SELECT coalesce(sum(ns_n), 0), list(DISTINCT CAST(roll_idle_below AS DOUBLE)) "
                                   f"FILTER (WHERE roll_idle_below IS NOT NULL) FROM {ru}").fetchall()[0]
        r.rollup_namespaces = ns_n > 0
        r.rollup_idle = sorted(float(x) for x in idle or [])
    r.dh = device_hours(r.q, r.sc, ru)
    rows, dt, n, bad = r.con.execute(f"SELECT count(*), sum(dt_s), sum(n), sum(bad_n) FROM {r.dh}").fetchall()[0]
    if not rows or not ((dt or 0) > 0 or (n or 0) > (bad or 0)):
        if r.sc.rejected:
            first = r.sc.rejected[0]
            raise EmptyStore(f"no usable samples in {', '.join(r.roots)}: {first['file']}: {first['rows']} rows rejected ({first['why']})")
        if not rows:
            raise EmptyStore(f"no samples in {', '.join(r.roots)} between --since and --until")


COSTS = "gpu_audit_costs"  # the device-hours with prices, spend, waste, idle cost and energy (a view)


def _energy_sql(con: duckdb.DuckDBPyConnection, dh: str, pricing: Pricing, hosts: list[str]) -> str:
    """Per device-hour: kWh (a MIG instance takes its share of its GPU's energy in that hour, the GPU in
    MIG mode the rest), idle kWh (physical GPUs), and energy $ and kgCO2e where the pricing file gives
    them for the host (x PUE). Energy $ is beside spend, never in it. Returns the CTEs ending in ``e``
    (``dh``'s rows with those columns); they read the table ``gpu_audit_host_energy`` made here."""
    inst, parents = con.execute(f"SELECT coalesce(bool_or(parent_uuid IS NOT NULL), false), "
                                f"coalesce(bool_or(parent_uuid IS NULL AND mig_mode), false) FROM {dh}").fetchall()[0]
    e = {h: pricing.energy(h) for h in hosts}
    list_table(con, "gpu_audit_host_energy", {
        "host": ("VARCHAR", hosts), "pue": ("DOUBLE", [e[h].pue for h in hosts]),
        "usd": ("DOUBLE", [e[h].usd_per_kwh for h in hosts]), "grid": ("DOUBLE", [e[h].grid_gco2_per_kwh for h in hosts])})
    if inst and parents:
        share = f"""
        par AS (SELECT host, uuid AS parent_uuid, hour, energy_j AS pe FROM {dh} WHERE parent_uuid IS NULL AND mig_mode),
        s AS (SELECT d.*, CASE WHEN d.parent_uuid IS NOT NULL THEN coalesce(par.pe, 0.0) * CAST(d.share AS DOUBLE)
                               ELSE d.energy_j END AS share_j
              FROM {dh} d LEFT JOIN par ON d.parent_uuid IS NOT NULL AND par.host = d.host AND par.parent_uuid = d.parent_uuid
                                           AND par.hour = d.hour),
        kids AS (SELECT host, parent_uuid AS uuid, hour, sum(share_j) AS kid_j FROM s WHERE parent_uuid IS NOT NULL GROUP BY ALL),
        j AS (SELECT s.* REPLACE (CASE WHEN s.parent_uuid IS NOT NULL THEN s.share_j
                                       ELSE greatest(s.share_j - coalesce(k.kid_j, 0.0), 0.0) END AS share_j)
              FROM s LEFT JOIN kids k ON s.parent_uuid IS NULL AND k.host = s.host AND k.uuid = s.uuid AND k.hour = s.hour)"""
    else:
        share = f"j AS (SELECT *, energy_j AS share_j FROM {dh})"
    return f"""{share},
      k AS (SELECT j.* EXCLUDE (share_j), j.share_j / 3.6e6 AS kwh,
                   CASE WHEN j.parent_uuid IS NOT NULL THEN 0.0 ELSE j.idle_energy_j / 3.6e6 END AS idle_kwh,
                   he.pue, he.usd, he.grid
            FROM j LEFT JOIN gpu_audit_host_energy he USING (host)),
      e AS (SELECT k.* EXCLUDE (pue, usd, grid, has_energy), coalesce(kwh * pue * usd, 0.0) AS energy_usd,
                   coalesce(kwh * pue * grid / 1000, 0.0) AS kgco2e, usd IS NOT NULL AS has_energy_usd, grid IS NOT NULL AS has_co2,
                   {"CASE WHEN parent_uuid IS NOT NULL THEN kwh > 0 ELSE has_energy END" if inst else "has_energy"} AS has_energy
            FROM k)"""


class _Row:
    """A result row with attribute access (a device's sums)."""

    def __init__(self, names: list[str], values: tuple[Any, ...]) -> None:
        self.__dict__.update(zip(names, values))


def _percentiles_stage(r: _Run) -> None:
    assert r.sc is not None and r.dh is not None
    con, dh = r.con, r.dh
    r.hist = device_distributions(r.q, r.sc.rows, ROLLUP_HIST if r.rfiles else None, r.sc.dh)
    drop_inputs(con)  # the device-hour table and the histograms are all that is read from here on
    r.start, r.end = window_of(con, dh, r.s)
    # Prices per device (host, name): the pricing file, then the catalog; None = unpriced.
    devs = con.execute(f"SELECT host, uuid, any_value(name) FROM {dh} GROUP BY host, uuid").fetchall()
    r.prices = {(h, u): r.pricing.price(h, n if isinstance(n, str) else None) for h, u, n in devs}
    list_table(con, "gpu_audit_prices", {
        "host": ("VARCHAR", [h for h, _, _ in devs]), "uuid": ("VARCHAR", [u for _, u, _ in devs]),
        "price": ("DOUBLE", [r.prices[(h, u)].per_hour if r.prices[(h, u)] else None for h, u, _ in devs])})
    energy = _energy_sql(con, dh, r.pricing, sorted({h for h, _ in r.prices}))
    # Unseen MIG time (blind_dt) is billed as the whole GPU, with no evidence: no waste, idle or unallocated.
    # Stranded MIG slices (no instance could use them: every memory slice taken) are billed and wasted, not idle.
    # A view, not a table: every reader computes these from the device-hours it reads (millions of rows in
    # a fleet: a second copy of them would spill).
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {COSTS} AS
      WITH {energy},
      sh AS (SELECT e.*, share * dt_s AS share_dt, share * ev_dt AS ev_share_dt, share * (ev_dt - u_dt / 100) AS waste_share_dt,
                    share * idle_dt AS idle_share_dt, share * sm_dt AS sm_share_dt, share * (sm_dt - smu_dt / 100) AS sm_waste_share_dt
             FROM e),
      d AS (SELECT d.*, p.price, coalesce(p.price, 0.0) AS p, d.share_dt + d.free_dt + d.blind_dt + d.stranded_dt AS gpu_s
            FROM sh d LEFT JOIN gpu_audit_prices p USING (host, uuid))
      SELECT d.* EXCLUDE (p), p * gpu_s / 3600 AS spend_usd, p * (waste_share_dt + free_dt + stranded_dt) / 3600 AS waste_usd,
             p * stranded_dt / 3600 AS stranded_usd, p * (idle_share_dt + free_dt) / 3600 AS idle_usd,
             p * free_dt / 3600 AS unalloc_usd, p * sm_waste_share_dt / 3600 AS sm_waste_usd
      FROM d""")
    r.dh = dh = COSTS
    res = con.execute(f"""
      WITH dev AS (
        SELECT host, uuid, any_value(parent_uuid) AS parent_uuid, any_value(name) AS name, any_value(mig_profile) AS mig_profile,
               bool_or(mig_mode) AS mig_mode, max(share) AS share, sum(dt_s) AS dt_s, sum(gpu_s) AS gpu_s, sum(ev_dt) AS ev_dt,
               sum(u_dt) AS u_dt, sum(idle_share_dt) AS idle_share_dt, sum(free_dt) AS free_dt, sum(blind_dt) AS blind_dt,
               sum(spend_usd) AS spend_usd, sum(waste_usd) AS waste_usd, sum(idle_usd) AS idle_usd, sum(unalloc_usd) AS unalloc_usd,
               sum(stranded_usd) AS stranded_usd, sum(sm_share_dt) AS sm_share_dt, sum(sm_waste_usd) AS sm_waste_usd,
               sum(error_dt) AS error_dt, max(mem_max) AS mem_max, max(mem_total) AS mem_total, sum(m_util_dt) AS m_util,
               sum(m_gr_dt) AS m_gr, sum(m_sm_dt) AS m_sm, sum(n) AS n, sum(bad_n) AS bad_n, sum(kwh) AS kwh, sum(idle_kwh) AS idle_kwh,
               sum(energy_usd) AS energy_usd, sum(kgco2e) AS kgco2e, sum(counter_n) AS counter_n, bool_or(has_energy) AS has_energy,
               bool_or(has_energy_usd) AS has_energy_usd, bool_or(has_co2) AS has_co2
        FROM {dh} GROUP BY host, uuid)
      SELECT dev.*, u.p95 AS p95_util_pct, m.p95 AS mem_p95_permille
      FROM dev LEFT JOIN ({p95_sql(r.hist, False)}) u USING (host, uuid) LEFT JOIN ({p95_sql(r.hist, True)}) m USING (host, uuid)
      ORDER BY host, uuid""")
    names = [c[0] for c in res.description]
    r.dev = [_Row(names, v) for v in res.fetchall()]


BLIND_WHY = ("MIG instances are not visible in {source}: its time is billed with no evidence; collect on the host "
             "(gpu-audit collect) or import DCGM with per-instance (GPU_I) series")


def _devices_stage(r: _Run) -> None:
    """Per device: its figures and what data quality says of it; then the fleet's."""
    assert r.dev is not None and r.dh is not None and r.sc is not None
    window_s = r.end - r.start
    devices, unpriced, no_evidence, gaps, read_errors = [], [], [], [], []
    for x in r.dev:
        pr = r.prices[(x.host, x.uuid)]
        bill = r.pricing.effective_billing(x.host, pr)
        parent_in_mig = bool(x.mig_mode) and x.parent_uuid is None
        metric = max((("util_gpu_pct", x.m_util), ("gr_engine_active_pct", x.m_gr), ("sm_active_pct", x.m_sm)),
                     key=lambda kv: kv[1] or 0)
        has_ev = x.ev_dt > 0
        mem_total = _f(x.mem_total)
        peak = _f(x.mem_max)
        p95_mem = (x.mem_p95_permille / 1000 * x.mem_total) if x.mem_p95_permille is not None and x.mem_total is not None else None
        d = {
            "host": x.host, "uuid": x.uuid, "name": x.name, "parent_uuid": x.parent_uuid, "mig_profile": x.mig_profile,
            "mig_mode": bool(x.mig_mode), "share": float(x.share),
            "gpu_hours": x.gpu_s / 3600,
            "mean_util_pct": x.u_dt / x.ev_dt if has_ev else None,
            "p95_util_pct": _f(x.p95_util_pct) if has_ev else None,
            "utilization_metric": metric[0] if has_ev else None,
            "idle_hours": (x.idle_share_dt + x.free_dt) / 3600,
            "peak_memory_bytes": peak, "memory_total_bytes": mem_total,
            "p95_memory_bytes": min(p95_mem, peak) if p95_mem is not None and peak is not None else p95_mem,
            "price_per_hour": pr.per_hour if pr else None, "price_source": pr.source if pr else None,
            "price_provider": pr.provider if pr else None,
            "spend_usd": x.spend_usd if pr else None, "waste_usd": x.waste_usd if pr else None,
            "idle_usd": x.idle_usd if pr else None,
            "unallocated_usd": x.unalloc_usd if pr and parent_in_mig else None,
            "stranded_usd": x.stranded_usd if pr and parent_in_mig else None,
            "mig_instances_visible": (x.blind_dt <= 0) if parent_in_mig else None,
            "waste_sm_active_usd": x.sm_waste_usd if pr and x.sm_share_dt > 0 else None,
            "energy_kwh": x.kwh if x.has_energy else None,
            "idle_energy_kwh": x.idle_kwh if x.has_energy and x.parent_uuid is None else None,
            "energy_source": (None if not x.has_energy else "share of the GPU's energy" if d_is_mig(x) else
                              "counter" if x.counter_n >= x.n else "power x dt" if x.counter_n == 0 else "counter and power x dt"),
            "energy_usd": x.energy_usd if x.has_energy and x.has_energy_usd else None,
            "kgco2e": x.kgco2e if x.has_energy and x.has_co2 else None,
            "billing": {"unit": bill.unit, "commitment": bill.commitment, "source": bill.source, "declared": bill.declared},
            "coverage_pct": min(100.0, 100 * x.dt_s / window_s) if window_s > 0 else None,
            "covered_hours": x.dt_s / 3600,
            "error_hours": x.error_dt / 3600,
        }
        devices.append(d)
        if pr is None:
            unpriced.append({"host": x.host, "uuid": x.uuid, "name": d["name"],
                             "why": "its source gives no GPU name: price it with [host]" if d["name"] is None else
                             "no price for this GPU model: add it to a pricing file ([gpu] or [host])"})
        if parent_in_mig and x.blind_dt > 0:
            no_evidence.append({"host": x.host, "uuid": x.uuid, "name": d["name"], "mig_profile": None,
                                "why": BLIND_WHY.format(source=_blind_source(r, x.host, x.uuid))})
        elif not has_ev and not parent_in_mig:
            no_evidence.append({"host": x.host, "uuid": x.uuid, "name": d["name"], "mig_profile": d["mig_profile"],
                                "why": "its samples stand for no time (interval_s 0: a single imported point; import with --interval)"
                                if not x.dt_s else
                                "no utilization reading (MIG device without GPM or DCGM)" if d["parent_uuid"]
                                else "no utilization reading"})
        if d["error_hours"] > 0:  # billed, with no utilization reading: the device could not be read
            read_errors.append({"host": x.host, "uuid": x.uuid, "name": d["name"], "error_hours": d["error_hours"]})
        missing = window_s - x.dt_s
        if not parent_in_mig and window_s > 0 and missing > max(0.01 * window_s, 60):
            gaps.append({"host": x.host, "uuid": x.uuid, "missing_hours": missing / 3600,
                         "coverage_pct": d["coverage_pct"]})
    r.devices = devices
    r.quality = {"gaps": gaps, "unpriced_devices": unpriced, "devices_without_evidence": no_evidence,
                 "devices_with_read_errors": read_errors,
                 "duplicate_or_overlapping_samples": sorted(r.sc.repaired.values(), key=lambda e: (e["host"], e["uuid"])),
                 "rejected_samples": r.sc.rejected}
    r.fleet = _fleet(r.con, r.dh, devices)
    hours = (r.end - r.start) / 3600
    # The monthly run-rate beside every monthly saving (DESIGN.md "Monthly"): spend x 730 / window hours.
    r.fleet["monthly_run_rate_usd"] = r.fleet["spend_usd"] * 730 / hours if hours > 0 else None
    r.fleet.update(_fleet_energy(r.con, r.dh, hours))


def d_is_mig(x: Any) -> bool:
    return x.parent_uuid is not None


def _blind_source(r: _Run, host: str, uuid: str) -> str:
    """What source showed a MIG-mode GPU without its instances, for the data-quality line."""
    assert r.sc is not None
    if r.sc.rows is None:
        return "the rolled-up source"
    lit = lambda v: "'" + str(v).replace("'", "''") + "'"  # noqa: E731 (a host or uuid as an SQL string)
    got = r.q.fetch(f"SELECT any_value(source) FROM ({r.sc.rows}) b WHERE host = {lit(host)} AND uuid = {lit(uuid)}")
    src = got[0][0] if got else None
    return {"nvidia-smi": "nvidia-smi CSV", "dcgm": "this DCGM data (no GPU_I series)"}.get(src, src or "its source")


def _fleet(con: duckdb.DuckDBPyConnection, dh: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    billable = [d for d in devices if not (d["mig_mode"] and d["parent_uuid"] is None) or d.get("mig_instances_visible") is False]
    physical = {(d["host"], d["uuid"]) for d in devices if not d["parent_uuid"]}  # masked UUIDs repeat across hosts
    (gpu_s, spend, waste, idle, unalloc, stranded, idle_s, u_dt, ev, unpriced_s, sm_n, sm_waste, sm_util_waste) = con.execute(f"""
      SELECT sum(gpu_s), sum(spend_usd) FILTER (WHERE price IS NOT NULL), sum(waste_usd) FILTER (WHERE price IS NOT NULL),
             sum(idle_usd) FILTER (WHERE price IS NOT NULL), sum(unalloc_usd) FILTER (WHERE price IS NOT NULL),
             sum(stranded_usd) FILTER (WHERE price IS NOT NULL), sum(idle_share_dt + free_dt), sum(u_dt), sum(ev_dt),
             sum(gpu_s) FILTER (WHERE price IS NULL),
             count(*) FILTER (WHERE price IS NOT NULL AND sm_share_dt > 0),
             sum(sm_waste_usd) FILTER (WHERE price IS NOT NULL AND sm_share_dt > 0),
             sum(waste_usd) FILTER (WHERE price IS NOT NULL AND sm_share_dt > 0)
      FROM {dh}""").fetchall()[0]
    z = lambda v: float(v or 0.0)  # noqa: E731 (a sum over no row is 0)
    fleet = {
        "gpus": len(physical),
        "devices": len(billable),
        "gpu_hours": z(gpu_s) / 3600,
        "spend_usd": z(spend),
        "waste_usd": z(waste),
        "idle_usd": z(idle),
        "unallocated_usd": z(unalloc),
        "stranded_usd": z(stranded),
        "idle_hours": z(idle_s) / 3600,
        "mean_util_pct": z(u_dt) / z(ev) if z(ev) > 0 else None,
        "unattributed_usd": None,
        "coverage_pct": float(sum(d["coverage_pct"] or 0 for d in billable) / len(billable)) if billable else None,
        "unpriced_gpu_hours": z(unpriced_s) / 3600,
        "waste_sm_active_usd": z(sm_waste) if sm_n else None,
        "waste_util_on_sm_devices_usd": z(sm_util_waste) if sm_n else None,
    }
    fleet["utilization_pct_of_spend"] = (100 * (1 - fleet["waste_usd"] / fleet["spend_usd"])) if fleet["spend_usd"] else None
    # Spend in three parts for the report: productive (spend - waste), idle, and the rest of the waste
    # (busy but under-used). Idle samples waste (1 - u) of their cost, so waste >= idle up to u < 5 %.
    fleet["spend_split"] = {"productive_usd": fleet["spend_usd"] - fleet["waste_usd"], "idle_usd": fleet["idle_usd"],
                            "underused_usd": max(0.0, fleet["waste_usd"] - fleet["idle_usd"])}
    return fleet


def _fleet_energy(con: duckdb.DuckDBPyConnection, dh: str, hours: float) -> dict[str, Any]:
    """Fleet energy: kWh (board power of the physical GPUs), idle kWh and share, per day; $ and kgCO2e
    where the pricing file gives them."""
    any_energy, kwh, idle, any_usd, usd, any_co2, co2 = con.execute(f"""
      SELECT coalesce(bool_or(has_energy), false), sum(kwh), sum(idle_kwh), coalesce(bool_or(has_energy_usd), false), sum(energy_usd),
             coalesce(bool_or(has_co2), false), sum(kgco2e) FROM {dh}""").fetchall()[0]
    if not any_energy:
        return {"energy_kwh": None, "idle_energy_kwh": None, "idle_energy_share_pct": None, "energy_kwh_per_day": None,
                "energy_usd": None, "kgco2e": None, "kgco2e_per_day": None}
    kwh, idle = float(kwh or 0.0), float(idle or 0.0)
    usd = float(usd or 0.0) if any_usd else None
    co2 = float(co2 or 0.0) if any_co2 else None
    day = 24 / hours if hours > 0 else None
    return {"energy_kwh": kwh, "idle_energy_kwh": idle, "idle_energy_share_pct": 100 * idle / kwh if kwh else None,
            "energy_kwh_per_day": kwh * day if day else None, "energy_usd": usd, "kgco2e": co2,
            "kgco2e_per_day": co2 * day if co2 is not None and day else None}


def _models_stage(r: _Run) -> None:
    """Top processes, engine counters, token logs, and the cost per model."""
    assert r.sc is not None and r.dh is not None and r.hist is not None
    con, s, dh, tokens, fleet = r.con, r.s, r.dh, r.tokens, r.fleet
    ns_costs = namespaces(r.q, r.sc.rows, r.rfiles, r.w, r.devices, r.rsrc, r.rollup_namespaces)
    from gpu_audit.analyze.workloads import workloads

    by_workload, on_device = workloads(r.q, r.q.table_files(r.roots, "processes", s.since, s.until), s.since, s.until,
                                       lambda: _priced_frame(con, dh), r.sc.rows)
    for d in r.devices:
        d["workloads"] = on_device.get((d["host"], d["uuid"]), [])
    procs = top_processes(r.q, r.roots, s)
    for d in r.devices:
        d["top_process"] = procs.get((d["host"], d["uuid"]))
    sample_hosts = {h for h, _ in r.prices}  # the devices' hosts (every device is priced or not: a key)
    toks_df = token_hours(con, tokens.table, sample_hosts, r.start, r.end) if tokens is not None and tokens.table.num_rows else None
    engine_hourly, engine_stats = engine_data(con, r.roots, s, r.q)
    token_source = "token logs" if toks_df is not None else None
    if toks_df is None and engine_hourly is not None and not engine_hourly.empty:
        toks_df = flag_rows(engine_hourly, sample_hosts, r.start, r.end)  # no token logs: the engines' counters are the token source
        token_source = "engine counters"
    att = (attribute(_priced_frame(con, dh), toks_df) if toks_df is not None and not toks_df.empty else
           {"models": [], "unattributed_usd": fleet["spend_usd"], "records_outside_window": 0, "records_unknown_host": 0,
            "model_hourly": []})
    from gpu_audit.analyze import crosscheck

    hot = con.execute(f"SELECT host, uuid, count(*), sum(hot_dt) FROM {DEVICE_HOURS} WHERE hot_hour GROUP BY host, uuid ORDER BY host, uuid").fetchall()
    contradictions = (crosscheck.tokens_vs_compute(toks_df, r.devices, s.params_b) + crosscheck.memory(r.devices)
                      + crosscheck.utilization_vs_power(hot))
    bad_models = {c["model"]: c["why"] for c in contradictions if c["kind"] == "tokens_vs_compute"}
    bad_devices = {(c["host"], c["uuid"]) for c in contradictions if c["kind"] == "memory"}
    for m in att["models"]:
        m["contradicted"] = m["model"] in bad_models
    for d in r.devices:
        d["contradicted"] = (d["host"], d["uuid"]) in bad_devices
    fleet["unattributed_usd"] = att["unattributed_usd"] if toks_df is not None else fleet["spend_usd"]

    stats = model_request_stats(con, r.start, r.end) if token_source == "token logs" else {}
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
    r.out = {
        "token_source": token_source,
        "models": att["models"],
        "namespaces": ns_costs,
        "workloads": by_workload,
        "series": {
            "device_hourly": {"columns": list(HOURLY_COLUMNS), "rows": _hourly_columns(con, dh)},
            "model_hourly": {"columns": ["model", "hour", "cost_usd", "prompt_tokens", "completion_tokens"],
                             "rows": att["model_hourly"]},
            "utilization_histogram": _fleet_histogram(con, r.hist),
        },
    }
    r.quality.update({
        "rejected_token_records": ({"count": tokens.bad, "examples": tokens.bad_examples} if tokens is not None else {"count": 0, "examples": []}),
        "names_cut": tokens.names_cut if tokens is not None else 0,
        "streamed_chunks_without_usage": tokens.chunks_without_usage if tokens is not None else 0,
        "duplicate_token_requests": tokens.duplicate_requests if tokens is not None else 0,
        "token_files_read_once": tokens.files_read_once if tokens is not None else [],
        "token_records_outside_window": att["records_outside_window"],
        "token_records_unknown_host": att["records_unknown_host"],
        "rollup_idle_below_pct": [x for x in r.rollup_idle if x != s.idle_below],
        "contradictions": contradictions,
    })


def _priced_frame(con: duckdb.DuckDBPyConnection, dh: str) -> pd.DataFrame:
    """The priced device-hours as a pandas frame: for the token attribution and the workload split,
    which run only where there are token records or workloads."""
    return con.execute(f"""SELECT host, uuid, hour, spend_usd, kwh, kgco2e, price, waste_usd, idle_usd, gpu_s, idle_share_dt,
                                  free_dt, u_dt, ev_dt
                           FROM {dh} WHERE price IS NOT NULL""").df()


def _hourly_columns(con: duckdb.DuckDBPyConnection, dh: str) -> HourlyColumns:
    """The device-hourly series, column-wise (a fleet has millions of device-hours): hosts and uuids
    as codes into their sorted names, numbers as numpy arrays (NaN for null)."""
    names = {}
    for col, code in (("host", "hc"), ("uuid", "uc")):  # each name's code, and the names in code order, from one table
        con.execute(f"""CREATE OR REPLACE TEMP TABLE gpu_audit_{code} AS SELECT {col}, CAST(row_number() OVER (ORDER BY {col}) - 1 AS BIGINT) AS {code}
                        FROM (SELECT DISTINCT {col} FROM {DEVICE_HOURS})""")
        names[col] = [n for (n,) in con.execute(f"SELECT {col} FROM gpu_audit_{code} ORDER BY {code}").fetchall()]
    a = con.sql(f"""
      SELECT hc, uc, hour, {", ".join(f"coalesce(CAST({e} AS DOUBLE), 'NaN'::DOUBLE) AS {c}" for c, e in (
                 ("mean_util_pct", "CASE WHEN ev_dt > 0 THEN u_dt / ev_dt END"), ("mem_max_bytes", "mem_max"),
                 ("spend_usd", "CASE WHEN price IS NOT NULL THEN spend_usd END"), ("covered_s", "dt_s"),
                 ("idle_s", "CASE WHEN ev_dt > 0 THEN idle_dt END"), ("evidence_s", "ev_dt")))}
      FROM {dh} JOIN gpu_audit_hc USING (host) JOIN gpu_audit_uc USING (uuid) ORDER BY hc, uc, hour""").fetchnumpy()  # NaN for null: plain arrays
    return HourlyColumns(a.pop("hc"), a.pop("uc"), a.pop("hour"), a, names=(names["host"], names["uuid"]), ordered=True)


def _fleet_metric(devices: list[dict[str, Any]]) -> str:
    used = sorted({d["utilization_metric"] for d in devices if d["utilization_metric"]})
    return used[0] if len(used) == 1 else ("mixed: " + ", ".join(used) if used else "none")


def _fleet_histogram(con: duckdb.DuckDBPyConnection, hist: str) -> dict[str, Any]:
    """dt-weighted hours of device time per 10 % utilization bucket, fleet-wide."""
    rows = con.execute(f"SELECT least(least(greatest(bin, 0), 100) // 10, 9) AS b, sum(w) FROM {hist} WHERE NOT is_mem GROUP BY b").fetchall()
    if not rows:
        return {"bins": [], "hours": []}
    hours = {int(b): float(w) / 3600 for b, w in rows}
    return {"bins": [f"{10 * i}-{10 * i + 10}%" for i in range(10)], "hours": [hours.get(i, 0.0) for i in range(10)]}
