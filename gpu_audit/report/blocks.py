"""Findings -> blocks: the report as a tree of plain blocks, each rendered by one template.

Blocks carry data already computed in the findings; the only work here is choosing, ordering and
labelling (and aggregating chart series for large fleets). No figure is computed that a JSON reader
would not also get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpu_audit.fmt import fmt_bytes, fmt_pct, fmt_usd


@dataclass
class Kpi:
    key: str  # the findings path, e.g. "fleet.spend_usd" (data-kpi attribute, tested against the JSON)
    label: str
    value: str
    note: str = ""


@dataclass
class Block:
    template: str  # blocks/<template>.html.j2
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]
    intro: str = ""


def headline(f: dict[str, Any]) -> Block:
    fl = f["fleet"]
    w = f["window"]
    share = fl.get("cash_share_of_run_rate_pct")
    kpis = [
        Kpi("fleet.spend_usd", "GPU spend", fmt_usd(fl["spend_usd"]), f"{w['hours']:.1f} h window · {fl.get('gpus', fl['devices'])} GPUs"),
        Kpi("fleet.monthly_run_rate_usd", "Monthly run-rate", fmt_usd(fl.get("monthly_run_rate_usd")) if not fl.get("monthly_na") else "n/a",
            fl.get("monthly_na") or "spend × 730 h / window hours"),
        Kpi("fleet.potential_monthly_savings_usd", "Cash savings / month", fmt_usd(fl.get("potential_monthly_savings_usd")),
            (f"{fmt_pct(share)} of the run-rate; " if share is not None else "") + "bills that shrink, each device once"
            + (f"; {fmt_usd(fl['cash_assumed_billing_usd'])} of it on assumed billing" if fl.get("cash_assumed_billing_usd") else "")),
        Kpi("fleet.capacity_monthly_usd", "Capacity freed / month", fmt_usd(fl.get("capacity_monthly_usd")),
            f"≈ {fl.get('capacity_gpus_freed') or 0:.1f} GPU-equivalents; no bill shrinks unless it avoids buying GPUs"),
        Kpi("fleet.behaviour_recommendations", "Behaviour changes", str(fl.get("behaviour_recommendations") or 0),
            "product or client changes; their estimates are on their cards, in no total"),
        Kpi("fleet.waste_usd", "Waste", fmt_usd(fl["waste_usd"]), "spend × (1 − utilization)"),
        Kpi("fleet.idle_usd", "Idle cost", fmt_usd(fl["idle_usd"]), f"utilization < {f['idle_below_pct']:g}%"),
        Kpi("fleet.mean_util_pct", "Mean utilization", fmt_pct(fl["mean_util_pct"]), f["utilization_metric"]),
        Kpi("fleet.cost_per_1m_output_tokens", "Cost / 1M output tokens", fmt_usd(fl.get("cost_per_1m_output_tokens"), 3),
            f["token_source"] or "no token data"),
        Kpi("fleet.coverage_pct", "Coverage", fmt_pct(fl["coverage_pct"]), f"{fl['devices']} billable devices"),
    ]
    return Block("kpis", data={"kpis": kpis, "window": w})


def recommendations(f: dict[str, Any]) -> Block:
    return Block("recommendations", data={"recs": f.get("recommendations") or [], "settings": f.get("recommend_settings") or {}})


def device_table(f: dict[str, Any]) -> Block:
    rows = []
    for d in f["devices"]:
        rows.append({
            "host": d["host"], "device": (d["name"] or "?") + (f" {d['mig_profile']}" if d["mig_profile"] else "")
            + (" (MIG mode)" if d["mig_mode"] and not d["parent_uuid"] else ""), "uuid": d["uuid"],
            "cells": [
                (d["gpu_hours"], f"{d['gpu_hours']:.1f}"), (d["spend_usd"], fmt_usd(d["spend_usd"])),
                (d["waste_usd"], fmt_usd(d["waste_usd"])), (d["idle_usd"], fmt_usd(d["idle_usd"])),
                (d["mean_util_pct"], fmt_pct(d["mean_util_pct"])), (d["p95_util_pct"], fmt_pct(d["p95_util_pct"], 0)),
                (d["peak_memory_bytes"], fmt_bytes(d["peak_memory_bytes"])),
                (d["price_per_hour"], fmt_usd(d["price_per_hour"])), (d["coverage_pct"], fmt_pct(d["coverage_pct"])),
            ],
        })
    heads = ["GPU-hours", "spend", "waste", "idle", "mean util", "p95 util", "peak memory", "$/h", "coverage"]
    return Block("table", data={"heads": heads, "rows": rows})


def models_table(f: dict[str, Any]) -> Block:
    return Block("models", data={"models": sorted(f["models"], key=lambda m: -m["cost_usd"]), "api": f.get("api_prices") or [],
                                 "unattributed": f["fleet"].get("unattributed_usd"), "source": f["token_source"]})


def definitions(f: dict[str, Any]) -> Block:
    prices = sorted({(d["price_source"] or "unpriced", d["price_per_hour"]) for d in f["devices"] if not (d["mig_mode"] and not d["parent_uuid"])},
                    key=lambda x: str(x[0]))
    return Block("definitions", data={"f": f, "prices": prices, "settings": f.get("recommend_settings") or {}})


def data_quality(f: dict[str, Any]) -> Block:
    return Block("quality", data={"q": f["data_quality"]})


def build_sections(f: dict[str, Any], charts: dict[str, str]) -> list[Section]:
    """The report's sections, in reading order. ``charts`` maps a chart name to its HTML fragment."""
    def chart(name: str, title: str, note: str = "") -> Block:
        return Block("chart", title=title, data={"html": charts.get(name), "note": note, "name": name})

    return [
        Section("headline", "Headline", [headline(f)]),
        *([Section("since", "Since the last audit", [chart("since", "Spend, waste and realised savings over the kept audits"),
                                                        Block("baseline", data={"b": f.get("baseline"), "missing": (f.get("data_quality") or {}).get("baseline_missing")})],
                   "Each recommendation of the baseline report checked against what the fleet did since: its freed devices' spend then "
                   "and now, per 730 h (done: 80 % or more of the claim; partly: 20-80 %; not done; gone: its devices left the store).")]
          if f.get("baseline") or f.get("history") else []),
        Section("recommendations", "Recommendations", [recommendations(f)],
                "Cash first (bills that shrink), then capacity (GPU time freed), then behaviour (product or client changes), "
                "most valuable first. Each shows its evidence, its monthly figure (730 h), its confidence and why, and the "
                "thresholds it used."),
        Section("utilization", "Utilization", [
            chart("heatmap", "Fleet utilization by hour", "Mean utilization per device and clock hour (UTC); grey: no data."),
            chart("distribution", "Utilization distribution", "Device-hours in each 10 % utilization band."),
        ]),
        Section("memory", "Memory headroom", [chart("memory", "Peak and p95 memory against total")]),
        Section("spend", "Where the money goes", [chart("spend", "Spend: productive, under-used, idle")]
                + ([Block("namespaces", data={"namespaces": f["namespaces"]})] if f.get("namespaces") else [])),
        Section("tokens", "Cost per token", [chart("tokens", "Cost per 1M output tokens per model, by hour"), models_table(f)]),
        *([Section("energy", "Energy and carbon", [Block("energy", data={"fleet": f["fleet"], "window": f["window"],
                                                                         "models": [m for m in f["models"] if m.get("energy_kwh")]}),
                                                  chart("energy", "Energy per 1M output tokens")],
                   "GPU board energy (NVML's or DCGM's energy counter, else power × time); $ and CO2e with the pricing "
                   "file's [energy], × PUE. Energy $ is shown beside spend, never added to it.")]
          if f["fleet"].get("energy_kwh") is not None else []),
        *([Section("workloads", "Who is using the GPUs", [
            chart("workloads", "Top workloads by waste"),
            Block("workloads", data={"workloads": f["workloads"],
                                     "jobs": [w for w in f["workloads"] if w["kind"] == "slurm_job"][:20]})],
                   "Each device-hour's cost split among the workloads whose processes were on the GPU (by SM share, else "
                   "memory held, else evenly); device time with no process is \"no workload\". Click a column to sort; "
                   "type to filter.")] if f.get("workloads") else []),
        Section("devices", "Devices", [device_table(f)], "Click a column to sort; type to filter."),
        Section("method", "How these numbers are computed", [definitions(f)]),
        Section("quality", "Data quality", [data_quality(f)]),
    ]
