"""Hardening, round two (issue 20): wrong numbers that exited 0, and inputs that could not get in."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ASSETS, read_table
from storefix import T0, series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"


def table_args(store, *files, extra=()):
    return ("import", "table", *map(str, files), "--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=util",
            "--host", "n1", "--gpu-name", H100, "--out", str(store), *extra)


@pytest.mark.parametrize("kind", ["iso", "parquet-us", "parquet-ms"])
def test_table_times_of_any_unit_are_read_as_what_they_are(tmp_path, run_cli, kind):
    """Two hours of one-minute samples at 50 %: 2.0 GPU-h and $6.00, whatever the time column's type."""
    times = [datetime(2026, 11, 28, tzinfo=timezone.utc) + timedelta(minutes=k) for k in range(1, 121)]
    if kind == "iso":
        f = tmp_path / "t.csv"
        f.write_text("time,gpu,util\n" + "".join(f"{t.isoformat()},g0,50\n" for t in times))
    else:
        f = tmp_path / "t.parquet"
        unit = kind.split("-")[1]
        pq.write_table(pa.table({"time": pa.array(times, pa.timestamp(unit, tz="UTC")), "gpu": ["g0"] * 120, "util": [50.0] * 120}), f)
    code, out, err = run_cli(*table_args(tmp_path / "s", f))
    assert code == 0, err
    f = build(ReportRequest([str(tmp_path / "s")], PRICING))
    assert f["fleet"]["gpu_hours"] == pytest.approx(2.0) and f["fleet"]["spend_usd"] == pytest.approx(6.0)
    assert f["window"]["start"].startswith("2026-11-28")


def test_the_repeated_autumn_hour_keeps_both_hours(tmp_path, run_cli):
    """New York, 2026-11-01: 00:00-02:59 local by the minute is 4 real hours (01:xx happens twice): 4.0 GPU-h, not 3."""
    lines = []
    for h, m in [(h, m) for h in (0, 1) for m in range(60)] + [(1, m) for m in range(60)] + [(2, m) for m in range(60)]:
        lines.append(f"2026/11/01 {h:02d}:{m:02d}:00.000, GPU-a, {H100}, 50 %, 1024 MiB\n")
    log = tmp_path / "dst.csv"
    log.write_text("timestamp, uuid, name, utilization.gpu [%], memory.used [MiB]\n" + "".join(lines))
    code, out, err = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--tz", "America/New_York", "--out", str(tmp_path / "s"))
    assert code == 0 and "imported 240 rows" in out and "duplicate" not in out, (out, err)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING))
    assert f["fleet"]["gpu_hours"] == pytest.approx(4.0) and f["fleet"]["spend_usd"] == pytest.approx(12.0)


def test_a_ratio_read_as_percent_is_refused_with_the_hint(tmp_path, run_cli):
    """A busy GPU at 0.6 read as 0.6 % would make an idle card out of nothing: refused, nothing stored."""
    f = tmp_path / "t.csv"
    f.write_text("time,gpu,util\n" + "".join(f"{T0 + 60 * k},g0,0.6\n" for k in range(1, 61)))
    code, _, err = run_cli(*table_args(tmp_path / "s", f))
    assert code == 2 and "every value lies between 0 and 1" in err and "--util-unit ratio" in err
    assert not (tmp_path / "s" / "samples").exists()
    assert run_cli(*table_args(tmp_path / "s", f, extra=("--util-unit", "ratio")))[0] == 0


def test_a_percent_column_read_as_ratio_is_refused_before_anything_is_stored(tmp_path, run_cli):
    """The docs' old example: the Alibaba duty cycle is in percent; x100 puts most values above 100 %."""
    f = tmp_path / "t.csv"
    f.write_text("time,gpu,util\n" + "".join(f"{T0 + 60 * k},g0,{10 + k % 30}\n" for k in range(1, 61)))
    code, _, err = run_cli(*table_args(tmp_path / "s", f, extra=("--util-unit", "ratio")))
    assert code == 2 and "60 of 60 values lie outside 0-100 %" in err and "--util-unit percent" in err
    assert not (tmp_path / "s" / "samples").exists()
    code, out, _ = run_cli(*table_args(tmp_path / "s", f))  # the right unit still gets in: nothing was stored before
    assert code == 0 and "imported 60 rows" in out


def test_a_map_naming_a_file_or_column_that_is_not_there_is_refused(tmp_path, run_cli):
    f = tmp_path / "t.csv"
    f.write_text("time,gpu,util\n" + "".join(f"{T0 + 60 * k},g0,50\n" for k in range(1, 61)))
    code, _, err = run_cli("import", "table", str(f), "--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=nosuch.csv:value",
                           "--host", "n1", "--out", str(tmp_path / "s"))
    assert code == 2 and "nosuch.csv is not one of the files given" in err
    code, _, err = run_cli("import", "table", str(f), "--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=utilisation",
                           "--host", "n1", "--out", str(tmp_path / "s"))
    assert code == 2 and "no file given has a column 'utilisation'" in err
    assert not (tmp_path / "s" / "samples").exists()


def test_prune_and_rollup_with_durations_beyond_the_calendar(tmp_path, run_cli):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [50.0] * 10))
    code, out, _ = run_cli("prune", str(tmp_path / "s"), "--keep", "99999999999999999999d")
    assert code in (0, 2) and "Traceback" not in out
    code, out, _ = run_cli("rollup", str(tmp_path / "s"), "--older-than", "99999999999999999999d")
    assert code in (0, 2) and "Traceback" not in out
    assert read_table(str(tmp_path / "s"), "samples").num_rows == 10


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount nothing; a read-only bind is root's")
def test_prune_on_a_read_only_store_is_one_line(tmp_path, run_cli):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [50.0] * 10))
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path / "s"), str(ro)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True)
        code, _, err = run_cli("prune", str(ro), "--keep", "1d")
        assert code == 2 and err.startswith("Error: cannot prune") and len(err.strip().splitlines()) <= 2
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_a_token_log_without_host_gets_one_with_tokens_host(tmp_path, run_cli):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    t = tmp_path / "t.jsonl"
    t.write_text("".join(json.dumps({"timestamp": T0 + 60 * k, "model": "llama-3.1-8b", "prompt_tokens": 100,
                                     "completion_tokens": 10}) + "\n" for k in range(1, 11)))
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [str(t)], tokens_host="n1"))
    (m,) = f["models"]
    assert m["completion_tokens"] == 100 and m["cost_usd"] == pytest.approx(3.0)
    code, out, err = run_cli("report", str(tmp_path / "s"), "--pricing", PRICING, "--tokens", str(t))
    assert "no host (give --tokens-host for a log from one server)" in out + err
    code, out, _ = run_cli("report", str(tmp_path / "s"), "--pricing", PRICING, "--tokens", str(t), "--tokens-host", "n1")
    assert code == 0 and "llama-3.1-8b" in out


def test_an_unpriced_line_keeps_its_brackets_and_at_says_its_own_time(tmp_path, run_cli):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-x", "Weird GPU 9000", 60, 60, [50.0] * 60))
    code, out, _ = run_cli("report", str(tmp_path / "s"), "--pricing", PRICING)
    assert code == 0 and "unpriced:" in out and ("[gpu]" in out or "[host]" in out or "pricing" in out)
    log = tmp_path / "q.csv"
    log.write_text("uuid, utilization.gpu [%]\nGPU-a, 50 %\n")
    code, out, _ = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--at", "2026-11-28T00:00:00Z", "--interval", "60s",
                           "--out", str(tmp_path / "t"))
    assert code == 0 and "times from --at 2026-11-28T00:00:00Z" in out and "local zone" not in out


@pytest.mark.parametrize("labels, counted", [
    ('gpu="²",UUID="GPU-a",Hostname="n1"', False),
    ('gpu="' + "9" * 20 + '",UUID="GPU-a",Hostname="n1"', False),
    ('gpu="0",UUID="GPU-a",Hostname="' + "h" * 10_001 + '"', True),
    ('gpu="0",UUID="GPU-a",Hostname="n\x1b]0;x\x071"', True),
    ('gpu="0",UUID="' + "u" * 5000 + '",Hostname="n1"', True),
])
def test_prometheus_labels_are_checked_where_they_enter(tmp_path, run_cli, labels, counted):
    """Odd gpu labels import with no index; over-long or control-character hosts and ids are refused and counted."""
    scrape = tmp_path / "s.prom"
    good = "".join(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{k}",UUID="GPU-{k}",Hostname="n1"}} 50\n' for k in range(1, 40))
    scrape.write_text(f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} 50\n" + good)  # one bad point in 40: under 5 %, the rest imported
    code, out, err = run_cli("import", "prometheus-text", str(scrape), "--out", str(tmp_path / "s"), "--at", "2026-11-28T00:00:00Z")
    assert code == 0 and "Traceback" not in out + err, err
    rows = read_table(str(tmp_path / "s"), "samples").to_pylist()
    assert len(rows) == (39 if counted else 40)
    assert all(len(r["host"]) <= 253 and len(r["uuid"]) <= 200 and r["host"].isprintable() for r in rows)


def test_a_huge_uuid_in_a_csv_log_is_refused_with_its_line(tmp_path, run_cli):
    log = tmp_path / "u.csv"
    log.write_text("timestamp, uuid, utilization.gpu [%]\n2026/11/28 00:01:00.000, " + "u" * 5_000_000 + ", 50 %\n")
    code, _, err = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--tz", "UTC", "--out", str(tmp_path / "s"))
    assert code == 2 and f"{log}:2: uuid is 5,000,000 characters long" in err
    t = tmp_path / "t.csv"
    t.write_text("time,gpu,util\n1795824060," + "g" * 300 + ",50\n")
    code, _, err = run_cli(*table_args(tmp_path / "s", t))
    assert code == 2 and "row 1: the device id is 300 characters long" in err
    assert not (tmp_path / "s" / "samples").exists()


def test_deeply_nested_token_records_and_pricing_are_one_line(tmp_path, run_cli):
    t = tmp_path / "nest.jsonl"
    t.write_text("[" * 100_000 + "]" * 100_000 + "\n"
                 '{"timestamp": "2026-11-28T00:00:00Z", "model": "m", "host": "h", "prompt_tokens": 1, "completion_tokens": 1}\n')
    from gpu_audit.analyze.tokens import load_tokens

    log = load_tokens([str(t)])
    assert log.table.num_rows == 1 and log.bad == 1 and "nested too deeply" in log.bad_examples[0]
    p = tmp_path / "p.toml"
    p.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    code, _, err = run_cli("report", str(tmp_path), "--pricing", str(p))
    assert code == 2 and err.startswith(f"Error: {p}: not valid TOML: nested too deeply")


@pytest.mark.parametrize("header, value, why", [
    ("memory.used [MiB]", "1e26 MiB", "memory.used"),
    ("clocks_throttle_reasons.active", "0xffffffffffffffffffff", "does not fit a 64-bit bit mask"),
    ("index", "99999999999999", "index: 99999999999999 is out of range"),
])
def test_extreme_values_in_a_csv_log_are_rejected_lines_not_tracebacks(tmp_path, run_cli, header, value, why):
    log = tmp_path / "x.csv"
    log.write_text(f"timestamp, uuid, utilization.gpu [%], {header}\n2026/11/28 00:01:00.000, GPU-a, 50 %, {value}\n")
    code, _, err = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--tz", "UTC", "--out", str(tmp_path / "s"))
    assert code == 2 and "every row was rejected" in err and why in err


def test_an_xml_dump_without_timestamp_takes_at(tmp_path, run_cli):
    import re

    text = (ASSETS / "nvsmi_loop.xml").read_text()
    bare = re.sub(r"<timestamp>.*?</timestamp>", "", text)
    one = tmp_path / "one.xml"
    docs = re.findall(r"<\?xml.*?</nvidia_smi_log>", bare, flags=re.DOTALL)
    one.write_text(docs[0])
    store = str(tmp_path / "s")
    code, _, err = run_cli("import", "nvidia-smi", str(one), "--host", "n1", "--tz", "UTC", "--out", store)
    assert code == 2 and "no <timestamp>" in err and "--at" in err
    code, out, err = run_cli("import", "nvidia-smi", str(one), "--host", "n1", "--out", store, "--at", "2026-11-28T00:00:00Z",
                             "--interval", "60s")
    assert code == 0 and "times from --at" in out, err
    assert {str(r["ts"])[:19] for r in read_table(store, "samples").to_pylist()} == {"2026-11-28 00:00:00"}
    both = tmp_path / "two.xml"
    both.write_text(docs[0] + "\n" + docs[1])
    code, _, err = run_cli("import", "nvidia-smi", str(both), "--host", "n2", "--out", store, "--at", "2026-11-28T00:00:00Z")
    assert code == 2 and "a second dump without <timestamp>" in err and "--interval" in err


def test_unclosed_xml_documents_are_read_in_one_pass():
    from gpu_audit.sources.nvidia_smi_xml import documents

    assert documents("<nvidia_smi_log>" * 40_000) == []  # 680 kB of unclosed tags: was 89 s (quadratic)
    assert documents("<nvidia_smi_logger/><nvidia_smi_log><a/></nvidia_smi_log>") == ["<nvidia_smi_log><a/></nvidia_smi_log>"]


def test_a_capture_bundle_says_where_its_csv_is(tmp_path, run_cli):
    bundle = tmp_path / "bundle.txt"
    bundle.write_text("==== nvidia-smi ====\n+-----------------------------------------+\n| NVIDIA-SMI 550.54 |\n\n"
                      "==== nvidia-smi --query-gpu ====\ntimestamp, uuid, utilization.gpu [%]\n2026/11/28 00:01:00.000, GPU-a, 50 %\n")
    code, _, err = run_cli("import", "nvidia-smi", str(bundle), "--host", "n1", "--tz", "UTC", "--out", str(tmp_path / "s"))
    assert code == 2 and "this looks like a capture bundle" in err and "header is at line 6" in err and "--fields" not in err


def test_table_and_prometheus_text_say_their_time_source_and_range(tmp_path, run_cli):
    t = tmp_path / "t.csv"
    t.write_text("time,gpu,util\n1795824060,g0,50\n1795827600,g0,40\n")
    code, out, _ = run_cli(*table_args(tmp_path / "s", t))
    assert code == 0 and "times read as epoch (UTC), 2026-11-28 00:01:00 to 2026-11-28 01:00:00 UTC" in out
    p = tmp_path / "s.prom"
    p.write_text('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1"} 50\n')
    code, out, _ = run_cli("import", "prometheus-text", str(p), "--out", str(tmp_path / "p"), "--at", "2026-11-28T00:00:00Z")
    assert code == 0 and "times from --at 2026-11-28T00:00:00+00:00, 2026-11-28 00:00:00 UTC" in out


def test_a_scrape_whose_samples_mostly_fail_stores_nothing(tmp_path, run_cli):
    scrape = tmp_path / "s.prom"
    scrape.write_text("".join(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{k}",UUID="GPU-{k}",Hostname="n1"}} {150 if k % 2 else 50}\n' for k in range(10)))
    code, _, err = run_cli("import", "prometheus-text", str(scrape), "--out", str(tmp_path / "s"), "--at", "2026-11-28T00:00:00Z")
    assert code == 2 and "5 of 10 samples fail a check" in err and "outside 0-100 %" in err
    assert not (tmp_path / "s" / "samples").exists()


def test_a_csv_log_whose_lines_mostly_fail_stores_nothing(tmp_path, run_cli):
    """100 lines, 20 with an unreadable utilization: over 5 % (and over 10 lines) is a wrong shape, not glitches."""
    log = tmp_path / "x.csv"
    log.write_text("timestamp, uuid, utilization.gpu [%]\n" + "".join(
        f"2026/11/28 00:{k // 60:02d}:{k % 60:02d}.000, GPU-a, {'fifty' if k % 5 == 0 else '50'} %\n" for k in range(100)))
    code, _, err = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--tz", "UTC", "--out", str(tmp_path / "s"))
    assert code == 2 and "20 of 100 lines fail a check" in err and "nothing imported" in err
    assert not (tmp_path / "s" / "samples").exists()
