"""A renderer for the subset of Helm's template language the chart in deploy/helm uses, for machines
without ``helm`` (this one: its download is not reachable). Where ``helm`` is on PATH, the tests
render with it as well and compare.

Supported: ``{{ .Values.a.b }}``, ``{{ .Release.Name }}``, ``{{ .Chart.AppVersion }}``, a pipe to
``quote``, ``toYaml``, ``nindent N`` or ``indent N``, the ``{{-`` that trims the whitespace before
it, and ``{{- if X }} ... {{- end }}`` blocks (not nested). Anything else is an error, so the chart
cannot drift into what this renderer does not understand unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

TAG = re.compile(r"(\s*)\{\{(-?)\s*(.*?)\s*(-?)\}\}")


def _lookup(path: str, ctx: dict[str, Any]) -> Any:
    if not path.startswith("."):
        raise ValueError(f"unsupported template expression {path!r}")
    cur: Any = ctx
    for part in path[1:].split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _value(expr: str, ctx: dict[str, Any]) -> str:
    parts = [p.strip() for p in expr.split("|")]
    head = parts[0].split()
    if head[0] == "toYaml":
        v: Any = yaml.safe_dump(_lookup(head[1], ctx), default_flow_style=False, sort_keys=False).rstrip("\n")
    elif len(head) == 1:
        v = _lookup(head[0], ctx)
    else:
        raise ValueError(f"unsupported template expression {expr!r}")
    for f in parts[1:]:
        name, *args = f.split()
        if name == "quote":
            v = '"' + str(v).replace('"', '\\"') + '"'
        elif name in ("nindent", "indent"):
            pad = " " * int(args[0])
            v = ("\n" if name == "nindent" else "") + "\n".join(pad + line if line else line for line in str(v).rstrip("\n").split("\n"))
        else:
            raise ValueError(f"unsupported template function {name!r}")
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def render_text(text: str, ctx: dict[str, Any]) -> str:
    out: list[str] = []
    skipping = False
    pos = 0
    for m in TAG.finditer(text):
        lead, trim, expr, _ = m.groups()
        before = text[pos:m.start()] + ("" if trim else lead)
        if not skipping:
            out.append(before)
        pos = m.end()
        if expr.startswith("if "):
            if skipping:
                raise ValueError("nested if is not supported")
            skipping = not _lookup(expr[3:].strip(), ctx)
        elif expr == "end":
            skipping = False
        elif expr.startswith("/*"):
            continue
        elif not skipping:
            out.append(_value(expr, ctx))
    out.append(text[pos:])
    return "".join(out)


def render_chart(chart: Path, values: dict[str, Any] | None = None, release: str = "gpu-audit") -> dict[str, str]:
    """Each template of ``chart`` rendered with its values.yaml (updated by ``values``)."""
    base = yaml.safe_load((chart / "values.yaml").read_text())
    for k, v in (values or {}).items():
        base[k] = v
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    ctx = {"Values": base, "Release": {"Name": release, "Namespace": "default"},
           "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion")}}
    return {p.name: render_text(p.read_text(), ctx) for p in sorted((chart / "templates").glob("*.yaml"))}
