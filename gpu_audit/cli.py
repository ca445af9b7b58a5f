"""The command line. Each command parses options, calls one library function, and prints.

The only error handling is the boundary in ``run``: a ``GpuAuditError`` becomes one red ``Error:``
line (and a yellow ``Hint:``), exit code 2. Exit code 1 is kept for "the audit ran and its findings
crossed --fail-on". Heavy libraries (pandas, duckdb, plotly, jinja2) are imported inside the
commands that need them, so that ``collect`` starts fast on GPU hosts.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click
import typer

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


def _console(stderr: bool = False):  # imported lazily: rich costs import time
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


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
    try:
        settings, stats = run_collect(
            store, host, interval_s, duration_s, flush_s, not no_processes, simulate, realtime,
            on_tick=(lambda st: progress.update(task, completed=st.ticks + st.skipped_ticks)) if progress else None,
        )
    finally:
        if progress:
            progress.stop()
    from gpu_audit.fmt import fmt_duration

    c = _console()
    c.print(f"[bold]gpu-audit collect[/] host [cyan]{settings.host}[/] -> {settings.out}")
    c.print(f"  {stats.devices} devices, {stats.ticks} ticks over {fmt_duration(stats.ended - stats.started)} "
            f"({stats.skipped_ticks} skipped), {stats.device_samples} device samples, "
            f"{stats.error_samples} with errors, {stats.process_rows} process rows, {stats.flushes} flushes")
    c.print(f"  our CPU: {stats.cpu_s:.2f} s ({1e6 * stats.cpu_s / max(1, stats.device_samples):.0f} us per device-sample); "
            f"stopped by {stats.stopped_by}")
    for w in stats.warnings:
        c.print(f"  [yellow]warning:[/] {w}")


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


def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI with ``argv``; return the exit code. The one error boundary of gpu-audit."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="gpu-audit", standalone_mode=False)
    except GpuAuditError as e:
        from rich.markup import escape

        err = _console(stderr=True)
        err.print(f"[red]Error:[/] {escape(e.message)}", soft_wrap=True)
        if e.hint:
            err.print(f"[yellow]Hint:[/] {escape(e.hint)}", soft_wrap=True)
        return e.exit_code
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return rv if isinstance(rv, int) else 0


def main() -> None:
    sys.exit(run())
