"""Energy and carbon (DESIGN.md "Energy", docs/metrics.md), hand-computed."""

from __future__ import annotations

import json

import pytest

from conftest import ASSETS, SCENARIOS, read_table, shared_or_skip, fixed_start
from gpu_audit.analyze.findings import ReportRequest, build
from storefix import T0, series, write_samples

H100 = "NVIDIA H100 80GB HBM3"


def pricing(tmp_path, energy: str = "") -> str:
    p = tmp_path / "p.toml"
    p.write_text('[gpu]\n"H100" = 3.0\n' + energy)
    return str(p)


SCRAPE = '''DCGM_FI_DEV_POWER_USAGE{{gpu="0",UUID="GPU-e",modelName="NVIDIA H100 80GB HBM3",Hostname="h"}} 50 {ms}
DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="GPU-e",modelName="NVIDIA H100 80GB HBM3",Hostname="h"}} 40 {ms}
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="GPU-e",modelName="NVIDIA H100 80GB HBM3",Hostname="h"}} {mj} {ms}
'''


def test_energy_from_the_counter_with_a_reset_and_from_power(run_cli, tmp_path):
    """Three scrapes 30 s apart at 50 W. The first has no previous reading: power x dt = 1,500 J. The
    second's counter rose 1,500,000 mJ: 1,500 J. The third's fell (the driver reloaded): never a
    negative delta, power x dt = 1,500 J. 4,500 J = 0.00125 kWh."""
    store = str(tmp_path / "s")
    f = tmp_path / "three.prom"  # three scrapes with their own timestamps (ms): one series
    f.write_text("".join(SCRAPE.format(mj=mj, ms=int((T0 + 30 * k) * 1000)) for k, mj in enumerate((1_000_000, 2_500_000, 100))))
    code, _, err = run_cli("import", "prometheus-text", str(f), "--out", store, "--interval", "30s")
    assert code == 0, err
    rows = sorted(read_table(store, "samples").to_pylist(), key=lambda r: r["ts"])
    assert [r["energy_j"] for r in rows] == [None, 1500.0, None] and [r["energy_mj"] for r in rows] == [1_000_000, 2_500_000, 100]
    f = build(ReportRequest([store], pricing(tmp_path)))
    (d,) = f["devices"]
    assert d["energy_kwh"] == pytest.approx(4500 / 3.6e6) and d["energy_source"] == "counter and power x dt"
    assert f["fleet"]["energy_kwh"] == pytest.approx(4500 / 3.6e6)
    assert f["fleet"]["energy_usd"] is None and f["fleet"]["kgco2e"] is None and d["energy_usd"] is None  # no [energy]: kWh only


def test_power_times_dt_and_idle_energy(tmp_path):
    """One hour at 10-minute samples: 3 at 300 W busy, 3 at 60 W idle. 300 x 1800 + 60 x 1800 J =
    0.18 kWh, of which 0.03 while idle."""
    store = str(tmp_path / "s")
    rows = series("h", "GPU-a", H100, 0, 600, [80, 80, 80, 0, 0, 0])
    for r, w in zip(rows, (300, 300, 300, 60, 60, 60)):
        r["power_w"] = float(w)
    write_samples(store, rows)
    f = build(ReportRequest([store], pricing(tmp_path)))
    (d,) = f["devices"]
    assert d["energy_kwh"] == pytest.approx(0.18) and d["idle_energy_kwh"] == pytest.approx(0.03) and d["energy_source"] == "power x dt"
    assert f["fleet"]["idle_energy_share_pct"] == pytest.approx(100 * 0.03 / 0.18)


def test_a_mig_instance_gets_its_share_of_the_gpus_energy(tmp_path):
    """The GPU in MIG mode draws 350 W for an hour: 0.35 kWh. Its 3g instance takes 3/7 (0.15 kWh), the
    GPU keeps 4/7 (0.2 kWh); the fleet counts the GPU's 0.35 kWh once."""
    store = str(tmp_path / "s")
    parent = series("h", "GPU-p", H100, 0, 600, [None] * 6, mig_mode=True, power_w=350.0)
    kid = series("h", "GPU-p/GI-1", H100, 0, 600, [None] * 6, parent_uuid="GPU-p", mig_profile="3g.40gb", sm_active_pct=50.0)
    write_samples(store, parent + kid)
    f = build(ReportRequest([store], pricing(tmp_path)))
    by = {d["uuid"]: d for d in f["devices"]}
    assert by["GPU-p/GI-1"]["energy_kwh"] == pytest.approx(0.35 * 3 / 7) and by["GPU-p"]["energy_kwh"] == pytest.approx(0.35 * 4 / 7)
    assert f["fleet"]["energy_kwh"] == pytest.approx(0.35)


def test_wh_per_1m_tokens_for_two_models_on_one_host(tmp_path):
    """One GPU at 200 W for an hour (0.2 kWh) serves m-a (3,000 output tokens) and m-b (1,000) with no
    gpu_uuid: split by output tokens, 0.15 and 0.05 kWh; 150 Wh / 3,000 tokens = 50,000,000 Wh per 1M.
    The grid at 400 g/kWh and PUE 1.5: m-a 0.15 x 1.5 x 400 = 90 g for 3,000 tokens."""
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 6, power_w=200.0))
    log = tmp_path / "t.jsonl"
    log.write_text("".join(json.dumps({"timestamp": T0 + 60 * k, "model": m, "host": "h", "prompt_tokens": 1, "completion_tokens": c}) + "\n"
                           for k, (m, c) in enumerate((("m-a", 3000), ("m-b", 1000)))))
    f = build(ReportRequest([store], pricing(tmp_path, "[energy]\npue = 1.5\ngrid_gco2_per_kwh = 400\n"), [str(log)]))
    m = {x["model"]: x for x in f["models"]}
    assert m["m-a"]["energy_kwh"] == pytest.approx(0.15) and m["m-b"]["energy_kwh"] == pytest.approx(0.05)
    assert m["m-a"]["wh_per_1m_output_tokens"] == pytest.approx(150 / 3000 * 1e6)
    assert m["m-a"]["gco2e_per_1m_output_tokens"] == pytest.approx(90 / 3000 * 1e6)
    assert m["m-a"]["output_tokens_per_kwh"] == pytest.approx(3000 / 0.15)


def test_energy_cost_and_carbon_from_host_overrides(tmp_path):
    """0.2 kWh on each host. Default: $0.10/kWh, PUE 1.5, 400 g: $0.03 and 0.12 kg. eu-*: $0.30, 100 g:
    $0.09 and 0.03 kg. Energy $ is beside spend: spend stays $6."""
    store = str(tmp_path / "s")
    write_samples(store, series("us-1", "GPU-a", H100, 0, 600, [50] * 6, power_w=200.0)
                  + series("eu-1", "GPU-b", H100, 0, 600, [50] * 6, power_w=200.0))
    energy = '[energy]\nusd_per_kwh = 0.10\npue = 1.5\ngrid_gco2_per_kwh = 400\n[energy.host."eu-*"]\nusd_per_kwh = 0.30\ngrid_gco2_per_kwh = 100\n'
    f = build(ReportRequest([store], pricing(tmp_path, energy)))
    by = {d["host"]: d for d in f["devices"]}
    assert by["us-1"]["energy_usd"] == pytest.approx(0.03) and by["us-1"]["kgco2e"] == pytest.approx(0.12)
    assert by["eu-1"]["energy_usd"] == pytest.approx(0.09) and by["eu-1"]["kgco2e"] == pytest.approx(0.03)
    assert f["fleet"]["energy_usd"] == pytest.approx(0.12) and f["fleet"]["spend_usd"] == pytest.approx(6.0)


def test_a_bad_energy_section_is_one_line(run_cli, tmp_path):
    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", H100, 0, 600, [50] * 6))
    code, _, err = run_cli("report", store, "--pricing", pricing(tmp_path, "[energy]\npue = 0.5\n"))
    assert code == 2 and "pue" in err and "Traceback" not in err


def test_the_virtual_counter_agrees_with_power(tmp_path):
    from gpu_audit.collect.run import collect

    store = str(tmp_path / "s")
    collect(store, interval_s=60, duration_s=3600, simulate=fixed_start("h100-inference.toml", tmp_path), handle_signals=False)
    rows = read_table(store, "samples").to_pylist()
    counted = sum(r["energy_j"] for r in rows if r["energy_j"] is not None)
    powered = sum(r["power_w"] * r["interval_s"] for r in rows if r["energy_j"] is not None)
    assert counted == pytest.approx(powered, rel=0.02)
    f = build(ReportRequest([store]))
    assert all(d["energy_source"] == "counter and power x dt" or d["energy_source"] == "counter" for d in f["devices"])


def test_idle_cards_add_the_energy_they_would_save(tmp_path):
    """An idle L40S at 40 W for 10 of 24 h: 0.4 kWh in the window, x 730/24 a month."""
    store = str(tmp_path / "s")
    rows = series("h", "GPU-i", "NVIDIA L40S", 0, 3600, [0] * 10 + [50] * 14)
    for r in rows:
        r["power_w"] = 40.0 if r["util_gpu_pct"] == 0 else 200.0
    write_samples(store, rows)
    f = build(ReportRequest([store], pricing(tmp_path, "[energy]\ngrid_gco2_per_kwh = 500\n")))
    (r,) = [x for x in f["recommendations"] if x["kind"] == "idle"]
    assert r["evidence"]["energy_saved_kwh_month"] == pytest.approx(0.4 * 730 / 24)
    assert r["evidence"]["kgco2e_saved_month"] == pytest.approx(0.4 * 730 / 24 * 0.5)


def test_the_real_dcgm_scrapes_import_their_energy_counter(run_cli, tmp_path):
    for name, mj in (("kops_nvidia-l4_dcgm.prom", 4742776), ("nvidia_docs_a100_mig_1g.5gb_dcgm.prom", 319159391)):
        real = shared_or_skip(f"data/real/dcgm_exporter/{name}")
        store = str(tmp_path / name)
        assert run_cli("import", "prometheus-text", str(real), "--out", store, "--at", "2026-11-28T00:00:00Z", "--interval", "30s")[0] == 0
        assert mj in [r["energy_mj"] for r in read_table(store, "samples").to_pylist()]
