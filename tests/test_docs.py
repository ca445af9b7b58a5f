"""Docs are checked by tests: every column and every command is documented."""

import re

import pytest
import typer

from conftest import ROOT
from gpu_audit.cli import app
from gpu_audit.store.schema import TABLES

DOCS = ROOT / "docs"


@pytest.mark.parametrize("table", list(TABLES))
def test_every_column_is_documented(table):
    text = (DOCS / "store.md").read_text()
    section = text.split(f"### `{table}`")[1].split("\n### ")[0]
    documented = set(re.findall(r"`([a-z0-9_]+)`", section))
    missing = [c for c in TABLES[table].names if c not in documented]
    assert not missing, f"columns of {table} missing from docs/store.md: {missing}"


def _commands(group, prefix=""):
    cmd = typer.main.get_command(group)
    for name, sub in cmd.commands.items():
        if hasattr(sub, "commands"):
            yield from ((f"{prefix}{name} {n}", c) for n, c in sub.commands.items())
        else:
            yield f"{prefix}{name}", sub


def test_every_command_has_help_and_a_docs_section():
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for name, cmd in _commands(app):
        assert cmd.help, f"{name} has no help"
        assert f"gpu-audit {name}" in text, f"gpu-audit {name} is not documented in docs/"
        for p in cmd.params:
            for opt in p.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, f"{name} {opt} is not documented in docs/"


def test_every_findings_field_is_documented(tmp_path):
    from conftest import ASSETS
    from gpu_audit.analyze.findings import ReportRequest, build
    from storefix import series, write_samples

    write_samples(str(tmp_path), series("h", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [50] * 6))
    t = tmp_path / "t.jsonl"
    t.write_text('{"timestamp": 1795824100, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}\n')
    f = build(ReportRequest([str(tmp_path)], str(ASSETS / "pricing.toml"), [str(t)], None, None))
    text = (DOCS / "findings.md").read_text()
    keys = set(f) | set(f["fleet"]) | set(f["devices"][0]) | set(f["models"][0]) | set(f["data_quality"]) | set(f["series"])
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"findings fields missing from docs/findings.md: {missing}"


def test_cli_works_without_the_click_package():
    """Newer typer vendors click and does not install it: the CLI must not need it."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import builtins\nreal = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name == 'click' or name.startswith('click.'):\n        raise ImportError('no click')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\nfrom gpu_audit.cli import run\nimport sys\nsys.exit(run(['nosuch']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 2 and "No such command" in r.stderr and "Traceback" not in r.stderr


def test_help_texts_render_whole(run_cli, monkeypatch):
    """Rich markup must not eat words from a help text: `[gpu]` in a help string is text, not a style tag."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the text is compared unwrapped
    for name, cmd in _commands(app):
        code, out, _ = run_cli(*name.split(), "--help")
        assert code == 0, name
        flat = " ".join(out.split())
        for p in cmd.params:
            text = " ".join((getattr(p, "help", None) or "").replace("\\[", "[").split())
            assert text in flat, f"gpu-audit {name}: the help of {p.name} is not shown whole: {text!r}"
