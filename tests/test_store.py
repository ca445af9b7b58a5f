import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpu_audit.store.layout import decode_host, encode_host
from gpu_audit.store.schema import SAMPLES, SCHEMA_VERSION
from gpu_audit.store.writer import StoreError, StoreWriter, write_parquet_atomic


@pytest.mark.parametrize("host", ["node-7", "a.b.c", "x/y", "..", ".", "<img src=x onerror=alert(1)>", "höst", "a b%c"])
def test_host_folder_names_round_trip_and_are_safe(host):
    enc = encode_host(host)
    assert "/" not in enc and enc not in (".", "..")
    assert decode_host(enc) == host


def test_atomic_write_leaves_no_temp_file(tmp_path):
    t = pa.table({"ts": pa.array([1], pa.int64())})
    write_parquet_atomic(t, str(tmp_path / "d" / "f.parquet"))
    assert os.listdir(tmp_path / "d") == ["f.parquet"]


def test_failed_write_keeps_rows_buffered(tmp_path):
    from datetime import datetime, timezone

    blocker = tmp_path / "file"
    blocker.write_text("x")
    w = StoreWriter(str(blocker), "h")
    w.add("samples", {"ts": datetime(2026, 1, 1, tzinfo=timezone.utc), "host": "h", "uuid": "u"})
    with pytest.raises(StoreError, match="cannot write"):
        w.flush()
    assert w.pending("samples") == 1


def test_files_carry_the_schema_version(tmp_path):
    from datetime import datetime, timezone

    w = StoreWriter(str(tmp_path), "h")
    w.add("samples", {"ts": datetime(2026, 1, 1, tzinfo=timezone.utc), "host": "h", "uuid": "u", "util_gpu_pct": 5})
    (path,) = w.flush()
    md = pq.read_schema(path).metadata
    assert md[b"gpu_audit.schema_version"] == str(SCHEMA_VERSION).encode()
    assert pq.read_schema(path).remove_metadata() == SAMPLES
