"""The command line. Each command parses options, calls one library function, and prints.

The only error handling is the boundary in ``run``: a ``GpuAuditError`` becomes one red ``Error:``
line (and a yellow ``Hint:``), exit code 2. Exit code 1 is kept for "the audit ran and its findings
crossed --fail-on". Heavy libraries (pandas, duckdb, plotly, jinja2) are imported inside the
commands that need them, so that ``collect`` starts fast on GPU hosts.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import List, Optional

import typer

# Newer typer vendors its own click (typer._click) and no longer depends on click; older typer uses
# click itself. Usage errors come from whichever is in use.
_CLICK_ERRORS: tuple[type[BaseException], ...] = ()
_ABORTS: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
try:
    import click

    _CLICK_ERRORS += (click.ClickException,)
    _ABORTS += (click.exceptions.Abort,)
except ImportError:
    pass
try:
    from typer._click import exceptions as _tc

    _CLICK_ERRORS += (_tc.ClickException,)
    _ABORTS += tuple(getattr(_tc, n) for n in ("Abort",) if hasattr(_tc, n))
except ImportError:  # pragma: no cover - older typer
    pass

from gpu_audit.errors import GpuAuditError

app = typer.Typer(
    name="gpu-audit",
    help="What your GPUs really do, and what that costs.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Import telemetry you already have into a store.", no_args_is_help=True)
app.add_typer(import_app, name="import")
schedule_app = typer.Typer(help="Cron lines or systemd units for unattended collect, report and prune.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule", rich_help_panel="Fleet operations")


def _schedule_files(cron: bool, systemd: bool, store: str, report_to: str, interval: str, keep: str, fail_on: float,
                    pricing: Optional[str], user: str, settings: Optional[str] = None) -> dict:
    from gpu_audit.schedule import ScheduleSettings, cron as cron_files, systemd as systemd_files

    if cron == systemd:
        raise GpuAuditError("give exactly one of --cron and --systemd")
    _seconds(interval, "--interval")
    _seconds(keep, "--keep")
    check_threshold(fail_on, "--fail-on")
    s = ScheduleSettings(store=store, report_to=report_to, interval=interval, keep=keep, fail_on=fail_on, pricing=pricing, user=user,
                         settings=settings)
    return cron_files(s) if cron else systemd_files(s)


_SCHED_OPTS = dict(
    cron=typer.Option(False, "--cron", help="Cron lines (/etc/cron.d/gpu-audit)."),
    systemd=typer.Option(False, "--systemd", help="systemd units (collector service; report and prune timers)."),
    store=typer.Option("/var/lib/gpu-audit/store", "--store", help="The store the jobs use."),
    report_to=typer.Option("/var/lib/gpu-audit/reports", "--report-to", help="Folder for the daily findings and HTML report."),
    interval=typer.Option("5s", "--interval", help="The collector's interval."),
    keep=typer.Option("90d", "--keep", help="The prune job keeps this much data."),
    fail_on=typer.Option(1000.0, "--fail-on", help="The daily report exits 1 above this monthly saving (USD)."),
    pricing=typer.Option(None, "--pricing", help="Pricing file for the daily report."),
    settings=typer.Option(None, "--settings", help="Settings file (thresholds) for the daily report."),
    user=typer.Option("root", "--user", help="The user the jobs run as."),
)


@schedule_app.command("print")
def schedule_print(
    cron: bool = _SCHED_OPTS["cron"], systemd: bool = _SCHED_OPTS["systemd"], store: str = _SCHED_OPTS["store"],
    report_to: str = _SCHED_OPTS["report_to"], interval: str = _SCHED_OPTS["interval"], keep: str = _SCHED_OPTS["keep"],
    fail_on: float = _SCHED_OPTS["fail_on"], pricing: Optional[str] = _SCHED_OPTS["pricing"], user: str = _SCHED_OPTS["user"],
    settings: Optional[str] = _SCHED_OPTS["settings"],
) -> None:
    """Print the cron lines or systemd units a host needs."""
    for path, text in _schedule_files(cron, systemd, store, report_to, interval, keep, fail_on, pricing, user, settings).items():
        sys.stdout.write(f"# ---- /{path}\n{text}\n")


@schedule_app.command("install")
def schedule_install(
    cron: bool = _SCHED_OPTS["cron"], systemd: bool = _SCHED_OPTS["systemd"], store: str = _SCHED_OPTS["store"],
    report_to: str = _SCHED_OPTS["report_to"], interval: str = _SCHED_OPTS["interval"], keep: str = _SCHED_OPTS["keep"],
    fail_on: float = _SCHED_OPTS["fail_on"], pricing: Optional[str] = _SCHED_OPTS["pricing"], user: str = _SCHED_OPTS["user"],
    settings: Optional[str] = _SCHED_OPTS["settings"],
    root: str = typer.Option("/", "--root", help="Install under this root (a chroot or image being built)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be written; write nothing."),
) -> None:
    """Write the cron file or systemd units in place (idempotent: unchanged files are left alone)."""
    from gpu_audit.schedule import install

    files = _schedule_files(cron, systemd, store, report_to, interval, keep, fail_on, pricing, user, settings)
    c = _console()
    for path, what in install(files, root, dry_run):
        c.print(f"{what}: {_e(path)}", soft_wrap=True)
    if systemd and not dry_run:
        c.print("then: systemctl daemon-reload && systemctl enable --now gpu-audit-collect.service gpu-audit-report.timer gpu-audit-prune.timer")


@app.command(rich_help_panel="Fleet operations")
def prune(
    store: str = typer.Argument(..., help="The store folder."),
    keep: str = typer.Option(..., "--keep", help="Keep this much: 90d, 12w."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed."),
) -> None:
    """Remove the store's date partitions older than --keep (every table)."""
    from gpu_audit.store.retention import prune as run_prune

    removed = run_prune(store, _seconds(keep, "--keep"), dry_run=dry_run)
    c = _console()
    for p in removed:
        c.print(("would remove " if dry_run else "removed ") + p, soft_wrap=True)
    c.print(f"{len(removed)} partition(s) {'to remove' if dry_run else 'removed'}")


@app.command(rich_help_panel="Fleet operations")
def rollup(
    store: str = typer.Argument(..., help="The store folder."),
    older_than: str = typer.Option("7d", "--older-than", help="Roll up whole days that ended longer ago than this."),
    resolution: str = typer.Option("1m", "--resolution", help="One rollup row per device and this much time."),
    idle_below: float = typer.Option(5.0, "--idle-below", help="The idle threshold the rollups record (report's default)."),
) -> None:
    """Rewrite old raw samples as per-device, per-minute rollups (then remove the raw files)."""
    from gpu_audit.store.rollup import rollup as run_rollup

    skipped: list[str] = []
    done = run_rollup(store, _seconds(older_than, "--older-than"), _seconds(resolution, "--resolution"), idle_below,
                      skipped=skipped)
    c = _console()
    for host, date, raw, rows in done:
        c.print(f"{_e(host)} {date}: {raw:,} samples -> {rows:,} rollup rows", soft_wrap=True)
    for line in skipped:
        c.print(_e(line), soft_wrap=True)
    c.print(f"rolled up {len(done)} day(s)")


@app.command(rich_help_panel="Fleet operations")
def compact(
    store: str = typer.Argument(..., help="The store folder."),
) -> None:
    """Merge each (table, host, day)'s small flush files into one file (safe while collectors run)."""
    import os

    from gpu_audit.store.compact import compact_store

    if not os.path.isdir(store):
        raise GpuAuditError(f"store not found: {store}")
    done = compact_store(store)
    _console().print(f"compacted {len(done)} partition(s)")


def _console(stderr: bool = False):  # imported lazily: rich costs import time
    import os

    from rich.console import Console

    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 120  # logs and pipes: wide enough for the report's tables
    return c


def check_threshold(value: float | None, flag: str, unit: str = "USD") -> None:
    """A threshold: finite and >= 0 (NaN compares false with everything: it would never fire)."""
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise GpuAuditError(f"{flag} must be a number of {unit} >= 0, got {value}")


def _e(value: object) -> str:
    """A path, host or message for rich markup: `[` in it is text, never a style tag, and control or
    escape characters are shown escaped, never sent to the terminal raw."""
    from rich.markup import escape

    from gpu_audit.fmt import printable

    return escape(printable(str(value)))


def _size(value: str, what: str) -> int:
    from gpu_audit.units import parse_size

    return parse_size(value, what)


def _store_target(out: Optional[str]) -> tuple[str, Optional[str]]:
    """(local folder to write, remote URI or None): imports into an object store go via its spool."""
    from gpu_audit.collect.run import default_store

    store = out or default_store()
    if "://" in store and not store.startswith("file://"):
        from gpu_audit.store.remote import spool_dir

        return spool_dir(store), store
    return store, None


def _finish_upload(uri: Optional[str], s3_endpoint: Optional[str]) -> None:
    if uri:
        from gpu_audit.store.remote import upload_spool

        up = upload_spool(uri, s3_endpoint)
        _console().print(f"uploaded {up.uploaded} file(s) to {_e(uri)}", soft_wrap=True)


def _seconds(value: Optional[str], what: str) -> Optional[float]:
    from gpu_audit.units import parse_duration

    return None if value is None else parse_duration(value, what)


@app.command()
def collect(
    out: Optional[str] = typer.Option(None, "--out", help="Store folder. Default: $GPU_AUDIT_STORE or ~/.local/share/gpu-audit/store."),
    interval: str = typer.Option("5s", help="Time between samples: 500ms, 5s, 1m."),
    duration: Optional[str] = typer.Option(None, help="Run this long, then exit 0 (default: until stopped)."),
    host: Optional[str] = typer.Option(None, help="Host name written with every row (default: this machine's hostname)."),
    flush_every: Optional[str] = typer.Option(None, "--flush-every", help="Write buffered rows this often (default 60s; 1h on a virtual clock)."),
    no_processes: bool = typer.Option(False, "--no-processes", help="Do not record per-process GPU use."),
    simulate: Optional[str] = typer.Option(None, help="Run against a virtual NVML described by this scenario TOML."),
    realtime: bool = typer.Option(False, help="With --simulate: run on the wall clock instead of a virtual one."),
    scrape: Optional[List[str]] = typer.Option(None, "--scrape", help="An inference engine's /metrics URL (vLLM, SGLang, TGI, TensorRT-LLM, NIM) to scrape every tick. Repeatable."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for --out s3://... (default $GPU_AUDIT_S3_ENDPOINT, else AWS)."),
    spool_max: str = typer.Option("1GiB", "--spool-max", help="With an object store: the most the local spool holds while the store is unreachable."),
) -> None:
    """Sample NVML (utilization, memory, power, clocks, MIG, GPM, processes) into a Parquet store."""
    from gpu_audit.collect.run import collect as run_collect, default_store

    store = out or default_store()
    interval_s = _seconds(interval, "--interval")
    duration_s = _seconds(duration, "--duration")
    flush_s = _seconds(flush_every, "--flush-every")
    progress = None
    err = _console(stderr=True)
    if simulate and not realtime and duration_s and err.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} ticks"),
                            TimeRemainingColumn(), console=err, transient=True)
        task = progress.add_task("collect", total=duration_s / interval_s)
        progress.start()
    from gpu_audit.store.lock import AlreadyRunning

    try:
        settings, stats = run_collect(
            store, host, interval_s, duration_s, flush_s, not no_processes, simulate, realtime,
            on_tick=(lambda st: progress.update(task, completed=st.ticks + st.skipped_ticks)) if progress else None,
            scrape=scrape or (), s3_endpoint=s3_endpoint, spool_max_bytes=_size(spool_max, "--spool-max"),
        )
    except AlreadyRunning as e:
        _console().print(f"a collector already runs for this host and store ({e.holder}); nothing to do")
        return
    finally:
        if progress:
            progress.stop()
    from gpu_audit.fmt import fmt_duration

    c = _console()
    c.print(f"[bold]gpu-audit collect[/] host [cyan]{_e(settings.host)}[/] -> {_e(settings.out)}", soft_wrap=True)
    c.print(f"  {stats.devices} devices, {stats.ticks} ticks over {fmt_duration(stats.ended - stats.started)} "
            f"({stats.skipped_ticks} skipped), {stats.device_samples} device samples, "
            f"{stats.error_samples} with errors, {stats.process_rows} process rows, {stats.flushes} flushes")
    if stats.uploaded_files:
        c.print(f"  uploaded {stats.uploaded_files} file(s) to {_e(settings.out)}", soft_wrap=True)
    if scrape:
        c.print(f"  {stats.engine_rows} engine rows from {len(scrape)} endpoint(s), {stats.scrape_errors} failed scrapes")
    c.print(f"  our CPU: {stats.cpu_s:.2f} s ({1e6 * stats.cpu_s / max(1, stats.device_samples):.0f} us per device-sample); "
            f"stopped by {stats.stopped_by}")
    for w in stats.warnings:
        c.print(f"  [yellow]warning:[/] {_e(w)}", soft_wrap=True)


@app.command()
def doctor(
    simulate: Optional[str] = typer.Option(None, help="Check a virtual NVML scenario instead of this machine."),
) -> None:
    """Driver and NVML versions, and which fields each device supports (GPM, MIG, processes)."""
    from gpu_audit.collect.run import FIELDS, doctor as run_doctor

    rep = run_doctor(simulate)
    c = _console()
    sysv = rep["system"]
    c.print(f"driver {sysv['driver_version']}  NVML {sysv['nvml_version']}  CUDA {sysv['cuda_driver_version']}")
    for d in rep["devices"]:
        label = f"{d.get('index', '?')} {d['name']}" + (f" MIG {d['mig_profile']}" if d.get("mig_profile") else "")
        if "error" in d:
            c.print(f"{label}: [red]cannot be read: {d['error']}[/]", soft_wrap=True)
            continue
        yes = [f for f in FIELDS if d["support"].get(f)]
        no = [f for f in FIELDS if d["support"].get(f) is False]
        c.print(f"[bold]{label}[/] ({d['uuid']})", soft_wrap=True)
        c.print(f"  reads: {', '.join(yes) or 'nothing'}", soft_wrap=True)
        if no:
            c.print(f"  [yellow]cannot read:[/] {', '.join(no)}", soft_wrap=True)
    if not rep["devices"]:
        c.print("[yellow]no GPU found[/]")
    for n in rep["notes"]:
        c.print(f"note: {n}", soft_wrap=True)


@app.command()
def report(
    stores: List[str] = typer.Argument(..., help="One or more store folders (each may hold many hosts)."),
    pricing: Optional[str] = typer.Option(None, help="Pricing TOML ($ per GPU-hour by \\[gpu] and \\[host]; \\[api] reference prices)."),
    tokens: Optional[List[str]] = typer.Option(None, "--tokens", help="Token log(s): JSONL, CSV or Parquet. Repeatable."),
    tokens_host: Optional[str] = typer.Option(None, "--tokens-host", help="The host of token records that name none (a log from one server)."),
    since: Optional[str] = typer.Option(None, help="Window start (inclusive), ISO 8601 or epoch seconds."),
    until: Optional[str] = typer.Option(None, help="Window end (exclusive)."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the findings JSON here."),
    idle_below: Optional[float] = typer.Option(None, "--idle-below", help="A sample is idle when utilization is below this % (default 5, or the settings file's)."),
    strict: bool = typer.Option(False, help="A bad token record is an error, not a counted warning."),
    fail_on: Optional[float] = typer.Option(None, "--fail-on", help="Exit 1 when potential monthly savings exceed this many USD."),
    html: Optional[str] = typer.Option(None, "--html", help="Write the self-contained HTML report here."),
    pdf: Optional[str] = typer.Option(None, "--pdf", help="Also print the HTML report to this PDF (needs Chromium)."),
    browser: Optional[str] = typer.Option(None, "--browser", help="Chromium or Chrome to print the PDF with (default: found on PATH)."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for s3:// inputs."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="DuckDB's memory limit (default 1GB); beyond it, work spills to a temporary folder."),
    settings: Optional[str] = typer.Option(None, "--settings", help="Settings TOML: \\[report] and the rules' \\[recommend] thresholds (default $GPU_AUDIT_SETTINGS)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Workloads in the terminal summed per job, pod, namespace, user or container."),
    workloads_csv: Optional[str] = typer.Option(None, "--workloads-csv", help="Write the cost per workload as CSV here (for chargeback spreadsheets)."),
    engine: str = typer.Option("duckdb", "--engine", help="Where the scan of the samples runs: duckdb (here) or spark (docs/scale.md)."),
    spark_master: str = typer.Option("local[*]", "--spark-master", help="Spark master URL for --engine spark (local[*], spark://host:7077, yarn, k8s://...)."),
    spark_conf: Optional[List[str]] = typer.Option(None, "--spark-conf", help="A Spark setting KEY=VALUE for --engine spark. Repeatable."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="An earlier report's findings JSON (or a folder of kept ones: the newest before this window) to compare with."),
    history: Optional[str] = typer.Option(None, "--history", help="A folder of kept findings: daily spend, waste and realised savings over time (default: a --baseline folder)."),
    fail_on_regression: Optional[float] = typer.Option(None, "--fail-on-regression", help="Exit 1 when waste per 730 h rose by more than this % against the baseline."),
) -> int:
    """Spend, waste, idle cost, cost per 1M tokens and recommendations from stores, pricing and token logs."""
    from gpu_audit.analyze.findings import ReportRequest, build, write_json
    from gpu_audit.report.terminal import render

    check_threshold(fail_on, "--fail-on")
    check_threshold(fail_on_regression, "--fail-on-regression", "percent")
    from gpu_audit.report.terminal import GROUP_BY

    if group_by is not None and group_by not in GROUP_BY:
        raise GpuAuditError(f"--group-by: expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    req = ReportRequest(stores, pricing, tokens or [], since, until, idle_below, strict, s3_endpoint, memory_limit, settings, tokens_host,
                        engine, spark_master, list(spark_conf or []), baseline, history, json_out)
    with _stage_progress() as step:
        findings = build(req, step)
    if json_out:
        write_json(findings, json_out)
    if workloads_csv:
        from gpu_audit.report.csv import write_workloads_csv

        write_workloads_csv(findings, workloads_csv)
    render(findings, _console(), group_by=group_by)
    if json_out:
        _console().print(f"findings: {_e(json_out)}", soft_wrap=True)
    if html or pdf:
        _write_report_files(findings, html, pdf, browser)
    savings = findings["fleet"]["potential_monthly_savings_usd"]
    code = 0
    if fail_on is not None and savings > fail_on:
        _console(stderr=True).print(f"potential monthly savings ${savings:,.2f} exceed --fail-on ${fail_on:,.2f}")
        code = 1
    if fail_on_regression is not None:
        from gpu_audit.analyze.baseline import regression

        if findings.get("baseline") is None:
            _console(stderr=True).print("--fail-on-regression: no baseline to compare with (give --baseline)")
        elif (why := regression(findings, fail_on_regression)) is not None:
            _console(stderr=True).print(why, soft_wrap=True)
            code = 1
    return code


@app.command()
def prices(
    pricing: Optional[str] = typer.Option(None, help="Pricing TOML whose \\[gpu] and \\[host] prices override the catalog."),
    store: Optional[List[str]] = typer.Option(None, "--store", help="Also list the hosts of these stores with the billing that applies to each."),
) -> None:
    """The price that applies to each GPU model, where it came from, and how each host is billed."""
    from rich.table import Table

    from gpu_audit.analyze.pricing import billing_table, load_pricing, price_table
    from gpu_audit.fmt import fmt_usd

    import os

    loaded = load_pricing(pricing)
    c = _console()
    if loaded.path:  # named once above the table, so a long path does not wrap every row
        c.print(f"pricing file: {_e(loaded.path)}", soft_wrap=True)

    def short(source: str) -> str:
        if loaded.path and source.startswith(str(loaded.path)):
            return os.path.basename(str(loaded.path)) + source[len(str(loaded.path)):]
        return source

    t = Table("model", "NVML name", "$ / GPU-hour", "quoted", "as of", "source")
    for r in price_table(loaded):
        t.add_row(_e(r["model"]), _e(r["nvml_name"] or ""), fmt_usd(r["price_per_hour"]), _e(r.get("quoted") or ""), r["as_of"] or "",
                  _e(short(r["source"])))
    c.print(t)
    t = Table("host", "billed per", "commitment", "source", title="Billing", title_justify="left")
    for r in billing_table(loaded, store or []):
        t.add_row(_e(r["host"]), r["unit"], r["commitment"], _e(short(r["source"])))
    c.print(t)


@import_app.command("nvidia-smi")
def import_nvidia_smi(
    files: List[str] = typer.Argument(..., help="Logs written by nvidia-smi --query-gpu=... --format=csv \\[-l N], or nvidia-smi -q -x XML dumps (told apart by content)."),
    host: str = typer.Option(..., help="The host the logs came from (written into every row)."),
    out: Optional[str] = typer.Option(None, "--out", help="Store folder (default as for collect)."),
    tz: Optional[str] = typer.Option(None, help="Time zone of the logs' timestamps (IANA name; default: this machine's)."),
    fields: Optional[str] = typer.Option(None, help="For --format=csv,noheader logs: the --query-gpu field list, comma-separated."),
    interval: Optional[str] = typer.Option(None, help="The -l interval; default: each series' median gap."),
    strict: bool = typer.Option(False, help="A bad line is an error and nothing is written."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for --out s3://..."),
    at: Optional[str] = typer.Option(None, "--at", help="Time of a log without a timestamp field (a one-shot query; with --interval for several samples per GPU)."),
) -> None:
    """Import nvidia-smi CSV logs or XML dumps into a store (source = nvidia-smi, nvidia-smi-xml)."""
    from gpu_audit.sources.nvidia_smi import import_nvidia_smi as run_import

    local, uri = _store_target(out)

    err = _console(stderr=True)
    progress = None
    if err.is_terminal:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        progress = Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), console=err, transient=True)
        task = progress.add_task("import", total=1)
        progress.start()
    try:
        from gpu_audit.units import parse_time

        res = run_import(files, local, host, tz, fields, _seconds(interval, "--interval"), strict,
                         progress=(lambda path, done, total: progress.update(task, completed=done, total=total)) if progress else None,
                         at=parse_time(at, "--at") if at else None)
    finally:
        if progress:
            progress.stop()
    c = _console()
    how = f" ({', '.join(sorted(res.time_formats))})" if res.time_formats else ""
    when = (f"times from --at {at}" if res.time_formats == {"--at"} else f"times read as {res.zone}{how}")  # --at carries its own zone
    c.print(f"imported {res.rows:,} rows ({res.series} GPU series) from {len(res.files)} file(s); {when}", soft_wrap=True)
    for line in res.tally.summary():
        c.print(_e(line), soft_wrap=True)
    if res.bad:
        c.print(f"[yellow]{res.bad} bad line(s) skipped[/]: " + _e("; ".join(res.bad_lines)), soft_wrap=True)
    if res.single_sample_series:
        c.print(f"[yellow]{res.single_sample_series} series had a single sample and count for no time: give --interval[/]")
    _finish_upload(uri, s3_endpoint)


@import_app.command("table")
def import_table(
    files: List[str] = typer.Argument(..., help="CSV or Parquet tables of samples (wide, or long: one metric per file)."),
    map_: List[str] = typer.Option(..., "--map", help="STORE_COLUMN=FILE_COLUMN, or STORE_COLUMN=FILE:COLUMN for one file. "
                                                     "ts and uuid are needed (time, device). Repeatable."),
    host: Optional[str] = typer.Option(None, "--host", help="The host of every row (else --map host=COLUMN)."),
    gpu_name: Optional[str] = typer.Option(None, "--gpu-name", help="GPU model of every device, for pricing (e.g. 'NVIDIA A10')."),
    memory_unit: str = typer.Option("bytes", "--memory-unit", help="Unit of memory columns: bytes, KiB, MiB, GiB."),
    util_unit: str = typer.Option("percent", "--util-unit", help="Unit of utilization columns: percent, or ratio (0-1)."),
    interval: Optional[str] = typer.Option(None, help="Seconds each sample stands for; default: each device's median gap."),
    tz: Optional[str] = typer.Option(None, help="Time zone of ISO times without an offset (default UTC)."),
    out: Optional[str] = typer.Option(None, "--out", help="Store folder (default as for collect)."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for --out s3://..."),
) -> None:
    """Import samples from any table (cluster traces, home-grown exporters) with a column mapping (source = table)."""
    from gpu_audit.sources.table import import_table as run_import

    local, uri = _store_target(out)
    res = run_import(files, local, map_, host, gpu_name, memory_unit, util_unit, _seconds(interval, "--interval"), tz)
    c = _console()
    c.print(f"imported {res.rows:,} rows of {res.devices} devices on {len(res.hosts)} host(s) from {len(files)} file(s); {res.times}",
            soft_wrap=True)
    for line in res.tally.summary():
        c.print(line)
    if res.rejected:
        c.print(f"[yellow]{res.rejected} row(s) rejected[/]: utilization outside 0-100 % (is --util-unit right?)")
    _finish_upload(uri, s3_endpoint)


@import_app.command("prometheus")
def import_prometheus(
    url: str = typer.Option(..., "--url", help="Prometheus base URL, e.g. http://prometheus:9090."),
    out: Optional[str] = typer.Option(None, "--out", help="Store folder (default as for collect)."),
    since: Optional[str] = typer.Option(None, help="Start (ISO 8601 or epoch seconds); default: --until minus 1 day."),
    until: Optional[str] = typer.Option(None, help="End; default: now."),
    step: str = typer.Option("60s", help="Resolution of the imported samples (query_range step)."),
    match: Optional[str] = typer.Option(None, "--match", help='Extra label matchers, e.g. \'Hostname=~"gpu-.*"\'.'),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for --out s3://..."),
) -> None:
    """Import dcgm-exporter (and inference-engine) series from Prometheus (source = dcgm)."""
    from datetime import datetime, timedelta, timezone

    from gpu_audit.sources.prometheus import import_prometheus as run_import
    from gpu_audit.units import parse_time

    u = parse_time(until, "--until") if until else datetime.now(timezone.utc)
    s = parse_time(since, "--since") if since else u - timedelta(days=1)
    err = _console(stderr=True)
    progress = None
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(TextColumn("querying"), BarColumn(), MofNCompleteColumn(), console=err, transient=True)
        task = progress.add_task("q", total=1)
        progress.start()
    try:
        local, uri = _store_target(out)
        res = run_import(url, local, s, u, _seconds(step, "--step"), match,
                         progress=(lambda d, t: progress.update(task, completed=d, total=t)) if progress else None)
    finally:
        if progress:
            progress.stop()
    _console().print(f"imported {res.rows:,} samples of {res.devices} devices on {len(res.hosts)} host(s) and {res.engine_rows:,} "
                     f"engine rows in {res.queries} queries; DCGM fields found: {', '.join(res.metrics_found)}", soft_wrap=True)
    _finish_upload(uri, s3_endpoint)


@import_app.command("prometheus-text")
def import_prometheus_text(
    files: List[str] = typer.Argument(..., help="Saved scrapes of dcgm-exporter (or an engine): Prometheus text or OpenMetrics."),
    out: Optional[str] = typer.Option(None, "--out", help="Store folder (default as for collect)."),
    at: Optional[str] = typer.Option(None, help="Time of samples without a timestamp (default: each file's modification time)."),
    interval: Optional[str] = typer.Option(None, help="Seconds each sample stands for; default: each series' median gap."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="Endpoint of an S3-compatible store for --out s3://..."),
    host: Optional[str] = typer.Option(None, "--host", help="Host of series whose labels name none (an inference engine's /metrics dump)."),
) -> None:
    """Import saved exporter scrapes (one point in time per file, or OpenMetrics with timestamps)."""
    from gpu_audit.sources.prometheus import import_prometheus_text as run_import
    from gpu_audit.units import parse_time

    local, uri = _store_target(out)
    res = run_import(files, local, parse_time(at, "--at") if at else None, _seconds(interval, "--interval"), host)
    _console().print(f"imported {res.rows:,} samples of {res.devices} devices on {len(res.hosts)} host(s) and {res.engine_rows:,} engine rows",
                     soft_wrap=True)
    for line in res.time_sources + res.tally.summary():
        _console().print(_e(line), soft_wrap=True)
    for h in res.engine_hosts_without_samples:
        _console(stderr=True).print(f"[yellow]note:[/] engine rows of host {_e(h)} match no GPU samples in the store: their tokens "
                                    "will not be attributed until samples of that host are there (collect, or import with --host)",
                                    soft_wrap=True)
    if res.single_point:
        _console(stderr=True).print(f"[yellow]warning:[/] {res.single_point} device(s) have one point in time: each sample stands for "
                                    "0 s and costs nothing; give --interval (the exporter's scrape interval, e.g. 30s) to count it",
                                    soft_wrap=True)
    _finish_upload(uri, s3_endpoint)


@contextmanager
def _stage_progress():
    """On a terminal, a progress bar over the analysis' stages (a fleet's month takes minutes)."""
    err = _console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gpu_audit.analyze.findings import report_stages

    stages = report_stages()
    with Progress(TextColumn("analyzing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=True) as p:
        task = p.add_task("", total=len(stages))
        yield lambda name: p.update(task, completed=stages.index(name), description=name)


def _write_report_files(findings: dict, html: Optional[str], pdf: Optional[str], browser: Optional[str]) -> None:
    """HTML (and PDF printed from it), with a progress bar on a terminal."""
    import os
    import tempfile

    from gpu_audit.report.html import write_html

    err = _console(stderr=True)
    html_path = html or os.path.join(tempfile.mkdtemp(prefix="gpu-audit-"), "report.html")
    if err.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as p:
            task = p.add_task("report")
            write_html(findings, html_path, progress=lambda msg: p.update(task, description=msg))
    else:
        write_html(findings, html_path)
    if html:
        _console().print(f"HTML report: {_e(html)}", soft_wrap=True)
    if pdf:
        from gpu_audit.report.pdf import html_to_pdf

        html_to_pdf(html_path, pdf, browser)
        _console().print(f"PDF report: {_e(pdf)}", soft_wrap=True)


@app.command()
def demo(
    out: str = typer.Option("gpu-audit-demo", "--out", help="Folder for the demo's store, token log, pricing, findings and report."),
    open_report: bool = typer.Option(False, "--open", help="Open the HTML report in a browser when done."),
    hours: float = typer.Option(24.0, help="Simulated hours per host."),
    start: Optional[str] = typer.Option(None, help="Start of the simulated fleet (ISO 8601 or epoch seconds; default: "
                                                   "$GPU_AUDIT_DEMO_START, else ending now). The same start gives the same fleet."),
    days: int = typer.Option(2, "--days", help="Simulated days: 2 runs a second day after the first day's cash cards are carried out, "
                                               "and compares it with the first (realised savings)."),
) -> None:
    """Run the whole pipeline on a simulated fleet (no GPU needed): collect, token logs, report."""
    from gpu_audit.demo import run_demo
    from gpu_audit.report.terminal import render

    err = _console(stderr=True)
    res = run_demo(out, hours=hours, step=lambda msg: err.print(f"[dim]{msg}[/]"), start=start, days=days)
    render(res.findings, _console())
    c = _console()
    c.print(f"\nstore: {_e(res.store)}\ntoken log: {_e(res.tokens)} ({res.requests:,} requests)\npricing: {_e(res.pricing)}\n"
            f"findings: {_e(res.json)}\n[bold]HTML report: {_e(res.html)}[/]", soft_wrap=True)
    again = f"gpu-audit report {_e(res.store)} --pricing {_e(res.pricing)} --tokens {_e(res.tokens)}"
    if res.days and len(res.days) > 1:
        again += f" --since {res.findings['window']['start']} --baseline {_e(os.path.join(res.out, 'audits'))}"
        c.print(f"day 2 gave back {len(res.released or [])} GPU(s) the first day's cash cards freed; the first day's findings are in "
                f"{_e(os.path.join(res.out, 'audits'))}", soft_wrap=True)
    c.print(f"rerun by hand: {again} --html report.html", soft_wrap=True)
    if open_report and res.html:
        import webbrowser

        webbrowser.open("file://" + __import__("os").path.abspath(res.html))


def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI with ``argv``; return the exit code. The one error boundary of gpu-audit."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="gpu-audit", standalone_mode=False)
    except GpuAuditError as e:
        err = _console(stderr=True)
        err.print(f"[red]Error:[/] {_e(e.message)}", soft_wrap=True)
        if e.hint:
            err.print(f"[yellow]Hint:[/] {_e(e.hint)}", soft_wrap=True)
        return e.exit_code
    except (KeyboardInterrupt, *_ABORTS):
        # Ctrl-C: one line, exit 130; outputs are written atomically at the end, so none is half-written.
        _console(stderr=True).print("interrupted: nothing was written", soft_wrap=True)
        return 130
    except _CLICK_ERRORS as e:
        e.show()  # type: ignore[attr-defined]
        return e.exit_code  # type: ignore[attr-defined]
    if rv == 130:  # click turned a Ctrl-C into its abort code: say so in the same one line
        _console(stderr=True).print("interrupted: nothing was written", soft_wrap=True)
    return rv if isinstance(rv, int) else 0


def main() -> None:
    sys.exit(run())
