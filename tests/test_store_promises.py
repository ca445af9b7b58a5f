"""The store never loses or doubles a row (issue 18, docs/operations.md "Maintenance").

Every figure is compared with the clean single copy, computed by hand: one H100 at $3.00/h, samples
of 60 s at 50 % (so a GPU-hour costs $3.00 and wastes $1.50).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ASSETS, ROOT, read_table
from storefix import series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build
from gpu_audit.store import replace, writer
from gpu_audit.store.compact import compact_partition, compact_store
from gpu_audit.store.rollup import rollup
from gpu_audit.store.writer import StoreError

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"
DAY = datetime(2026, 11, 28, tzinfo=timezone.utc)
AFTER = datetime(2026, 11, 30, tzinfo=timezone.utc)  # "now" for rollups: the 28th ended long before


def report(*stores: str, tokens: list[str] | None = None):
    return build(ReportRequest(list(stores), PRICING, tokens or [], None, None))


def fleet(f) -> tuple[float, float, float]:
    return (round(f["fleet"]["gpu_hours"], 9), round(f["fleet"]["spend_usd"], 9), round(f["fleet"]["waste_usd"], 9))


def rows_of(folder: Path) -> list[tuple]:
    """Every row of every complete data file in a folder, as sorted tuples (a multiset)."""
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return []
    t = pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive")
    return sorted(tuple(r.values()) for r in t.to_pylist())


def flushed_store(root: Path, files: int = 6, per_file: int = 60, uuid: str = "GPU-a") -> Path:
    """One H100, one day partition, ``files`` flush files of ``per_file`` one-minute samples at 50 %."""
    for k in range(files):
        write_samples(str(root), series("n1", uuid, H100, k * per_file * 60, 60, [50.0] * per_file))
    return root / "samples" / "host=n1" / "date=2026-11-28"


# -- compact: injected failures at every step, then kill -9 ------------------------------------------

class FaultyOs:
    """``os`` whose ``op`` fails with ENOSPC on its n-th call (every other call goes through)."""

    def __init__(self, op: str, n: int) -> None:
        self.op, self.n, self.calls, self.fired = op, n, 0, False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name != self.op:
            return real

        def call(*a, **k):
            self.calls += 1
            if self.calls == self.n:
                self.fired = True
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*a, **k)
        return call


def inject(monkeypatch, op: str, n: int) -> FaultyOs:
    """A full disk at the n-th call of ``op`` (every fsync, rename or delete of the journal and the
    writer), or at the write itself; ``fired`` says whether it happened."""
    faulty = FaultyOs(op, n)
    if op == "write":
        def broken(*a, **k):
            faulty.fired = True
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(writer.pq, "write_table", broken)
    else:
        monkeypatch.setattr(replace, "os", faulty)
        monkeypatch.setattr(writer, "os", faulty)
    return faulty


@pytest.mark.parametrize("op", ["write", "fsync", "replace", "unlink"])
def test_compact_loses_no_row_when_any_step_fails(tmp_path, monkeypatch, op):
    """For each step (the write itself, each fsync, each rename, each delete) and each of its calls in
    turn: a compact that fails there keeps every row readable, and the next compact ends with exactly
    the rows of the clean store in one file."""
    n = 1
    while True:
        root = tmp_path / f"{op}-{n}"
        part = flushed_store(root)
        before = rows_of(part)
        faulty = inject(monkeypatch, op, n)
        try:
            compact_partition(str(part), "samples")
        except StoreError:
            pass
        finally:
            monkeypatch.undo()
        after_fault = rows_of(part)
        assert set(after_fault) == set(before), f"{op} #{n}: rows lost or changed"
        assert len(before) <= len(after_fault) <= 2 * len(before), f"{op} #{n}"
        if len(after_fault) > len(before):  # committed, old files not all removed yet: the report counts each once
            assert fleet(report(str(root))) == (6.0, 18.0, 9.0)
        compact_partition(str(part), "samples")  # the next run: no fault
        assert rows_of(part) == before, f"{op} #{n}: the next compact did not restore the clean rows"
        names = [p.name for p in part.iterdir()]
        assert len([x for x in names if x.endswith(".parquet") and not x.startswith(".")]) == 1, names
        assert not [x for x in names if x.startswith(".replace-") or x.endswith(".tmp")], names
        assert fleet(report(str(root))) == (6.0, 18.0, 9.0)
        if not faulty.fired or op == "write":
            break  # every call of this step has failed once (the write has one)
        n += 1
    assert n > 1 or op == "write"


def test_a_journal_cut_short_or_of_an_older_version_is_rolled_back(tmp_path):
    """The leftovers of the bug this replaces: an older version's hidden ``.compact-*.parquet.sources``
    (written before its compacted file was complete) must never remove the sources."""
    part = flushed_store(tmp_path / "s")
    before = rows_of(part)
    names = sorted(p.name for p in part.glob("*.parquet"))
    (part / ".compact-6-1.parquet.sources").write_text(json.dumps(names))  # the old disk-full leftover
    (part / ".replace-abc.pending").write_text('{"sources": ')  # a journal cut short by a kill
    compact_store(str(tmp_path / "s"))
    assert rows_of(part) == before
    assert fleet(report(str(tmp_path / "s"))) == (6.0, 18.0, 9.0)


def test_a_committed_journal_whose_output_is_gone_removes_nothing(tmp_path):
    part = flushed_store(tmp_path / "s")
    before = rows_of(part)
    names = sorted(p.name for p in part.glob("*.parquet"))
    (part / ".replace-x.commit").write_text(json.dumps({"sources": names, "output": "compact-0-1.parquet", "rows": 360}))
    replace.recover(str(part))
    assert rows_of(part) == before and not (part / ".replace-x.commit").exists()


KILL_SCRIPT = """
import sys
from gpu_audit.store.compact import compact_partition
compact_partition(sys.argv[1], "samples")
"""


def test_compact_killed_at_random_points_loses_nothing(tmp_path):
    """kill -9 at random moments of a compact of a 460,800-row partition (64 GPUs x 2 h at 1 s),
    three times; each time the next compact restores every row."""
    src = tmp_path / "src"
    for g in range(64):
        write_samples(str(src), series("n1", f"GPU-{g:02d}", H100, 0, 1, [50.0] * 7200))
    part_src = src / "samples" / "host=n1" / "date=2026-11-28"
    want = sum(pq.read_metadata(p).num_rows for p in part_src.glob("*.parquet"))
    assert want == 460_800
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(shutil.copytree(part_src, tmp_path / "timing"))], check=True, cwd=ROOT)
    full = time.monotonic() - t0
    rng = random.Random(18)
    for attempt in range(3):
        part = Path(shutil.copytree(part_src, tmp_path / f"try{attempt}"))
        p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(part)], cwd=ROOT)
        time.sleep(rng.uniform(0.3, 1.0) * full)
        p.send_signal(signal.SIGKILL)
        p.wait()
        readable = {n: pq.read_metadata(part / n).num_rows for n in os.listdir(part) if n.endswith(".parquet") and not n.startswith(".")}
        assert sum(readable.values()) >= want, f"try {attempt}: rows lost after the kill"
        compact_partition(str(part), "samples")
        got = [n for n in os.listdir(part) if n.endswith(".parquet") and not n.startswith(".")]
        assert len(got) == 1 and pq.read_metadata(part / got[0]).num_rows == want, f"try {attempt}"


# -- unknown columns ---------------------------------------------------------------------------------

def test_compact_carries_columns_it_does_not_know(tmp_path):
    """A newer collector's columns (here ``future_pct`` and a newer schema version) survive compact."""
    write_samples(str(tmp_path), series("n1", "GPU-a", H100, 0, 60, [50.0] * 30))
    part = tmp_path / "samples" / "host=n1" / "date=2026-11-28"
    newer = pq.read_table(next(part.glob("*.parquet")))
    newer = newer.append_column("future_pct", pa.array([float(i) for i in range(newer.num_rows)], pa.float64()))
    newer = newer.replace_schema_metadata({b"gpu_audit.schema_version": b"99"})
    newer = newer.set_column(0, "ts", pa.array([t + timedelta(hours=1) for t in newer["ts"].to_pylist()], newer.schema.field("ts").type))
    pq.write_table(newer, part / "newer.parquet")
    compact_store(str(tmp_path))
    (out,) = part.glob("compact-*.parquet")
    t = pq.read_table(out)
    assert t.num_rows == 60 and "future_pct" in t.column_names and "k8s_namespace" in t.column_names
    assert sorted(x for x in t["future_pct"].to_pylist() if x is not None) == [float(i) for i in range(30)]
    assert pq.read_schema(out).metadata[b"gpu_audit.schema_version"] == b"99"
    assert fleet(report(str(tmp_path))) == (1.0, 3.0, 1.5)


def test_rollup_leaves_a_day_with_unknown_columns_raw_and_says_so(tmp_path, run_cli):
    write_samples(str(tmp_path), series("n1", "GPU-a", H100, 0, 60, [50.0] * 60))
    part = tmp_path / "samples" / "host=n1" / "date=2026-11-28"
    f = next(part.glob("*.parquet"))
    pq.write_table(pq.read_table(f).append_column("future_pct", pa.nulls(60, pa.float64())), f)
    code, out, _ = run_cli("rollup", str(tmp_path), "--older-than", "1d")
    assert code == 0 and "left raw" in out and "future_pct" in out and "rolled up 0 day(s)" in out
    assert f.exists() and not (tmp_path / "rollups").exists()


# -- rollups: late rows, copies, failures ------------------------------------------------------------

def rolled_store(root: Path) -> Path:
    """GPU-a 00:00-01:00 at 50 %, rolled up."""
    write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    assert rollup(str(root), 86400, now=AFTER)
    assert not (root / "samples").exists() or not list((root / "samples").rglob("*.parquet"))
    return root


def test_late_rows_for_a_rolled_up_day_are_counted_then_merged(tmp_path, run_cli):
    """A late import (GPU-a 02:00-03:00, and GPU-b 00:00-01:00) after the day was rolled up: the report
    counts them at once (3 GPU-h, $9.00), and the next rollup merges them without losing one."""
    root = rolled_store(tmp_path / "s")
    late = tmp_path / "late.csv"
    late.write_text("timestamp, uuid, name, utilization.gpu [%], memory.used [MiB]\n" + "".join(
        f"{DAY + timedelta(minutes=k):%Y/%m/%d %H:%M:%S}.000, {u}, {H100}, 50 %, 1024 MiB\n"
        for u, ks in (("GPU-a", range(121, 181)), ("GPU-b", range(1, 61))) for k in ks))
    code, out, err = run_cli("import", "nvidia-smi", str(late), "--host", "n1", "--tz", "UTC", "--out", str(root))
    assert code == 0 and "imported 120 rows" in out, err
    assert fleet(report(str(root))) == (3.0, 9.0, 4.5)
    done = rollup(str(root), 86400, now=AFTER)
    assert [(d, raw) for _, d, raw, _ in done] == [("2026-11-28", 120)]
    assert not list((root / "samples").rglob("*.parquet")) if (root / "samples").exists() else True
    assert len(list((root / "rollups").rglob("rollup-*.parquet"))) == 1
    assert fleet(report(str(root))) == (3.0, 9.0, 4.5)


def test_raw_rows_of_minutes_a_rollup_has_count_once(tmp_path):
    """A rollup interrupted before its raw files went (or raw rows copied back): the same minutes count once."""
    root = tmp_path / "s"
    write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    raw = tmp_path / "raw-copy"
    shutil.copytree(root / "samples", raw)
    rollup(str(root), 86400, now=AFTER)
    shutil.copytree(raw, root / "samples", dirs_exist_ok=True)
    assert fleet(report(str(root))) == (1.0, 3.0, 1.5)


@pytest.mark.parametrize("how", ["copy", "same-root-twice", "raw-and-rolled-copies"])
def test_two_copies_of_a_rolled_up_store_report_as_one(tmp_path, how):
    root = rolled_store(tmp_path / "s")
    if how == "copy":
        other = shutil.copytree(root, tmp_path / "copy")
    elif how == "same-root-twice":
        other = root
    else:  # one copy rolled up, the other still raw
        other = tmp_path / "raw"
        write_samples(str(other), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    assert fleet(report(str(root), str(other))) == fleet(report(str(root))) == (1.0, 3.0, 1.5)


def test_two_copies_of_a_gappy_hour_report_as_one(tmp_path):
    """20 one-minute samples spread over an hour (a third covered): two copies of the store bill 20 minutes once."""
    root = tmp_path / "s"
    write_samples(str(root), [r for k, r in enumerate(series("n1", "GPU-a", H100, 60, 60, [50.0] * 60)) if k % 3 == 0])
    copy = shutil.copytree(root, tmp_path / "copy")
    one = report(str(root))
    assert fleet(one) == (round(20 / 60, 9), 1.0, 0.5)
    both = report(str(root), str(copy))
    assert fleet(both) == fleet(one)
    assert both["data_quality"]["duplicate_or_overlapping_samples"]  # and said


@pytest.mark.parametrize("op", ["write", "fsync", "replace", "unlink"])
def test_rollup_loses_no_row_when_any_step_fails(tmp_path, monkeypatch, op):
    """A rollup that fails at any call of any step leaves figures equal to the clean store's, and the
    next rollup ends with one rollup file and the same figures."""
    n = 1
    while True:
        root = tmp_path / f"{op}-{n}"
        write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
        write_samples(str(root), series("n1", "GPU-b", H100, 60, 60, [50.0] * 60))
        faulty = inject(monkeypatch, op, n)
        try:
            rollup(str(root), 86400, now=AFTER)
        except StoreError:
            pass
        finally:
            monkeypatch.undo()
        assert fleet(report(str(root))) == (2.0, 6.0, 3.0), f"{op} #{n}"
        rollup(str(root), 86400, now=AFTER)
        assert len(list((root / "rollups").rglob("rollup-*.parquet"))) == 1
        assert not (root / "samples").exists() or not list((root / "samples").rglob("*.parquet"))
        assert fleet(report(str(root))) == (2.0, 6.0, 3.0), f"{op} #{n} after the next rollup"
        if not faulty.fired or op == "write":
            break
        n += 1
    assert n > 1 or op == "write"


def test_rollup_while_a_collector_writes_removes_only_what_it_rolled(tmp_path, monkeypatch):
    """A flush file that lands in the raw day while the rollup works is never removed with the others."""
    from gpu_audit.store import rollup as rollup_mod

    root = tmp_path / "s"
    write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    real = rollup_mod.replace_files

    def meanwhile(folder, sources, data, output):
        write_samples(str(root), series("n1", "GPU-b", H100, 60, 60, [50.0] * 60))  # a collector's flush, right now
        return real(folder, sources, data, output)

    monkeypatch.setattr(rollup_mod, "replace_files", meanwhile)
    rollup(str(root), 86400, now=AFTER)
    monkeypatch.undo()
    assert fleet(report(str(root))) == (2.0, 6.0, 3.0)
    rollup(str(root), 86400, now=AFTER)
    assert fleet(report(str(root))) == (2.0, 6.0, 3.0)


# -- imports: one command, copies, snapshots, processes ------------------------------------------------

def nvsmi(path: Path, minutes, util: int = 50) -> str:
    path.write_text("timestamp, uuid, name, utilization.gpu [%], memory.used [MiB]\n" + "".join(
        f"{DAY + timedelta(minutes=k):%Y/%m/%d %H:%M:%S}.000, GPU-a, {H100}, {util} %, 1024 MiB\n" for k in minutes))
    return str(path)


def test_one_command_given_the_same_instants_in_two_files_stores_them_once(tmp_path, run_cli):
    """A gappy log and a copy of it in another order (not the same bytes): every instant once."""
    gappy = nvsmi(tmp_path / "gappy.csv", range(1, 61, 3))
    other = nvsmi(tmp_path / "gappy_copy.csv", reversed(range(1, 61, 3)))
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "nvidia-smi", gappy, other, "--host", "n1", "--tz", "UTC", "--out", store)
    assert code == 0 and "imported 20 rows" in out and "20 rows already in the store" in out, (out, err)
    assert read_table(store, "samples").num_rows == 20


def test_the_same_file_twice_in_one_command_is_read_once(tmp_path, run_cli):
    gappy = nvsmi(tmp_path / "gappy.csv", range(1, 61, 3))
    copy = shutil.copy(gappy, tmp_path / "copy.csv")
    code, out, _ = run_cli("import", "nvidia-smi", gappy, str(copy), "--host", "n1", "--tz", "UTC", "--out", str(tmp_path / "s"))
    assert code == 0 and "imported 20 rows" in out and "copy.csv: the same content as" in out and "read once" in out
    assert read_table(str(tmp_path / "s"), "samples").num_rows == 20


def test_a_copied_scrape_is_not_imported_again_and_the_time_source_is_said(tmp_path, run_cli):
    scrape = tmp_path / "s.prom"
    scrape.write_text('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"} 50\n')
    os.utime(scrape, (DAY.timestamp() + 600, DAY.timestamp() + 600))
    store = str(tmp_path / "s")
    code, out, _ = run_cli("import", "prometheus-text", str(scrape), "--out", store, "--interval", "60s")
    assert code == 0 and "times from the file's modification time 2026-11-28 00:10:00 UTC" in out
    copy = tmp_path / "copy.prom"
    shutil.copy(scrape, copy)  # a new modification time: before, a new instant
    code, _, err = run_cli("import", "prometheus-text", str(copy), "--out", store, "--interval", "60s")
    assert code == 2 and "the same content as" in err and "s.prom" in err
    assert read_table(store, "samples").num_rows == 1
    code, out, _ = run_cli("import", "prometheus-text", str(scrape), "--out", str(tmp_path / "t"), "--at", "2026-11-28T00:00:00Z")
    assert code == 0 and "times from --at 2026-11-28T00:00:00+00:00" in out


def test_xml_imported_again_adds_no_process_rows(tmp_path, run_cli):
    xml = ASSETS / "nvsmi_loop.xml"
    store = str(tmp_path / "s")
    assert run_cli("import", "nvidia-smi", str(xml), "--host", "n1", "--tz", "UTC", "--out", store)[0] == 0
    procs = read_table(store, "processes").num_rows
    assert procs > 0
    changed = tmp_path / "again.xml"
    changed.write_text(xml.read_text() + "\n")  # other bytes, the same dumps
    code, _, err = run_cli("import", "nvidia-smi", str(changed), "--host", "n1", "--tz", "UTC", "--out", store)
    assert code == 2 and "already in the store" in err
    assert read_table(store, "processes").num_rows == procs


# -- stray times ---------------------------------------------------------------------------------------

def test_times_before_2000_are_refused_where_they_enter(tmp_path, run_cli):
    log = tmp_path / "since-start.csv"
    log.write_text("timestamp, uuid, utilization.gpu [%]\n5, GPU-a, 50 %\n15, GPU-a, 50 %\n")
    code, _, err = run_cli("import", "nvidia-smi", str(log), "--host", "n1", "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"Error: {log}:2: time 1970-01-01T00:00:05Z is before 2000-01-01")
    assert not (tmp_path / "s" / "samples").exists()
    table = tmp_path / "t.csv"
    table.write_text("time,gpu,util\n1795824000,g0,50\n5,g0,50\n")
    code, _, err = run_cli("import", "table", str(table), "--map", "ts=time", "--map", "uuid=gpu", "--map", "util_gpu_pct=util",
                           "--host", "n1", "--out", str(tmp_path / "s"))
    assert code == 2 and f"{table}: row 2: time 1970-01-01T00:00:05Z is before 2000-01-01" in err
    future = tmp_path / "f.prom"
    future.write_text('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1"} 50 4102444800000\n')
    code, _, err = run_cli("import", "prometheus-text", str(future), "--out", str(tmp_path / "s"))
    assert code == 2 and "is more than a day after now" in err
    assert not (tmp_path / "s" / "samples").exists()


def test_stored_rows_before_2000_never_stretch_the_window(tmp_path):
    """Rows written before this check (an older version) with epoch 5 and 15: rejected, counted, no window of decades."""
    root = tmp_path / "s"
    write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    stray = [{"host": "n1", "uuid": "GPU-a", "name": H100, "ts": datetime.fromtimestamp(t, tz=timezone.utc), "interval_s": 10.0,
              "util_gpu_pct": 50.0} for t in (5, 15)]
    write_samples(str(root), stray)
    f = report(str(root))
    assert fleet(f) == (1.0, 3.0, 1.5) and f["window"]["hours"] == pytest.approx(1.0)
    (rej,) = f["data_quality"]["rejected_samples"]
    assert rej["rows"] == 2 and "before 2000-01-01" in rej["why"]


def test_token_times_before_2000_are_rejected_records(tmp_path):
    from gpu_audit.analyze.tokens import load_tokens

    t = tmp_path / "t.jsonl"
    t.write_text('{"timestamp": 5, "model": "m", "host": "n1", "prompt_tokens": 1, "completion_tokens": 1}\n'
                 '{"timestamp": "2026-11-28T00:00:00Z", "model": "m", "host": "n1", "prompt_tokens": 1, "completion_tokens": 1}\n')
    log = load_tokens([str(t)])
    assert log.table.num_rows == 1 and log.bad == 1 and "before 2000-01-01" in log.bad_examples[0]


# -- token records counted once ------------------------------------------------------------------------

def token_log(path: Path, n: int = 100, ids: bool = True, key: str = "id") -> str:
    path.write_text("".join(json.dumps({**({key: f"chatcmpl-{i}"} if ids else {}), "object": "chat.completion",
                                        "created": int(DAY.timestamp()) + 600 + 30 * i, "model": "llama-3.1-8b", "host": "n1",
                                        "usage": {"prompt_tokens": 100, "completion_tokens": 10}}) + "\n" for i in range(n)))
    return str(path)


@pytest.mark.parametrize("how", ["path-twice", "copy", "same-ids-other-bytes"])
def test_token_records_count_once(tmp_path, how):
    """100 requests of 10 output tokens on one H100 hour ($3.00): $3,000 per 1M output tokens, whatever the repeats."""
    root = tmp_path / "s"
    write_samples(str(root), series("n1", "GPU-a", H100, 60, 60, [50.0] * 60))
    a = token_log(tmp_path / "t.jsonl")
    if how == "path-twice":
        b = a
    elif how == "copy":
        b = shutil.copy(a, tmp_path / "copy.jsonl")
    else:
        b = token_log(tmp_path / "other.jsonl", key="request_id")
        Path(b).write_text(Path(b).read_text().replace('"object"', '"note": "x", "object"'))
    f = report(str(root), tokens=[a, str(b)])
    (m,) = f["models"]
    assert m["completion_tokens"] == 1000 and m["cost_per_1m_output_tokens"] == pytest.approx(3000.0)
    q = f["data_quality"]
    if how == "same-ids-other-bytes":
        assert q["duplicate_token_requests"] == 100
    else:
        assert len(q["token_files_read_once"]) == 1 and "read once" in q["token_files_read_once"][0]


@pytest.mark.parametrize("mixed", [False, True])
def test_many_files_are_read_by_name_only_where_their_schemas_differ(tmp_path, monkeypatch, mixed):
    """Above 64 files a store whose files all share one schema is read without binding each file's
    schema by name (about 70 KB of memory a file); where one file differs (an older version without
    a column) it is read by name. Either way the figures are those of reading every file by name."""
    from gpu_audit.store import query

    root = tmp_path / "s"
    for k in range(70):
        write_samples(str(root), series("n1", "GPU-a", H100, k * 600, 60, [50.0] * 10, power_w=300.0))
    if mixed:  # one file as an older version wrote it: no power_w
        f = sorted((root / "samples" / "host=n1" / "date=2026-11-28").glob("*.parquet"))[3]
        pq.write_table(pq.read_table(f).drop_columns(["power_w"]), f)
    files = sorted(str(p) for p in root.glob("samples/*/*/*.parquet"))
    con = __import__("duckdb").connect()
    assert query.needs_union(con, files) is mixed
    fast = report(str(root))
    monkeypatch.setattr(query, "UNIFORM_CHECK_ABOVE", 10**9)  # every file bound by name, as before
    slow = report(str(root))
    assert fleet(fast) == fleet(slow) == (11.666666667, 35.0, 17.5)  # 700 one-minute samples at 50 % of a $3.00/h H100
    assert fast["fleet"]["energy_kwh"] == pytest.approx(slow["fleet"]["energy_kwh"])


def test_two_writers_that_draw_the_same_name_lose_no_row(tmp_path, monkeypatch):
    """Two writers of one host in one process, in one second, with the same random token (1 in 65,536
    per pair before this test: 70 flushes in a second lost a file about one run in 30): the second
    file takes the next sequence number instead of replacing the first."""
    from gpu_audit.store import writer as w

    monkeypatch.setattr(w.secrets, "token_hex", lambda n: "ab" * n)
    root = tmp_path / "s"
    for k in range(3):
        write_samples(str(root), series("n1", "GPU-a", H100, k * 3600, 60, [50.0] * 60))
    assert len(list((root / "samples" / "host=n1" / "date=2026-11-28").glob("*.parquet"))) == 3
    assert fleet(report(str(root))) == (3.0, 9.0, 4.5)


def test_a_writer_that_finds_no_free_name_keeps_its_rows(tmp_path, monkeypatch):
    """Every name the writer draws is taken (a store of another writer with its run id): the flush
    fails in one line and keeps the rows; the next flush stores each of them once."""
    root = tmp_path / "s"
    w = writer.StoreWriter(str(root), "n1")
    for r in series("n1", "GPU-a", H100, 0, 60, [50.0] * 60):
        w.add("samples", {"source": "virtual", **r})

    def taken(table, path, exclusive=False):
        raise writer.NameTaken(path)

    monkeypatch.setattr(writer, "write_parquet_atomic", taken)
    with pytest.raises(StoreError, match="1,000 names in a row are taken"):
        w.flush()
    assert w.rows_written["samples"] == 0 and not list(root.rglob("*.parquet"))
    monkeypatch.undo()
    w.flush()
    assert read_table(root, "samples").num_rows == 60
    assert fleet(report(str(root))) == (1.0, 3.0, 1.5)


@pytest.mark.parametrize("op", ["link", "unlink", "fsync"])
def test_a_flush_that_fails_at_any_step_writes_each_row_once(tmp_path, monkeypatch, op):
    """The writer's new files (linked, never replacing): a full disk at each call of ``op`` in turn,
    then the same writer flushes again; every row is stored exactly once, or the report says how
    many instants were read twice and counts them once."""
    for n in range(1, 6):
        root = tmp_path / f"s{op}{n}"
        w = writer.StoreWriter(str(root), "n1")
        for r in series("n1", "GPU-a", H100, 0, 60, [50.0] * 60):
            w.add("samples", {"source": "virtual", **r})
        faulty = inject(monkeypatch, op, n)
        try:
            w.flush()
        except StoreError:
            pass
        monkeypatch.undo()
        w.flush()  # the retry
        t = read_table(root, "samples")
        if faulty.fired and op == "fsync" and t.num_rows == 120:  # the file was in place when its folder's fsync failed
            assert report(str(root))["data_quality"]["duplicate_or_overlapping_samples"][0]["duplicate_rows"] == 60
        else:
            assert t.num_rows == 60, (op, n)
        assert fleet(report(str(root))) == (1.0, 3.0, 1.5)
