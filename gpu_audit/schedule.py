"""Unattended audits: the cron lines or systemd units a GPU host needs, and installing them.

Three jobs: a collector that always runs (systemd: a service with Restart=always; cron: an hourly
`collect --duration 59m`, the per-store lock making an overlapping start exit at once), a daily
report with --fail-on, and a daily prune.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from gpu_audit.errors import GpuAuditError


@dataclass(frozen=True)
class ScheduleSettings:
    store: str = "/var/lib/gpu-audit/store"
    report_to: str = "/var/lib/gpu-audit/reports"
    interval: str = "5s"
    keep: str = "90d"
    fail_on: float = 1000.0
    pricing: str | None = None
    settings: str | None = None  # report --settings for the daily report
    user: str = "root"
    exe: str = ""  # the gpu-audit command; default: this Python with -m gpu_audit


def _exe(s: ScheduleSettings) -> str:
    return s.exe or f"{shlex.quote(sys.executable)} -m gpu_audit"


def _report_args(s: ScheduleSettings, date_expr: str) -> str:
    q = shlex.quote
    pricing = f" --pricing {q(s.pricing)}" if s.pricing else ""
    pricing += f" --settings {q(s.settings)}" if s.settings else ""
    return (f"report {q(s.store)}{pricing} --since \"$(date -u -d yesterday +%F)\" --until \"$(date -u +%F)\""
            f" --json {q(s.report_to)}/findings-{date_expr}.json --html {q(s.report_to)}/report-{date_expr}.html"
            f" --fail-on {s.fail_on:g} --baseline {q(s.report_to)}")  # each day compared with the newest kept findings


def cron(s: ScheduleSettings) -> dict[str, str]:
    q = shlex.quote
    exe = _exe(s)
    log = "/var/log/gpu-audit.log"
    # cron needs % escaped; the report's date expressions use them.
    report = _report_args(s, "$(date -u +\\%F)").replace("+%F", "+\\%F")
    body = f"""# gpu-audit: written by `gpu-audit schedule install --cron`. Rerun it to update.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A collector every hour for 59 minutes; while one runs, another start exits at once (store lock).
0 * * * * {s.user} {exe} collect --duration 59m --interval {s.interval} --out {q(s.store)} >> {log} 2>&1
# A report of yesterday every morning; exit 1 (logged) when potential savings exceed ${s.fail_on:g}/month.
30 6 * * * {s.user} mkdir -p {q(s.report_to)} && {exe} {report} >> {log} 2>&1
# Drop data older than {s.keep}.
45 5 * * * {s.user} {exe} prune {q(s.store)} --keep {s.keep} >> {log} 2>&1
"""
    return {"etc/cron.d/gpu-audit": body}


def systemd(s: ScheduleSettings) -> dict[str, str]:
    q = shlex.quote
    exe = _exe(s)
    unit = "[Unit]\nDescription={d}\n{after}\n[Service]\n{body}\n"
    collect = unit.format(d="gpu-audit collector", after="After=network.target\n",
                          body=f"ExecStart={exe} collect --interval {s.interval} --out {q(s.store)}\nRestart=always\nRestartSec=10\n"
                               f"User={s.user}\n\n[Install]\nWantedBy=multi-user.target")
    report = unit.format(d="gpu-audit daily report", after="",
                         body=f"Type=oneshot\nUser={s.user}\nExecStartPre=/bin/mkdir -p {q(s.report_to)}\n"
                              f"ExecStart=/bin/sh -c {q(exe + ' ' + _report_args(s, '$(date -u +%F)'))}".replace("%", "%%"))
    prune = unit.format(d="gpu-audit prune", after="",
                        body=f"Type=oneshot\nUser={s.user}\nExecStart={exe} prune {q(s.store)} --keep {s.keep}")
    timer = "[Unit]\nDescription={d}\n\n[Timer]\nOnCalendar={cal}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
    base = "etc/systemd/system/"
    return {
        base + "gpu-audit-collect.service": collect,
        base + "gpu-audit-report.service": report,
        base + "gpu-audit-report.timer": timer.format(d="gpu-audit daily report", cal="*-*-* 06:30:00 UTC"),
        base + "gpu-audit-prune.service": prune,
        base + "gpu-audit-prune.timer": timer.format(d="gpu-audit daily prune", cal="*-*-* 05:45:00 UTC"),
    }


def install(files: dict[str, str], root: str = "/", dry_run: bool = False) -> list[tuple[str, str]]:
    """Write the files under ``root``; returns (path, "written" | "unchanged" | "would write")."""
    out = []
    for rel, text in files.items():
        path = os.path.join(root, rel)
        try:
            with open(path) as f:
                if f.read() == text:
                    out.append((path, "unchanged"))
                    continue
        except FileNotFoundError:
            pass
        except OSError as e:
            raise GpuAuditError(f"cannot read {path}: {e.strerror}") from None
        if dry_run:
            out.append((path, "would write"))
            continue
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".gpu-audit.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            raise GpuAuditError(f"cannot write {path}: {e.strerror}", hint="run as root, or give --root") from None
        out.append((path, "written"))
    return out
