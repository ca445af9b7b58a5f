"""Findings: build them from inputs, and write them as JSON without ever leaving half a file."""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from gpu_audit.hourly import AGGREGATE_ABOVE, HourlyColumns
from gpu_audit.errors import GpuAuditError


def _clean(o: Any) -> Any:
    """JSON has no NaN: a missing number is null."""
    if isinstance(o, HourlyColumns):
        return o.rows()
    if type(o) is list and o and type(o[0]) is list:  # series rows: the bulk of a large fleet's findings
        return [[None if type(v) is float and v != v else v for v in row] for row in o]
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else o
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item"):  # numpy scalars
        return _clean(o.item())
    return o


INDENT_UP_TO = 50_000  # series rows: a larger findings file is written compact (the C encoder: 10x faster)


def write_json(findings: dict[str, Any], path: str) -> None:
    """The findings as JSON: indented for reading, with each series compact on its own lines (rows
    are many and alike: Python's indenting encoder is 10x slower than the C one, which writes them);
    all compact where the series hold more than ``INDENT_UP_TO`` rows (a fleet of thousands of GPUs)."""
    from gpu_audit.store.writer import write_text_atomic

    clean = _clean(findings)
    series = clean.get("series") if isinstance(clean.get("series"), dict) else None
    rows = sum(len((v or {}).get("rows") or []) for v in series.values() if isinstance(v, dict)) if series else 0
    if rows > INDENT_UP_TO or not series:
        text = json.dumps(clean, indent=None if rows > INDENT_UP_TO else 1, allow_nan=False,
                          separators=(",", ":") if rows > INDENT_UP_TO else None)
    else:
        token = secrets.token_hex(16)  # unguessable: no host or model name in the findings can be a mark
        marks = {k: f"@@{token}-{i}@@" for i, k in enumerate(series)}
        text = json.dumps({**clean, "series": marks}, indent=1, allow_nan=False)
        for k, mark in marks.items():
            text = text.replace(json.dumps(mark), json.dumps(series[k], allow_nan=False, separators=(",", ":")), 1)
    write_text_atomic(text, path)


def report_stages() -> tuple[str, ...]:
    """The stages `build` goes through, in order (what a progress display counts)."""
    from gpu_audit.analyze.engine import ANALYZE_STAGES

    return ("reading token logs", *ANALYZE_STAGES, "recommendation rules", "series for the charts")


@dataclass(frozen=True)
class ReportRequest:
    """What a report is asked for: the one argument of ``build`` (flags win over the settings file,
    which wins over the defaults)."""

    stores: list[str]
    pricing: str | None = None
    tokens: list[str] = field(default_factory=list)
    since: str | None = None
    until: str | None = None
    idle_below: float | None = None
    strict: bool = False
    s3_endpoint: str | None = None
    memory_limit: str | None = None
    settings: str | None = None
    tokens_host: str | None = None  # the host of token records that name none
    engine: str = "duckdb"  # where the scan of the samples runs: duckdb, or spark (docs/scale.md)
    spark_master: str = "local[*]"
    spark_conf: list[str] = field(default_factory=list)  # KEY=VALUE
    baseline: str | None = None  # an earlier report's findings JSON, or a folder of kept ones (docs/findings.md "baseline")
    history: str | None = None  # a folder of kept findings: the "since the last audit" chart (default: a --baseline folder)
    writes: str | None = None  # the findings file this report will write (never its own baseline)


def build(req: ReportRequest, step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything `report` needs, from the user's inputs: the one library call behind the command.

    ``step`` is told each of report_stages() as it starts (a progress display)."""
    from gpu_audit.analyze.engine import AnalyzeSettings, analyze
    from gpu_audit.analyze.pricing import load_pricing
    from gpu_audit.settings import load_settings
    from gpu_audit.units import parse_time

    stores, pricing_path, token_paths, since, until = req.stores, req.pricing, list(req.tokens or []), req.since, req.until
    idle_below, strict, s3_endpoint, memory_limit, settings_path = req.idle_below, req.strict, req.s3_endpoint, req.memory_limit, req.settings
    settings = load_settings(settings_path)
    idle_below = settings.idle_below if idle_below is None else idle_below
    memory_limit = settings.memory_limit if memory_limit is None else memory_limit
    if req.engine not in ("duckdb", "spark"):
        raise GpuAuditError(f"--engine: expected duckdb or spark, got {req.engine!r}")
    spark_conf, in_place = (), ()
    if req.engine == "spark":
        from gpu_audit.analyze.spark import IN_PLACE, parse_conf

        spark_conf, in_place = parse_conf(req.spark_conf), IN_PLACE
    if not 0 <= idle_below <= 100:
        raise GpuAuditError(f"--idle-below must be between 0 and 100, got {idle_below}")
    s = parse_time(since, "--since") if since else None
    u = parse_time(until, "--until") if until else None
    if s and u and s >= u:
        raise GpuAuditError("--since must be before --until")
    _check_baseline_inputs(req)  # before the analysis: a wrong path is said at once, not after minutes
    say = step or (lambda _name: None)
    stages = report_stages()
    pricing = load_pricing(pricing_path)
    say(stages[0])
    if req.tokens_host is not None:
        from gpu_audit.store.layout import check_host

        check_host(req.tokens_host, "--tokens-host")
    tokens = None
    if token_paths:
        from gpu_audit.analyze.tokens import load_tokens  # (pyarrow.compute: only where there are token logs)

        tokens = load_tokens(token_paths, strict=strict, default_host=req.tokens_host)
    roots = []
    for store in stores:  # object-store URIs: the window's partitions mirrored into a local cache
        if in_place and store.startswith(in_place):
            roots.append(store)  # Spark reads these itself
        elif "://" in store and not store.startswith("file://"):
            from gpu_audit.store.remote import mirror

            roots.append(mirror(store, ("samples", "processes", "engine", "rollups"), s, u, s3_endpoint))
        else:
            roots.append(store)
    findings = analyze(roots, pricing, tokens, AnalyzeSettings(idle_below=idle_below, since=s, until=u, memory_limit=memory_limit,
                                                                  params_b=settings.params_b, engine=req.engine,
                                                                  spark_master=req.spark_master, spark_conf=spark_conf), say)
    findings["inputs"]["stores"] = list(stores)
    findings["inputs"]["settings"] = settings.path
    say(stages[-2])
    findings = add_recommendations(findings, pricing, settings.recommend)
    since_last_audit(findings, req)
    say(stages[-1])
    return _clean(aggregate_series(findings))


def _check_baseline_inputs(req: ReportRequest) -> None:
    import os

    from gpu_audit.analyze import baseline as bl

    if req.baseline is not None:
        if not os.path.exists(req.baseline):
            raise bl.BaselineError(f"--baseline {req.baseline}: no such file or folder",
                                   hint="give an earlier report's --json file, or the folder where they are kept")
        if not os.path.isdir(req.baseline):
            bl.read_findings(req.baseline)  # not JSON, another schema: said now, in one line
    if req.history is not None and not os.path.isdir(req.history):
        raise GpuAuditError(f"--history {req.history}: not a folder", hint="give the folder where the daily findings are kept")


def since_last_audit(findings: dict[str, Any], req: ReportRequest) -> None:
    """The ``baseline`` section (null without --baseline), ``history`` (the kept findings' daily
    figures, with --history or a --baseline folder), and each recommendation's ``first_seen``."""
    import os

    from gpu_audit.analyze import baseline as bl

    path, base = bl.pick(req.baseline, findings["window"], req.writes) if req.baseline else (None, None)
    findings["baseline"] = bl.compare(findings, base, path) if base is not None else None
    if req.baseline and base is None:
        findings["data_quality"]["baseline_missing"] = f"no earlier findings in {req.baseline}: nothing to compare with yet"
    bl.first_seen(findings, base)
    folder = req.history or (req.baseline if req.baseline and os.path.isdir(req.baseline) else None)
    findings["history"] = bl.history(folder, findings, req.writes) if folder else None


def aggregate_series(findings: dict[str, Any]) -> dict[str, Any]:
    """Make the device-hourly series plain rows for writing: per device for a fleet of up to
    AGGREGATE_ABOVE devices, else one row per host and hour (dt-weighted mean utilization, peak
    memory, summed spend), so that the JSON and the HTML of a fleet stay small. The rules have
    already run on the per-device hours."""
    from gpu_audit.hourly import HourlyColumns, per_host

    series = findings["series"]["device_hourly"]
    if len(findings["devices"]) <= AGGREGATE_ABOVE:
        if isinstance(series["rows"], HourlyColumns):
            series["rows"] = series["rows"].rows()
        findings["series"]["device_hourly_level"] = "device"
        return findings
    findings["series"]["device_hourly"] = {"columns": series["columns"], "rows": per_host(series)}
    findings["series"]["device_hourly_level"] = "host"
    return findings


def _not_assessed_why(d: dict[str, Any], rs: Any) -> str:
    if d.get("mig_instances_visible") is False:
        return "MIG instances not visible in its source (no evidence)"
    if d.get("mean_util_pct") is None and not (d.get("mig_mode") and not d.get("parent_uuid")):
        return "no utilization reading"
    if d.get("spend_usd") is None:
        return "unpriced"
    if (d.get("coverage_pct") or 0) < rs.min_coverage_pct:
        return f"coverage {d.get('coverage_pct') or 0:.0f}% < {rs.min_coverage_pct:.0f}%"
    return f"observed {d.get('covered_hours') or 0:.2f} h < {rs.min_covered_hours:g} h"


def add_recommendations(findings: dict[str, Any], pricing: Any, settings: Any = None) -> dict[str, Any]:
    """Run the recommendation rules over the findings and record their totals and settings."""
    from dataclasses import asdict, replace

    from gpu_audit.catalog import MODELS
    from gpu_audit.recommend import recommend
    from gpu_audit.recommend.base import RecommendSettings, eligible, is_parent_in_mig, observed_enough

    rs = settings or RecommendSettings()
    prices = {}
    for m in MODELS:
        pr = pricing.price("", m.nvml_name)
        if pr is not None:
            prices[m.key] = (pr.per_hour, pr.provider)
    rs = replace(rs, gpu_prices=prices)
    out = recommend(findings, rs)
    findings["recommendations"] = out["recommendations"]
    fleet = findings["fleet"]
    for k in ("potential_monthly_savings_usd", "capacity_monthly_usd", "capacity_gpus_freed", "behaviour_recommendations",
              "behaviour_monthly_estimate_usd", "cash_assumed_billing_usd"):
        fleet[k] = out[k]
    # No month from a snapshot (DESIGN.md "Monthly"): below min_covered_hours of evidence on every
    # device, the run-rate is null and says why.
    evidence_h = max((d.get("covered_hours") or 0.0 for d in findings["devices"]), default=0.0)
    fleet["monthly_na"] = None
    if evidence_h < rs.min_covered_hours:
        from gpu_audit.fmt import fmt_duration

        fleet["monthly_run_rate_usd"] = None
        fleet["monthly_na"] = f"n/a: {fmt_duration(evidence_h * 3600)} of evidence (a month needs {rs.min_covered_hours:g} h or more)"
    rate = fleet.get("monthly_run_rate_usd")
    fleet["cash_share_of_run_rate_pct"] = 100 * fleet["potential_monthly_savings_usd"] / rate if rate else None
    findings["savings_by_device"] = out["savings_by_device"]
    findings["capacity_by_device"] = out["capacity_by_device"]
    findings["recommend_settings"] = {k: v for k, v in asdict(rs).items() if k != "gpu_prices"}
    findings["data_quality"]["devices_not_assessed"] = [
        {"host": d["host"], "uuid": d["uuid"], "why": _not_assessed_why(d, rs)}
        for d in findings["devices"]
        if ((not observed_enough(d, rs) or d.get("mig_instances_visible") is False) if is_parent_in_mig(d) else not eligible(d, rs))]
    return findings
