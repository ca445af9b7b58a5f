"""Scheduling, retention and compaction."""

from __future__ import annotations

import json

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import ASSETS, ROOT, read_table
from gpu_audit.schedule import ScheduleSettings, cron, systemd
from storefix import series, write_samples


def test_shipped_examples_are_what_the_generator_writes():
    s = ScheduleSettings(exe="gpu-audit")
    for name, files in (("cron", cron(s)), ("systemd", systemd(s))):
        for rel, text in files.items():
            assert (ROOT / "examples" / name / os.path.basename(rel)).read_text() == text


def test_cron_lines_and_systemd_units():
    c = cron(ScheduleSettings(store="/data/s", exe="gpu-audit"))["etc/cron.d/gpu-audit"]
    assert "0 * * * * root gpu-audit collect --duration 59m --interval 5s --out /data/s" in c
    assert "gpu-audit prune /data/s --keep 90d" in c and "--fail-on 1000" in c
    units = systemd(ScheduleSettings(exe="gpu-audit"))
    assert "Restart=always" in units["etc/systemd/system/gpu-audit-collect.service"]
    assert "OnCalendar=*-*-* 06:30:00 UTC" in units["etc/systemd/system/gpu-audit-report.timer"]


def test_install_is_idempotent_and_dry_run_writes_nothing(tmp_path, run_cli):
    code, out, _ = run_cli("schedule", "install", "--systemd", "--root", str(tmp_path), "--dry-run")
    assert code == 0 and out.count("would write") == 5 and not list(tmp_path.rglob("*.service"))
    code, out, _ = run_cli("schedule", "install", "--systemd", "--root", str(tmp_path))
    assert code == 0 and out.count("written") == 5 and "systemctl daemon-reload" in out
    code, out, _ = run_cli("schedule", "install", "--systemd", "--root", str(tmp_path))
    assert out.count("unchanged") == 5
    code, out, _ = run_cli("schedule", "install", "--systemd", "--root", str(tmp_path), "--interval", "10s")
    assert out.count("written") == 1 and out.count("unchanged") == 4


def test_the_cron_report_line_runs(tmp_path):
    """The daily report line, as cron would run it (through sh, % unescaped), on a real store."""
    store = tmp_path / "store"
    now = datetime.now(timezone.utc)
    yesterday = datetime(now.year, now.month, now.day, tzinfo=timezone.utc).timestamp() - 86400
    from storefix import T0

    write_samples(str(store), series("h", "GPU-a", "NVIDIA L4", yesterday - T0, 600, [0] * 144))
    settings = tmp_path / "settings.toml"
    settings.write_text("[report]\nidle_below = 2.5\n")
    s = ScheduleSettings(store=str(store), report_to=str(tmp_path / "reports"), fail_on=1e9, pricing=str(ASSETS / "pricing.toml"),
                         settings=str(settings), exe=f"{sys.executable} -m gpu_audit")
    line = next(x for x in cron(s)["etc/cron.d/gpu-audit"].splitlines() if x.startswith("30 6"))
    command = line.split(" ", 6)[6].replace("\\%", "%")
    r = subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    (findings,) = list((tmp_path / "reports").glob("findings-*.json"))
    assert json.loads(findings.read_text())["idle_below_pct"] == 2.5  # the settings file reached the daily report
    assert len(list((tmp_path / "reports").glob("report-*.html"))) == 1


def test_schedule_needs_one_kind(run_cli):
    code, _, err = run_cli("schedule", "print")
    assert code == 2 and err.startswith("Error: give exactly one of --cron and --systemd")


def test_prune_removes_old_days_only(tmp_path, run_cli):
    """Fixed days (2026-08-20 and 2026-11-28, three samples each within the day), and a --keep whose
    cut-off falls near 2026-10-01 whatever the hour the test runs at."""
    store = tmp_path / "s"
    from storefix import T0  # 2026-11-28T00:00:00Z

    write_samples(str(store), series("h", "GPU-a", "NVIDIA L4", -100 * 86400, 3600, [1] * 3))  # 2026-08-20
    write_samples(str(store), series("h", "GPU-a", "NVIDIA L4", 3600, 600, [1] * 3))  # 2026-11-28
    keep_days = int((datetime.now(timezone.utc) - datetime(2026, 10, 1, tzinfo=timezone.utc)).days)
    days = lambda: sorted(p.name for p in store.glob("samples/host=h/date=*"))  # noqa: E731
    before = days()
    assert before == ["date=2026-08-20", "date=2026-11-28"] and T0
    code, out, _ = run_cli("prune", str(store), "--keep", f"{keep_days}d", "--dry-run")
    assert code == 0 and "1 partition(s) to remove" in out and days() == before
    code, out, _ = run_cli("prune", str(store), "--keep", f"{keep_days}d")
    assert code == 0 and days() == before[1:]
    code, _, err = run_cli("prune", str(tmp_path / "nope"), "--keep", "90d")
    assert code == 2 and err.startswith("Error: store not found")


def test_compact_merges_and_keeps_every_row(tmp_path, run_cli):
    from gpu_audit.analyze.findings import ReportRequest, build

    store = str(tmp_path / "s")
    for k in range(5):  # five flushes, five files
        write_samples(store, series("h", "GPU-a", "NVIDIA L4", 3600 * k, 600, [10 * k] * 6))
    before = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    assert len(list(Path(store).glob("samples/*/*/*.parquet"))) == 5
    code, out, _ = run_cli("compact", store)
    assert code == 0 and "compacted 1 partition(s)" in out
    files = list(Path(store).glob("samples/*/*/*.parquet"))
    assert len(files) == 1 and files[0].name.startswith("compact-")
    assert read_table(store, "samples").num_rows == 30
    after = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    flat = lambda f: {k: v for k, v in f["fleet"].items() if not isinstance(v, dict)}  # noqa: E731
    assert flat(after) == pytest.approx(flat(before)) and after["fleet"]["spend_split"] == pytest.approx(before["fleet"]["spend_split"])
