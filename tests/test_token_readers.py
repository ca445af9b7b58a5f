"""JSONL and CSV token logs: the vectorised readers (pyarrow's JSON and CSV readers) give exactly what
the line-by-line reader gives, and hand every file they cannot take whole back to it (so bad lines
keep their numbers)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_audit.analyze import tokens as tk

T0 = 1795824000  # 2026-11-28T00:00:00Z

# One timestamp style per file (a field whose JSON type varies goes to the line reader, tested below).
STYLES = {
    "epoch": lambda s: T0 + s,
    "epoch_float": lambda s: T0 + s + 0.1234567,
    "iso_naive": lambda s: datetime.fromtimestamp(T0 + s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
    "iso_z": lambda s: datetime.fromtimestamp(T0 + s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso_offset": lambda s: datetime.fromtimestamp(T0 + s, tz=timezone.utc).astimezone().isoformat(),
}
record = st.fixed_dictionaries({
    "s": st.integers(0, 86400 * 3), "model": st.sampled_from(["m-a", "m-b", "llama-3.1-70b"]),
    "host": st.sampled_from(["h1", "h2"]), "p": st.integers(0, 10**6), "c": st.integers(0, 10**5),
    "nested": st.booleans(), "gpu": st.one_of(st.none(), st.sampled_from(["GPU-a", "GPU-b"]))})


def _write(path, recs, style, blank_lines=False):
    with open(path, "w") as f:
        for r in recs:
            when = STYLES[style](r["s"])
            d = ({"created": when, "model": r["model"], "host": r["host"],
                  "usage": {"prompt_tokens": r["p"], "completion_tokens": r["c"], "prompt_tokens_details": {"cached_tokens": 0}}}
                 if r["nested"] else
                 {"timestamp": when, "model": r["model"], "host": r["host"], "prompt_tokens": r["p"], "completion_tokens": r["c"]})
            if r["gpu"]:
                d["gpu_uuid"] = r["gpu"]
            f.write(json.dumps(d) + ("\n\n" if blank_lines else "\n"))


def _line_reader(paths, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(tk, "_jsonl_fast", lambda path: None)
        return tk.load_tokens(paths, **kw)


def _rows(log):
    t = log.table
    return sorted(zip(*(t[c].cast(t.schema.field(c).type.value_type if hasattr(t.schema.field(c).type, "value_type") else t.schema.field(c).type).to_pylist()
                       for c in t.column_names)), key=repr)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(record, min_size=1, max_size=30), style=st.sampled_from(sorted(STYLES)), blank=st.booleans())
def test_the_vectorised_reader_equals_the_line_reader(tmp_path, monkeypatch, recs, style, blank):
    path = tmp_path / "t.jsonl"
    _write(path, recs, style, blank)
    assert tk._jsonl_fast(str(path)) is not None  # a clean file is read whole
    assert _rows(tk.load_tokens([str(path)])) == _rows(_line_reader([str(path)], monkeypatch))


@pytest.mark.parametrize("lines, example", [
    (['{"timestamp": 1795824000, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}', "{not json"],
     "t.jsonl:2: not JSON"),
    (['{"timestamp": 1795824000, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}', "",
      '{"timestamp": 1795824000, "model": "m", "host": "h", "prompt_tokens": -1, "completion_tokens": 2}'],
     "t.jsonl:3: prompt_tokens must be a whole number >= 0, got -1"),
    (['{"timestamp": 1795824000, "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}',
      '{"timestamp": "2026-11-28T00:00:00Z", "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 2}',
      '{"timestamp": 1795824000, "model": "m", "prompt_tokens": 1, "completion_tokens": 2}'],
     "t.jsonl:3: no host"),
    (['{"created": 1795824000, "model": "m", "host": "h", "usage": {"completion_tokens": 2}}'],
     "t.jsonl:1: prompt_tokens missing"),
])
def test_files_with_problems_go_to_the_line_reader_with_line_numbers(tmp_path, lines, example):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert tk._jsonl_fast(str(path)) is None
    log = tk.load_tokens([str(path)])
    assert log.bad == 1 and log.bad_examples[0].startswith(f"{tmp_path}/{example}")


def test_parquet_epoch_floats_round_to_the_microsecond(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"created": [T0 + 0.1234567], "model": ["m"], "host": ["h"], "prompt_tokens": [1],
                             "completion_tokens": [2]}), tmp_path / "t.parquet")
    (ts,) = tk.load_tokens([str(tmp_path / "t.parquet")]).table["ts"].to_pylist()
    assert ts == datetime.fromtimestamp(T0 + 0.1234567, tz=timezone.utc)


def test_the_shipped_example_logs_load_whole():
    from conftest import ROOT

    ex = ROOT / "examples" / "tokens"
    log = tk.load_tokens([str(ex / "requests.jsonl"), str(ex / "requests.csv")])
    # flat, fractional-second, epoch and OpenAI-style records: 5 in the JSONL, 3 in the CSV, of which
    # req-0001 and req-0002 repeat requests of the JSONL (counted once); the third has no id (kept)
    assert log.bad == 0 and log.table.num_rows == 6 and log.duplicate_requests == 2
    t = log.table
    assert sum(t["completion_tokens"].to_pylist()) == (231 + 98 + 37 + 412 + 133) + 37
    assert sum(t["prompt_tokens"].to_pylist()) == (1480 + 6120 + 388 + 1702 + 5876) + 388


def _write_csv(path, recs, style):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "model", "host", "prompt_tokens", "completion_tokens", "gpu_uuid", "request_id"])
        for k, r in enumerate(recs):
            w.writerow([STYLES[style](r["s"]), r["model"], r["host"], r["p"], r["c"], r["gpu"] or "", f"req-{k}"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(record, min_size=1, max_size=30), style=st.sampled_from(sorted(STYLES)))
def test_the_vectorised_csv_reader_equals_the_line_reader(tmp_path, monkeypatch, recs, style):
    path = tmp_path / "t.csv"
    _write_csv(path, recs, style)
    assert tk._csv_fast(str(path)) is not None
    with monkeypatch.context() as m:
        m.setattr(tk, "_csv_fast", lambda path: None)
        slow = tk.load_tokens([str(path)])
    assert _rows(tk.load_tokens([str(path)])) == _rows(slow)


@pytest.mark.parametrize("text, example", [
    ("timestamp,model,host,prompt_tokens,completion_tokens\n2026-11-28T00:05:00,m,h,10,20\n2026-11-28T00:06:00,m,h,x,1\n",
     "t.csv:3: could not convert string to float: 'x'"),
    ("timestamp,model,host,prompt_tokens,completion_tokens\n2026-11-28T00:05:00,m,,10,20\n", "t.csv:2: no host"),
    ("timestamp,model,host,prompt_tokens,completion_tokens\n1795824000,m,h,-3,20\n", "t.csv:2: prompt_tokens must be"),
])
def test_csv_files_with_problems_go_to_the_line_reader_with_line_numbers(tmp_path, text, example):
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert tk._csv_fast(str(path)) is None
    log = tk.load_tokens([str(path)])
    assert log.bad == 1 and log.bad_examples[0].startswith(f"{tmp_path}/{example}")
