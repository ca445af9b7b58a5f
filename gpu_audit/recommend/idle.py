"""idle: long idle stretches; "idle and empty" vs "idle but memory held"; daily patterns -> schedule."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu_audit.recommend.base import Recommendation, RecommendSettings, busy, eligible, hourly, monthly, target

GIB = 2**30


def _runs(hours: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for h in sorted(hours):
        if runs and h == runs[-1][-1] + 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    return runs


def _daily_window(hours_of_day: set[int]) -> str:
    """{22, 23, 0, ..., 6} -> "22:00-07:00 UTC" (the longest circular run first)."""
    hs = sorted(hours_of_day)
    if not hs:
        return ""
    starts = [h for h in hs if (h - 1) % 24 not in hours_of_day] or [hs[0]]
    parts = []
    for st in starts:
        end = st
        while (end + 1) % 24 in hours_of_day and (end + 1) % 24 != st:
            end = (end + 1) % 24
        parts.append(f"{st:02d}:00-{(end + 1) % 24:02d}:00")
    return ", ".join(parts) + " UTC"


def rule(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    series = hourly(findings)
    for d in findings["devices"]:
        if not eligible(d, s) or busy(d, s):
            continue
        a = series.arrays((d["host"], d["uuid"]))  # arrays, not a dict per hour: a fleet has millions of device-hours
        if a is None:
            continue
        keep = (a["covered_s"] != 0) & ~np.isnan(a["covered_s"]) & ~np.isnan(a["idle_s"])  # hours with time and evidence
        if not keep.any():
            continue
        h, cov, idle = a["h"][keep], a["covered_s"][keep], a["idle_s"][keep]
        idle_hours = h[idle >= s.idle_hour_share * cov].tolist()
        stretches = [run for run in _runs(idle_hours) if len(run) >= s.idle_min_stretch_hours]
        in_stretch = {x for run in stretches for x in run}
        ins = np.fromiter((x in in_stretch for x in h.tolist()), dtype=bool, count=len(h))
        covered_h = sum(cov.tolist()) / 3600  # summed in hour order, as a list (the same floats as always)
        idle_h = sum(cov[ins].tolist()) / 3600
        if not covered_h or idle_h / covered_h < s.idle_min_share:
            continue
        spend = a["spend_usd"][keep][ins]
        cost = sum(np.where(np.isnan(spend), 0.0, spend).tolist())
        mem = a["mem_max_bytes"][keep][ins]
        mems = sorted(np.where(np.isnan(mem), 0.0, mem).tolist())
        held = mems[len(mems) // 2] if mems else 0
        # Daily pattern: hours of the day idle on most covered days (one row per hour: a day per row).
        days = np.bincount(h % 24, minlength=24)
        idle_days = np.bincount(h[ins] % 24, minlength=24)
        pattern = {hod for hod in range(24)
                   if days[hod] and days[hod] >= s.schedule_min_days and idle_days[hod] >= s.schedule_day_share * days[hod]}
        scheduled = bool(pattern) and len(pattern) < 24 and len(
            [x for x in in_stretch if x % 24 in pattern]) >= 0.7 * len(in_stretch)
        proc = d.get("top_process") or {}
        label = f"{d['name']}" + (f" {d['mig_profile']}" if d.get("mig_profile") else "")
        if held >= s.idle_held_memory_gib * GIB:
            who = f"{proc.get('name')} (pid {proc.get('pid')})" if proc.get("name") else "a process"
            variant = "idle_memory_held"
            title = f"{d['host']}: {label} idles {idle_h:.0f} h while {who} holds {held / GIB:.0f} GiB"
            action = (f"Find what {who} is waiting for: cull idle notebook kernels (e.g. Jupyter's idle culler) or stop the "
                      "stuck job, then release or share the GPU.")
        elif scheduled:
            variant = "schedule"
            window = _daily_window(pattern)
            title = f"{d['host']}: {label} is idle every day {window}: schedule it off"
            action = f"Stop or scale the GPU to zero daily {window} (cron, an autoscaler schedule), instead of removing it."
        else:
            variant = "idle_empty"
            title = f"{d['host']}: {label} idle and empty {idle_h:.0f} h of {covered_h:.0f} h"
            action = "Release the GPU when idle: scale to zero, or an idle timeout in the scheduler; or remove it from the pool."
        cov = d.get("coverage_pct") or 0
        out.append(Recommendation(
            kind="idle", title=title, targets=(target(d),),
            evidence={"variant": variant, "idle_hours_in_stretches": idle_h, "covered_hours": covered_h,
                      "idle_share": idle_h / covered_h, "stretches": len(stretches),
                      "longest_stretch_hours": max(len(r) for r in stretches),
                      "median_memory_held_while_idle_bytes": held, "top_process": proc or None,
                      "daily_idle_window": _daily_window(pattern) if scheduled else None,
                      "idle_cost_in_window_usd": cost, "mean_util_pct": d["mean_util_pct"]},
            monthly_savings_usd=monthly(findings, cost),
            confidence="high" if cov >= 90 and findings["window"]["hours"] >= 24 else "medium",
            action=action,
            settings={"idle_below_pct": findings.get("idle_below_pct"), "idle_hour_share": s.idle_hour_share,
                      "min_stretch_hours": s.idle_min_stretch_hours, "min_share": s.idle_min_share,
                      "held_memory_gib": s.idle_held_memory_gib},
        ))
    return out
