"""The HTML report: findings -> blocks -> templates, one self-contained file.

Autoescape is on for every template: anything from a host, a log or a user is text. plotly.js is
inlined once, so the file works offline; figures are fragments (see charts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jinja2
import markupsafe

from gpu_audit import __version__
from gpu_audit.fmt import NA, fmt_bytes, fmt_num, fmt_pct, fmt_usd, printable, short_id
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


STRICT_ENV = "GPU_AUDIT_STRICT_TEMPLATES"


class PoliteUndefined(jinja2.ChainableUndefined):
    """For readers: a field a template expected but the findings lack renders as nothing (falsy, and
    so is anything read from it), never an error page. Tests set $GPU_AUDIT_STRICT_TEMPLATES, under
    which the same access fails loudly (jinja2.StrictUndefined)."""

    def __str__(self) -> str:
        return ""


def environment(strict: bool | None = None) -> jinja2.Environment:
    import os

    strict = bool(os.environ.get(STRICT_ENV)) if strict is None else strict
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined if strict else PoliteUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    def missing_is_none(fn: Callable[..., str]) -> Callable[..., str]:
        return lambda v, *a: fn(None if isinstance(v, jinja2.Undefined) else v, *a)

    env.filters.update(usd=missing_is_none(fmt_usd), pct=missing_is_none(fmt_pct), num=missing_is_none(fmt_num),
                       bytes=missing_is_none(fmt_bytes), show=missing_is_none(_show),
                       short_id=short_id, scaled=lambda v, k: None if v is None or isinstance(v, jinja2.Undefined) else v * k)
    # Every value printed is a string by then: control and bidi characters (a name spoofed with U+202E)
    # are shown escaped, before autoescape makes it HTML text.
    # A value a template prints that the findings do not have (None) reads N/A, like every number.
    env.finalize = lambda v: (NA if v is None else printable(v, "\n\t") if isinstance(v, str) and not isinstance(v, markupsafe.Markup)
                              else v)
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
