from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "gpu_audit" / "scenarios"
ASSETS = Path(__file__).resolve().parent / "assets"
SHARED = ROOT.parent / "shared"
# The demo's fleet starts at a fixed hour in every test, so the suite gives the same answer at any hour
# of the day; set GPU_AUDIT_DEMO_START to run it against another start.
os.environ.setdefault("GPU_AUDIT_DEMO_START", "2026-11-28T00:00:00Z")
# Templates fail loudly in tests (StrictUndefined); readers get a polite report with the field left out.
os.environ["GPU_AUDIT_STRICT_TEMPLATES"] = "1"


def fixed_start(name: str, tmp_path: Path, start: str = "2026-11-28T00:00:00Z") -> str:
    """A copy of a shipped scenario with a fixed start, so that a test's fleet is the same at any hour."""
    text = (SCENARIOS / name).read_text().replace("[host]\n", f'[host]\nstart = "{start}"\n', 1)
    p = tmp_path / f"fixed-{name}"
    p.write_text(text)
    return str(p)


def read_table(store: str | Path, table: str) -> pa.Table:
    files = sorted(f for f in glob.glob(f"{store}/{table}/host=*/date=*/*.parquet") if not os.path.basename(f).startswith("."))
    assert files, f"no files for {table} in {store}"
    t = pa.concat_tables([pq.read_table(f) for f in files])
    key = "uuid" if "uuid" in t.column_names else "endpoint"
    return t.sort_by([(key, "ascending"), ("ts", "ascending")])


def cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run gpu-audit in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "gpu_audit", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=str(ROOT))


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from gpu_audit.cli import run

    def _run(*args: str):
        code = run(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture
def scenario_file(tmp_path):
    def _make(text: str, name: str = "s.toml") -> str:
        p = tmp_path / name
        p.write_text(text)
        return str(p)

    return _make


def shared_or_skip(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"../shared/{rel} is not here (shared data is optional)")
    return p


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real NVIDIA GPU with NVML; skipped elsewhere."""
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        return
    except OSError:
        pass
    skip = pytest.mark.skip(reason="needs a real NVIDIA GPU (libnvidia-ml.so.1 not found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
