"""Plotly figures from findings, embedded as HTML fragments (plotly.js is included once by html.py).

Labels that came from hosts, logs or users are HTML-escaped before they reach plotly, whose SVG text
understands a little HTML; the figure JSON is written into a <script> with <, > and & escaped, so a
name such as "</script><img src=x onerror=alert(1)>" stays text.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go

from gpu_audit.fmt import short_id

from gpu_audit.hourly import AGGREGATE_ABOVE  # devices: above this, the heatmap shows hosts

COLORS = {"productive": "#2f855a", "underused": "#d69e2e", "idle": "#c53030"}
CONFIG = {"displayModeBar": False, "responsive": True}


def _label(text: str) -> str:
    from gpu_audit.fmt import printable

    return html.escape(printable(text), quote=False)


def fragment(fig: go.Figure, div_id: str, height: int = 360) -> str:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), template="plotly_white",
                      font=dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12))
    spec = json.dumps({"data": fig.to_dict()["data"], "layout": fig.to_dict()["layout"], "config": CONFIG},
                      default=str, separators=(",", ":"))
    spec = spec.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<div class="chart" id="{div_id}" style="height:{height}px"></div>'
            f'<script>(function(){{var s={spec};Plotly.newPlot("{div_id}",s.data,s.layout,s.config);}})();</script>')


def heatmap(f: dict[str, Any]) -> str | None:
    cols = f["series"]["device_hourly"]["columns"]
    rows = [dict(zip(cols, r)) for r in f["series"]["device_hourly"]["rows"]]
    if not rows:
        return None
    names = {(d["host"], d["uuid"]): d for d in f["devices"]}
    aggregate = len(names) > AGGREGATE_ABOVE or f["series"].get("device_hourly_level") == "host"
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        d = names.get((r["host"], r["uuid"]))
        if r["mean_util_pct"] is None or (d is None and not aggregate):
            continue
        key = r["host"] if aggregate else f"{r['host']} · {(d['name'] or '').replace('NVIDIA ', '')} {d['mig_profile'] or ''} …{short_id(r['uuid'])}"
        cells[(key, r["hour"])].append(r["mean_util_pct"])
    ys = sorted({k for k, _ in cells})
    xs = sorted({h for _, h in cells})
    z = [[(sum(cells[(y, x)]) / len(cells[(y, x)])) if (y, x) in cells else None for x in xs] for y in ys]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=[_label(y) for y in ys], zmin=0, zmax=100, colorscale="Viridis",
                               colorbar=dict(title="util %"), hovertemplate="%{y}<br>%{x}<br>%{z:.1f}%<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return fragment(fig, "chart-heatmap", height=max(260, 22 * len(ys) + 90))


def distribution(f: dict[str, Any]) -> str | None:
    h = f["series"]["utilization_histogram"]
    if not h["bins"]:
        return None
    fig = go.Figure(go.Bar(x=h["bins"], y=h["hours"], marker_color="#2b6cb0", hovertemplate="%{x}: %{y:.1f} device-hours<extra></extra>"))
    fig.update_yaxes(title="device-hours")
    return fragment(fig, "chart-distribution", height=300)


def memory(f: dict[str, Any]) -> str | None:
    devs = [d for d in f["devices"] if d.get("memory_total_bytes") and d.get("peak_memory_bytes") is not None
            and not (d["mig_mode"] and not d["parent_uuid"])]
    if not devs:
        return None
    devs = sorted(devs, key=lambda d: d["peak_memory_bytes"] / d["memory_total_bytes"])[-60:]
    labels = [_label(f"{d['host']} …{short_id(d['uuid'])} {d['mig_profile'] or ''}") for d in devs]
    gib = 2**30
    fig = go.Figure([
        go.Bar(y=labels, x=[d["memory_total_bytes"] / gib for d in devs], name="total", orientation="h", marker_color="#e2e8f0"),
        go.Bar(y=labels, x=[d["peak_memory_bytes"] / gib for d in devs], name="peak", orientation="h", marker_color="#2b6cb0"),
        go.Bar(y=labels, x=[(d.get("p95_memory_bytes") or 0) / gib for d in devs], name="p95", orientation="h", marker_color="#90cdf4"),
    ])
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="GiB")
    return fragment(fig, "chart-memory", height=max(260, 20 * len(devs) + 80))


def spend(f: dict[str, Any]) -> str | None:
    sp = f["fleet"].get("spend_split")
    if not sp or not f["fleet"]["spend_usd"]:
        return None
    parts = [("productive", sp["productive_usd"]), ("under-used", sp["underused_usd"]), ("idle", sp["idle_usd"])]
    fig = go.Figure([go.Bar(y=["fleet"], x=[v], name=n, orientation="h", marker_color=c,
                            hovertemplate=f"{n}: $%{{x:,.2f}}<extra></extra>")
                     for (n, v), c in zip(parts, COLORS.values())])
    fig.update_layout(barmode="stack", legend=dict(orientation="h"))
    fig.update_xaxes(title="USD")
    return fragment(fig, "chart-spend", height=220)


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down", "pentagon", "hexagon")


def tokens(f: dict[str, Any]) -> str | None:
    """Cost per 1M output tokens per model and hour: one line per model, each with its own marker (two
    models on one GPU pool can cost the same); API reference lines priced for the fleet's own mix of
    prompt and output tokens, so that both sides count prompt and completion tokens."""
    mh = f["series"]["model_hourly"]
    rows = [dict(zip(mh["columns"], r)) for r in mh["rows"]]
    if not rows:
        return None
    fig = go.Figure()
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_model[r["model"]].append(r)
    for k, (model, rs) in enumerate(sorted(by_model.items())):
        pts = [(r["hour"], r["cost_usd"] / r["completion_tokens"] * 1e6) for r in rs if r["completion_tokens"]]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=_label(model),
                                 marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=7), line=dict(dash="solid" if k < 10 else "dash")))
    prompt = sum(m["prompt_tokens"] for m in f["models"])
    output = sum(m["completion_tokens"] for m in f["models"])
    for api in (f.get("api_prices") or []) if output else []:
        per_output = (prompt * api["input_per_1m"] + output * api["output_per_1m"]) / output
        fig.add_hline(y=per_output, line_dash="dot", line_color="#718096",
                      annotation_text=_label(f"{api['model']}: ${per_output:.2f} per 1M output tokens at this fleet's "
                                             f"{prompt / output:.1f}:1 prompt:output mix"), annotation_position="top left")
    fig.update_yaxes(title="$ per 1M output tokens (prompt tokens included)", rangemode="tozero")
    return fragment(fig, "chart-tokens", height=360)


def energy(f: dict[str, Any]) -> str | None:
    """Wh per 1M output tokens per model (attributed like cost); without token data, kWh per device."""
    models = [m for m in f["models"] if m.get("wh_per_1m_output_tokens")]
    if models:
        ms = sorted(models, key=lambda m: -m["wh_per_1m_output_tokens"])
        fig = go.Figure(go.Bar(x=[_label(m["model"]) for m in ms], y=[m["wh_per_1m_output_tokens"] for m in ms], marker_color="#2f855a",
                               hovertemplate="%{x}: %{y:,.0f} Wh per 1M output tokens<extra></extra>"))
        fig.update_yaxes(title="Wh per 1M output tokens (GPU board energy)")
        return fragment(fig, "chart-energy", height=320)
    devs = sorted([d for d in f["devices"] if d.get("energy_kwh") and not d.get("parent_uuid")], key=lambda d: -d["energy_kwh"])[:40]
    if not devs:
        return None
    fig = go.Figure(go.Bar(x=[_label(f"{d['host']} …{short_id(d['uuid'])}") for d in devs], y=[d["energy_kwh"] for d in devs],
                           marker_color="#2f855a"))
    fig.update_yaxes(title="kWh in the window")
    return fragment(fig, "chart-energy", height=320)


def workloads(f: dict[str, Any]) -> str | None:
    """The top workloads by waste: spend split into waste and the rest."""
    wl = [w for w in f.get("workloads") or [] if w["kind"] != "none"][:15]
    if not wl:
        return None
    names = [_label(str(w["id"])) for w in wl]
    fig = go.Figure([go.Bar(y=names, x=[w["waste_usd"] for w in wl], name="waste", orientation="h", marker_color=COLORS["idle"]),
                     go.Bar(y=names, x=[w["spend_usd"] - w["waste_usd"] for w in wl], name="productive", orientation="h",
                            marker_color=COLORS["productive"])])
    fig.update_layout(barmode="stack", legend=dict(orientation="h"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="USD in the window")
    return fragment(fig, "chart-workloads", height=max(240, 24 * len(wl) + 90))


def since(f: dict[str, Any]) -> str | None:
    """Over every kept findings file (``history``): spend and waste per day, and the realised savings
    each report measured against its baseline (per month, right axis)."""
    pts = f.get("history") or []
    if not pts:
        return None
    x = [p["window_end"] for p in pts]
    fig = go.Figure([
        go.Scatter(x=x, y=[p["spend_per_day_usd"] for p in pts], name="spend / day", mode="lines+markers", marker_color="#2b6cb0"),
        go.Scatter(x=x, y=[p["waste_per_day_usd"] for p in pts], name="waste / day", mode="lines+markers", marker_color=COLORS["idle"]),
        go.Bar(x=x, y=[p["realized_monthly_usd"] for p in pts], name="realised savings / month", yaxis="y2",
               marker_color=COLORS["productive"], opacity=0.5,
               width=[0.3 * 3600e3 * min(p["hours"] for p in pts)] * len(pts)),  # ms on a time axis: a third of a window
    ])
    fig.update_layout(legend=dict(orientation="h"), yaxis=dict(title="USD per day"),
                      yaxis2=dict(title="USD per month", overlaying="y", side="right", rangemode="tozero"))
    fig.update_xaxes(title="end of each audit's window (UTC)")
    return fragment(fig, "chart-since", height=320)


CHARTS = {"since": since, "heatmap": heatmap, "distribution": distribution, "memory": memory, "spend": spend, "tokens": tokens, "energy": energy, "workloads": workloads}
