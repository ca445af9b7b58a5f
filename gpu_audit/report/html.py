"""The HTML report: findings -> blocks -> templates, one self-contained file.

Autoescape is on for every template: anything from a host, a log or a user is text. plotly.js is
inlined once, so the file works offline; figures are fragments (see charts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jinja2

from gpu_audit import __version__
from gpu_audit.fmt import NA, fmt_bytes, fmt_num, fmt_pct, fmt_usd
from gpu_audit.report.blocks import build_sections
from gpu_audit.report.charts import CHARTS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _show(v: Any) -> str:
    """Evidence values for people: numbers rounded, lists and dicts flattened."""
    if v is None:
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_show(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "; ".join(_show(x) for x in v)
    return str(v)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(usd=fmt_usd, pct=fmt_pct, num=fmt_num, bytes=fmt_bytes, show=_show)
    return env


def render_html(findings: dict[str, Any], progress: Callable[[str], None] | None = None) -> str:
    import plotly.offline

    charts = {}
    for name, make in CHARTS.items():
        if progress:
            progress(f"chart: {name}")
        charts[name] = make(findings)
    sections = build_sections(findings, charts)
    if progress:
        progress("rendering")
    return environment().get_template("report.html.j2").render(
        f=findings, sections=sections, version=__version__, plotly_js=plotly.offline.get_plotlyjs())


def write_html(findings: dict[str, Any], path: str, progress: Callable[[str], None] | None = None) -> None:
    from gpu_audit.store.writer import write_text_atomic

    write_text_atomic(render_html(findings, progress), path)
