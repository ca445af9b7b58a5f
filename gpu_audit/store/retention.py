"""Retention: drop whole date partitions older than a cut-off."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.schema import TABLES

EXTRA_TABLES = ("rollups",)


def prune(root: str, keep_s: float, now: datetime | None = None, dry_run: bool = False) -> list[str]:
    """Remove ``<table>/host=*/date=D`` folders whose day ended more than ``keep_s`` ago."""
    if not os.path.isdir(root):
        raise GpuAuditError(f"store not found: {root}")
    try:
        cutoff = ((now or datetime.now(timezone.utc)) - timedelta(seconds=keep_s)).strftime("%Y-%m-%d")
    except (OverflowError, ValueError):
        return []  # a --keep longer than the calendar: nothing is that old
    try:
        return _prune(root, cutoff, dry_run)
    except OSError as e:
        raise GpuAuditError(f"cannot prune {getattr(e, 'filename', None) or root}: {e.strerror or e}",
                            hint="run as the user that owns the store") from None


def _prune(root: str, cutoff: str, dry_run: bool) -> list[str]:
    removed = []
    for table in (*TABLES, *EXTRA_TABLES):
        base = os.path.join(root, table)
        if not os.path.isdir(base):
            continue
        for host in sorted(os.listdir(base)):
            hdir = os.path.join(base, host)
            for date in sorted(os.listdir(hdir)):
                if date.startswith("date=") and date[5:] < cutoff:
                    removed.append(os.path.join(hdir, date))
                    if not dry_run:
                        shutil.rmtree(os.path.join(hdir, date))
            if not dry_run and not os.listdir(hdir):
                os.rmdir(hdir)
    return removed
