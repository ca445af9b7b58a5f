"""The terminal summary: rich tables rendered from the findings object."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpu_audit.fmt import fmt_bytes, fmt_num, fmt_pct, fmt_usd, printable, short_id


MAX_RECS = 40  # recommendations listed in the terminal; the rest are counted


def clean(text: Any) -> str:
    """A name from a host, a log or a user, fit for the terminal: control and escape characters shown
    escaped (an ESC or BEL in a model name never reaches the terminal raw), rich markup escaped."""
    return escape(printable(str(text)))


GROUP_BY = {"job": lambda w: w["id"] if w["kind"] == "slurm_job" else None, "pod": lambda w: w["id"] if w["kind"] == "pod" else None,
            "namespace": lambda w: w.get("namespace"), "user": lambda w: w.get("user"),
            "container": lambda w: w["id"] if w["kind"] == "container" else None}


def group_workloads(wl: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Workloads summed per job, pod, namespace, user or container (those without one: "(none)")."""
    key = GROUP_BY[by]
    out: dict[str, dict[str, Any]] = {}
    for w in wl:
        k = key(w) or "(none)"
        e = out.setdefault(k, {"label": k, "kind": by, "gpus": 0, "gpu_hours": 0.0, "spend_usd": 0.0, "waste_usd": 0.0,
                               "idle_held_hours": 0.0, "_u": 0.0, "_h": 0.0})
        e["gpus"] += w["gpus"]
        for c in ("gpu_hours", "spend_usd", "waste_usd", "idle_held_hours"):
            e[c] += w[c]
        if w.get("mean_util_pct") is not None:
            e["_u"] += w["mean_util_pct"] * w["gpu_hours"]
            e["_h"] += w["gpu_hours"]
    for e in out.values():
        e["mean_util_pct"] = e.pop("_u") / e["_h"] if e["_h"] else None
        e.pop("_h")
    return sorted(out.values(), key=lambda e: (-e["waste_usd"], e["label"]))


def render(f: dict[str, Any], console: Console, top: int = 10, group_by: str | None = None) -> None:
    fl = f["fleet"]
    w = f["window"]
    console.print(f"[bold]gpu-audit report[/]  {w['start']} -> {w['end']} ({w['hours']:.1f} h)  "
                  f"utilization metric: {clean(f['utilization_metric'])}")
    t = Table("GPUs", "devices", "GPU-hours", "spend", "run-rate / month", "waste", "idle cost", "mean util", "coverage",
              title="Fleet", title_justify="left")
    t.add_row(str(fl.get("gpus", fl["devices"])), str(fl["devices"]), fmt_num(fl["gpu_hours"], 1), fmt_usd(fl["spend_usd"]),
              fmt_usd(fl.get("monthly_run_rate_usd")), fmt_usd(fl["waste_usd"]), fmt_usd(fl["idle_usd"]), fmt_pct(fl["mean_util_pct"]),
              fmt_pct(fl["coverage_pct"]))
    console.print(t)
    if fl.get("monthly_na"):
        console.print(f"[yellow]monthly run-rate {fl['monthly_na']}[/]: a snapshot is a reading, not a month", soft_wrap=True)
    if "potential_monthly_savings_usd" in fl:
        share = fl.get("cash_share_of_run_rate_pct")
        console.print(f"[bold]cash savings {fmt_usd(fl['potential_monthly_savings_usd'])}/month[/]"
                      + (f" ({fmt_pct(share)} of the {fmt_usd(fl.get('monthly_run_rate_usd'))} run-rate)" if share is not None else "")
                      + f"; capacity freed {fmt_usd(fl.get('capacity_monthly_usd'))}/month (≈ {fl.get('capacity_gpus_freed') or 0:.1f} "
                      f"GPU-equivalents, no bill shrinks); {fl.get('behaviour_recommendations') or 0} behaviour change(s) suggested "
                      "(in no total)", soft_wrap=True)
        assumed = fl.get("cash_assumed_billing_usd") or 0.0
        if assumed > 0:
            console.print(f"[yellow]of the cash, {fmt_usd(assumed)}/month rests on assumed billing[/] (no \\[billing] in the pricing file "
                          f"for those hosts; declared: {fmt_usd(fl['potential_monthly_savings_usd'] - assumed)}): declare how the GPUs are "
                          "bought to confirm it", soft_wrap=True)
    if fl.get("energy_kwh") is not None:
        extra = [f"{fmt_usd(fl['energy_usd'])} of energy (beside spend, not in it)"] if fl.get("energy_usd") is not None else []
        extra += [f"{fl['kgco2e']:,.1f} kgCO2e"] if fl.get("kgco2e") is not None else []
        console.print(f"energy: {fl['energy_kwh']:,.1f} kWh ({fmt_pct(fl.get('idle_energy_share_pct'))} while idle)"
                      + ("; " + ", ".join(extra) if extra else ""), soft_wrap=True)
    if fl.get("waste_sm_active_usd") is not None:
        console.print(f"On GPUs with SM activity (GPM/DCGM), waste by util_gpu is {fmt_usd(fl['waste_util_on_sm_devices_usd'])}; "
                      f"by SM activity it is {fmt_usd(fl['waste_sm_active_usd'])}: the duty cycle hides the difference.")
    _since_last_audit(f, console)
    recs = f.get("recommendations") or []
    if recs:
        shown = recs[:MAX_RECS]
        t = Table("class", "kind", "recommendation", "$ / month", "counted", "confidence", "billing",
                  title=f"Recommendations ({len(recs)}; cash first; 'counted': what each adds to its total, each freed share once)",
                  title_justify="left")
        for r in shown:
            t.add_row(r.get("savings_class", ""), r["kind"], clean(r["title"]), fmt_usd(r["monthly_savings_usd"]),
                      fmt_usd(r.get("counted_monthly_usd")) if r.get("savings_class") != "behaviour" else "-", r["confidence"],
                      _billing_label(r))
        console.print(t)
        if len(recs) > len(shown):
            console.print(f"{len(recs) - len(shown)} more recommendation(s) not shown here (the terminal lists {MAX_RECS}): "
                          "see the findings JSON or the HTML report")
    devs = sorted([d for d in f["devices"] if d["spend_usd"] is not None], key=lambda d: -(d["waste_usd"] or 0))[:top]
    t = Table("host", "device", "GPU-hours", "spend", "waste", "idle", "mean", "p95", "peak mem", title=f"Costliest waste (top {len(devs)})", title_justify="left")
    for d in devs:
        label = (d["name"] or "?").replace("NVIDIA ", "") + " " + short_id(d["uuid"]) + (f" {d['mig_profile']}" if d["mig_profile"] else "")
        if d["mig_mode"] and not d["parent_uuid"]:
            label += " (MIG mode, instances not visible)" if d.get("mig_instances_visible") is False else " (unallocated MIG slices)"
        t.add_row(clean(d["host"]), clean(label), fmt_num(d["gpu_hours"], 1), fmt_usd(d["spend_usd"]), fmt_usd(d["waste_usd"]),
                  fmt_usd(d["idle_usd"]), fmt_pct(d["mean_util_pct"]), fmt_pct(d["p95_util_pct"], 0), fmt_bytes(d["peak_memory_bytes"]))
    console.print(t)
    if f["models"]:
        t = Table("model", "per", "prompt tokens", "cached", "output tokens", "reasoning", "cost", "$ / 1M output", "$ / 1M tokens",
                  title=f"Models ({clean(f['token_source'] or '')})", title_justify="left")
        for m in sorted(f["models"], key=lambda m: -m["cost_usd"]):
            t.add_row(clean(m["model"]), m.get("attribution") or "", fmt_num(m["prompt_tokens"]), fmt_num(m.get("cached_tokens")),
                      fmt_num(m["completion_tokens"]), fmt_num(m.get("reasoning_tokens")), fmt_usd(m["cost_usd"]),
                      fmt_usd(m["cost_per_1m_output_tokens"], 3), fmt_usd(m["cost_per_1m_tokens"], 3))
        console.print(t)
    if f.get("namespaces"):
        t = Table("namespace", "devices", "GPU-hours", "spend", "waste", "idle cost", title="Kubernetes namespaces", title_justify="left")
        for n in f["namespaces"][:top]:
            t.add_row(clean(n["namespace"]) if n["namespace"] is not None else "(none)", str(n["devices"]), fmt_num(n["gpu_hours"], 1),
                      fmt_usd(n["spend_usd"]), fmt_usd(n["waste_usd"]), fmt_usd(n["idle_usd"]))
        console.print(t)
        console.print(f"unattributed GPU cost (hosts without tokens): {fmt_usd(fl['unattributed_usd'])}")
    wl = [w for w in f.get("workloads") or [] if w["kind"] != "none"]
    if wl:
        rows = group_workloads(wl, group_by) if group_by else wl
        what = f"by {group_by}" if group_by else "by waste; processes seen on the GPUs"
        t = Table(group_by or "workload", "kind", "GPUs", "GPU-hours", "spend", "waste", "idle held", "mean util",
                  title=f"Workloads (top {min(top, len(rows))} of {len(rows)} {what})", title_justify="left")
        for w in rows[:top]:
            t.add_row(clean(w["label"] if "label" in w else w["id"]), w["kind"], str(w["gpus"]),
                      fmt_num(w["gpu_hours"], 1), fmt_usd(w["spend_usd"]), fmt_usd(w["waste_usd"]), f"{w['idle_held_hours']:.1f} h",
                      fmt_pct(w["mean_util_pct"]))
        console.print(t)
    q = f["data_quality"]
    for d in q["unpriced_devices"]:
        console.print(f"[yellow]unpriced:[/] {clean(d['host'])} {clean(d['name'] or '?')} ({clean(d['uuid'])}): "
                      f"{clean(d.get('why') or 'add it to a pricing file')}", soft_wrap=True)
    for d in q["devices_without_evidence"]:
        console.print(f"[yellow]no evidence:[/] {clean(d['host'])} {clean(d['name'] or '?')} {clean(d['mig_profile'] or '')}: {clean(d['why'])}",
                      soft_wrap=True)
    for d in q.get("devices_with_read_errors", [])[:top]:
        console.print(f"[yellow]read errors:[/] {clean(d['host'])} {clean(d['name'] or '?')} ({clean(d['uuid'])}): "
                      f"{d['error_hours']:.1f} h of samples could not be read (billed, no utilization)")
    for d in q.get("duplicate_or_overlapping_samples", [])[:top]:
        cut = f", {d['overlap_hours']:.2f} h of overlapping series cut to wall time" if d["overlap_hours"] else ""
        console.print(f"[yellow]counted once:[/] {clean(d['host'])} {clean(d['uuid'])}: {d['duplicate_rows']} repeated readings{cut}")
    for r in q.get("rejected_samples", [])[:top]:
        console.print(f"[yellow]rejected samples:[/] {clean(r['file'])}: {r['rows']} rows reach no sum ({r['why']})")
    for g in q["gaps"][:top]:
        console.print(f"[yellow]gap:[/] {clean(g['host'])} {clean(g['uuid'])}: {g['missing_hours']:.1f} h without samples ({fmt_pct(g['coverage_pct'])} coverage)")
    rj = q["rejected_token_records"]
    if rj["count"]:
        console.print(f"[yellow]rejected token records:[/] {rj['count']} (" + "; ".join(clean(e) for e in rj["examples"]) + ")",
                      soft_wrap=True)
    for c in q.get("contradictions", [])[:top]:
        console.print(f"[red]contradiction:[/] {clean(c['host'])}{' ' + clean(c['uuid']) if c.get('uuid') else ''}"
                      f"{' ' + clean(c['model']) if c.get('model') else ''}: {clean(c['why'])}", soft_wrap=True)
    for line in q.get("token_files_read_once", []):
        console.print(f"[yellow]token log given twice:[/] {clean(line)}")
    if q.get("duplicate_token_requests"):
        console.print(f"[yellow]token records counted once:[/] {q['duplicate_token_requests']} repeated the request id of an earlier record")
    for key, what in (("token_records_outside_window", "outside the window"), ("token_records_unknown_host", "from hosts without samples")):
        if q[key]:
            console.print(f"[yellow]token records not attributed:[/] {q[key]} {what}")


def _billing_label(r: dict[str, Any]) -> str:
    """The billing a card rests on, short: "node, on-demand, assumed"."""
    b = r.get("billing") or {}
    if not b or r.get("savings_class") == "behaviour":
        return ""
    return f"{b.get('unit')}, {b.get('commitment')}" + ("" if b.get("declared") else ", assumed")


def _since_last_audit(f: dict[str, Any], console: Console, top: int = 5) -> None:
    """Realised savings since the baseline and the largest changes (docs/findings.md "baseline")."""
    b = f.get("baseline")
    if not b:
        if (f.get("data_quality") or {}).get("baseline_missing"):
            console.print(f"since the last audit: {clean(f['data_quality']['baseline_missing'])}", soft_wrap=True)
        return
    w = b["window"]
    counts = b["status_counts"]
    console.print(f"[bold]Since the last audit[/] ({clean(w.get('start'))} -> {clean(w.get('end'))}): realised "
                  f"[bold]{fmt_usd(b['realized_monthly_usd'])}/month[/] of {fmt_usd(b['claimed_monthly_usd'])}/month claimed in cash; "
                  f"recommendations done {counts['done']}, partly {counts['partly']}, not done {counts['not done']}, gone {counts['gone']}",
                  soft_wrap=True)
    if b.get("note"):
        console.print(f"[yellow]{clean(b['note'])}[/]", soft_wrap=True)
    fl = b["deltas"]["fleet"]
    parts = []
    for key, label in (("spend_monthly_usd", "spend"), ("waste_monthly_usd", "waste"), ("idle_monthly_usd", "idle cost")):
        d = fl[key]
        if d["change"] is not None:
            parts.append(f"{label} {'+' if d['change'] >= 0 else '-'}{fmt_usd(abs(d['change']))}/month"
                         + (f" ({d['change_pct']:+.1f}%)" if d["change_pct"] is not None else ""))
    u = fl["mean_util_pct"]
    if u["change"] is not None:
        parts.append(f"mean utilization {u['change']:+.1f} points")
    if parts:
        console.print("per 730 h against the baseline: " + "; ".join(parts), soft_wrap=True)
    moved = [e for e in b["deltas"]["devices"] if (e["spend_monthly_usd"]["change"] or 0) != 0 or e["status"] != "both"][:top]
    if moved:
        t = Table("host", "device", "status", "spend / month then", "now", "change", title="Largest changes per device", title_justify="left")
        for e in moved:
            d = e["spend_monthly_usd"]
            change = d["change"] if d["change"] is not None else (d["after"] or 0) - (d["before"] or 0)
            t.add_row(clean(e["host"]), clean(short_id(e["uuid"])), e["status"], fmt_usd(d["before"]), fmt_usd(d["after"]), fmt_usd(change))
        console.print(t)
    done = [r for r in b["recommendations"] if r["status"] in ("done", "partly")]
    for r in done[:top]:
        console.print(f"  {r['status']}: {clean(r['title'] or r['id'] or '')}: {fmt_usd(r['realized_monthly_usd'])}/month realised "
                      f"of {fmt_usd(r['claimed_monthly_usd'])}", soft_wrap=True)
