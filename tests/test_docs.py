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
