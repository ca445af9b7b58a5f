"""Every importer against random bytes and random valid-but-extreme values (issue 20): exit 0 or 2,
never a traceback, never a stored row outside its range."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_audit.cli import run

EXTREME = st.sampled_from(["0", "-1", "1e308", "-1e308", "inf", "nan", "NaN", "1e26", "99999999999999999999", "0x" + "f" * 40,
                           "", " ", "²", "٣", "\x1b[31m", "\x00", "😀", "a" * 300, "2026/11/28 00:01:00.000", "1795824060",
                           "1795824060000", "-5", "50 %", "1024 MiB", "[N/A]", "Enabled", "2026-11-28T00:00:00Z"])


def _run(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run(args)
        except SystemExit as e:  # typer's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue() + err.getvalue()


def _rows_in_range(store: str) -> None:
    for f in glob.glob(f"{store}/samples/*/*/*.parquet"):
        for r in pq.read_table(f).to_pylist():
            for c in ("util_gpu_pct", "util_mem_pct", "gr_engine_active_pct", "sm_active_pct"):
                assert r.get(c) is None or 0 <= r[c] <= 100, (c, r[c])
            assert r["interval_s"] is None or r["interval_s"] >= 0
            assert len(r["uuid"]) <= 200 and len(r["host"]) <= 253
            assert r["ts"].year >= 2000


def _check(kind: str, name: str, data: bytes, extra: list[str]) -> None:
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        store = os.path.join(tmp, "s")
        code, text = _run(["import", kind, path, "--out", store, *extra])
        assert code in (0, 2), text
        assert "Traceback" not in text, text
        _rows_in_range(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_to_every_importer(data):
    _check("nvidia-smi", "x.csv", data, ["--host", "n1", "--tz", "UTC"])
    _check("nvidia-smi", "x.xml", b"<?xml version='1.0'?>" + data, ["--host", "n1", "--tz", "UTC"])
    _check("prometheus-text", "x.prom", data, ["--at", "2026-11-28T00:00:00Z"])
    _check("table", "x.csv", data, ["--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=util", "--host", "n1"])


@FUZZ
@given(st.lists(st.tuples(EXTREME, EXTREME, EXTREME, EXTREME), min_size=1, max_size=5))
def test_extreme_values_in_valid_shapes(rows):
    csv = "timestamp, uuid, utilization.gpu [%], memory.used [MiB]\n" + "".join(f"{a}, {b}, {c}, {d}\n" for a, b, c, d in rows)
    _check("nvidia-smi", "x.csv", csv.encode("utf-8", "surrogatepass"), ["--host", "n1", "--tz", "UTC"])
    table = "time,gpu,util,mem\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    _check("table", "t.csv", table.encode(), ["--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=util",
                                             "--map", "mem_used_bytes=mem", "--host", "n1"])
    prom = "".join(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{a[:20]}",UUID="{b.replace(chr(34), "")}",Hostname="n1"}} {c or 0}\n'
                   for a, b, c, _ in rows)
    _check("prometheus-text", "x.prom", prom.encode(), ["--at", "2026-11-28T00:00:00Z"])
