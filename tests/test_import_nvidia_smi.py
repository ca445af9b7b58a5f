"""`gpu-audit import nvidia-smi` on fixtures for every quirk, and on the real logs in ../shared."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import ASSETS, read_table, shared_or_skip

QUIRKS = str(ASSETS / "nvsmi_quirks.csv")


def rows(store, uuid=None):
    t = read_table(store, "samples").to_pylist()
    return [r for r in t if uuid is None or r["uuid"] == uuid]


def test_every_quirk(run_cli, tmp_path):
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "nvidia-smi", QUIRKS, "--host", "n1", "--tz", "Europe/Berlin", "--out", store)
    assert code == 0, err
    assert "imported 9 rows (2 GPU series)" in out and "times read as Europe/Berlin" in out
    assert f"2 bad line(s) skipped: {QUIRKS}:11: 1 fields, expected 10; {QUIRKS}:12: utilization.gpu: cannot read 'fifty %'" in out
    a = rows(store, "GPU-a")
    # Berlin is UTC+1 in November: 01:00 local is 00:00 UTC.
    assert a[0]["ts"].isoformat() == "2026-11-28T00:00:00+00:00"
    assert [r["util_gpu_pct"] for r in a] == [10, 20, 30, 40, 50, 60]
    assert a[0]["mem_used_bytes"] == 1024 * 2**20 and a[0]["mem_total_bytes"] == 23034 * 2**20
    assert a[0]["power_w"] == pytest.approx(30.5) and a[0]["temp_c"] == 40 and a[0]["throttle_reasons"] == 1
    assert a[-1]["throttle_reasons"] == 4
    # Median gap 1 s; the 7 s gap (> 3 intervals) is billed one interval.
    assert [r["interval_s"] for r in a] == pytest.approx([1, 1, 1, 1, 1, 1])
    assert all(r["source"] == "nvidia-smi" and r["host"] == "n1" and r["name"] == "NVIDIA L4" for r in a)
    b = rows(store, "GPU-b")
    assert b[0]["util_gpu_pct"] is None and b[0]["util_mem_pct"] is None and b[0]["power_w"] is None and b[0]["temp_c"] is None
    assert [r["util_gpu_pct"] for r in b] == [None, 50, 50]


def test_strict_writes_nothing(run_cli, tmp_path):
    store = tmp_path / "s"
    code, _, err = run_cli("import", "nvidia-smi", QUIRKS, "--host", "n1", "--tz", "UTC", "--out", str(store), "--strict")
    assert code == 2 and err.splitlines()[0] == f"Error: {QUIRKS}:11: 1 fields, expected 10"
    assert not list(store.glob("samples/*/*/*.parquet"))


def test_noheader_nounits_with_fields(run_cli, tmp_path):
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "nvidia-smi", str(ASSETS / "nvsmi_noheader_nounits.csv"), "--host", "n2", "--tz", "UTC",
                             "--fields", "timestamp,pci.bus_id,index,utilization.gpu,memory.used", "--out", store)
    assert code == 0, err
    r = rows(store)
    assert [x["uuid"] for x in r] == ["nvidia-smi:pci:00000000:18:00.0"] * 3
    assert [x["interval_s"] for x in r] == [5, 5, 5] and [x["util_gpu_pct"] for x in r] == [45, 55, 65]
    assert r[0]["mem_used_bytes"] == 1024 * 2**20


def test_noheader_without_fields(run_cli, tmp_path):
    path = str(ASSETS / "nvsmi_noheader_nounits.csv")
    code, _, err = run_cli("import", "nvidia-smi", path, "--host", "n2", "--out", str(tmp_path / "s"))
    assert code == 2 and err.splitlines()[0] == f"Error: {path}:1: no header line, and no --fields"


def test_fields_without_utilization(run_cli, tmp_path):
    code, _, err = run_cli("import", "nvidia-smi", QUIRKS, "--host", "x", "--fields", "timestamp,uuid", "--out", str(tmp_path / "s"))
    assert code == 2 and err.splitlines()[0] == "Error: --fields: the log has no utilization.gpu field"


def test_unknown_zone_and_missing_file(run_cli, tmp_path):
    code, _, err = run_cli("import", "nvidia-smi", QUIRKS, "--host", "x", "--tz", "Mars/Olympus", "--out", str(tmp_path))
    assert code == 2 and err.startswith("Error: --tz: unknown time zone 'Mars/Olympus'")
    code, _, err = run_cli("import", "nvidia-smi", str(tmp_path / "nope.csv"), "--host", "x", "--out", str(tmp_path))
    assert code == 2 and err.startswith("Error: file not found:")


def test_imported_samples_are_analyzed(run_cli, tmp_path):
    store = str(tmp_path / "s")
    run_cli("import", "nvidia-smi", QUIRKS, "--host", "n1", "--tz", "UTC", "--out", store)
    from gpu_audit.analyze.findings import ReportRequest, build

    f = build(ReportRequest([store], str(ASSETS / "pricing.toml"), [], None, None))
    a = next(d for d in f["devices"] if d["uuid"] == "GPU-a")
    assert a["gpu_hours"] == pytest.approx(6 / 3600) and a["mean_util_pct"] == pytest.approx(35)
    assert a["spend_usd"] == pytest.approx(6 / 3600 * 1.0)


def test_large_file_streams(run_cli, tmp_path):
    """200,000 lines: imported in chunks (the writer flushes every 100,000 rows)."""
    p = tmp_path / "big.csv"
    with open(p, "w") as f:
        f.write("timestamp, index, utilization.gpu [%]\n")
        for k in range(200_000):  # two GPUs, one line each per second: 100,000 s over two days
            t = datetime(2026, 11, 28, tzinfo=timezone.utc) + timedelta(seconds=k // 2)
            f.write(f"{t:%Y/%m/%d %H:%M:%S}.000, {k % 2}, {k % 100} %\n")
    store = tmp_path / "s"
    code, out, err = run_cli("import", "nvidia-smi", str(p), "--host", "big", "--tz", "UTC", "--out", str(store))
    assert code == 0, err
    assert "imported 200,000 rows (2 GPU series)" in out
    assert len(list(store.glob("samples/*/*/*.parquet"))) >= 2


# -- the real logs in ../shared (skipped where that folder is absent) ------------------------------

def test_real_rtx4090_log(run_cli, tmp_path):
    path = shared_or_skip("data/real/nvidia_smi_csv/vlmopt_rtx4090_gpu_log.csv")
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "nvidia-smi", str(path), "--host", "rtx", "--tz", "UTC", "--out", store)
    assert code == 0, err
    r = rows(store)
    assert len(r) == 2619 and r[0]["name"] == "NVIDIA GeForce RTX 4090"
    assert r[0]["util_gpu_pct"] == 1 and r[0]["mem_used_bytes"] == 1129 * 2**20 and r[0]["power_w"] == pytest.approx(33.09)
    assert sorted({x["interval_s"] for x in r})[0] > 0.9


@pytest.mark.parametrize("name", ["nvgpuexp_querygpu_load__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.csv",
                                  "nvgpuexp_querygpu_load__linux-x86_64__nvidia-h100-mig__590.48.01.csv"])
def test_real_h100_logs_with_units_in_values(run_cli, tmp_path, name):
    path = shared_or_skip(f"data/real/nvidia_smi_csv/{name}")
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "nvidia-smi", str(path), "--host", "h", "--tz", "UTC", "--interval", "1s", "--out", store)
    assert code == 0, err
    (r,) = rows(store)
    assert r["name"] == "NVIDIA H100 80GB HBM3" and r["interval_s"] == 1
    assert r["mem_total_bytes"] > 80 * 10**9 and r["throttle_reasons"] == 0
    if "mig" in name:  # in MIG mode nvidia-smi prints [N/A] for utilization: null, never 0
        assert r["mig_mode"] is True and r["util_gpu_pct"] is None
        assert r["power_w"] == pytest.approx(433.78) and r["mem_used_bytes"] == 11125 * 2**20
    else:
        assert r["mig_mode"] is False and r["util_gpu_pct"] == 100
        assert r["power_w"] == pytest.approx(631.95) and r["temp_c"] == 59


def test_real_log_without_timestamp_is_refused(run_cli, tmp_path):
    path = shared_or_skip("data/real/nvidia_smi_csv/netdata_tesla-p100_nounits.csv")
    code, _, err = run_cli("import", "nvidia-smi", str(path), "--host", "p", "--out", str(tmp_path / "s"))
    assert code == 2 and err.splitlines()[0] == f"Error: {path}:1: the log has no timestamp field"
