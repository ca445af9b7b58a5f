"""The cost per workload as CSV, for chargeback spreadsheets (one row per workload; "no workload" last)."""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = ("kind", "id", "name", "user", "namespace", "gpus", "hosts", "gpu_hours", "spend_usd", "waste_usd", "idle_usd",
           "idle_held_hours", "mean_util_pct", "peak_memory_bytes")


def workloads_csv(findings: dict[str, Any]) -> str:
    from gpu_audit.fmt import printable

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for x in findings.get("workloads") or []:
        row = []
        for c in COLUMNS:
            v = x.get(c)
            if isinstance(v, list):
                v = " ".join(v)
            if isinstance(v, str):
                v = printable(v)
                if v[:1] in ("=", "+", "-", "@"):  # never a formula in a spreadsheet
                    v = "'" + v
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()


def write_workloads_csv(findings: dict[str, Any], path: str) -> None:
    from gpu_audit.store.writer import write_text_atomic

    write_text_atomic(workloads_csv(findings), path)
