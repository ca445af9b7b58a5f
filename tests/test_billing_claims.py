"""Claims rest on declared or assumed billing (issue 19; DESIGN.md "Billing, declared or assumed",
"Monthly"), computed by hand.

The fleet: host n1 with two H100 SXM, 4 h of 60 s samples; GPU-a idle (0 %), GPU-b busy (90 %). An
idle card for GPU-a frees one GPU for the whole window: price x 730 a month.
"""

from __future__ import annotations

import pytest

from storefix import series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build

H100 = "NVIDIA H100 80GB HBM3"


def fleet_store(root, host="n1", uuids=("GPU-a", "GPU-b")) -> str:
    rows = []
    for uuid, u in zip(uuids, (0.0, 90.0)):
        rows += series(host, uuid, H100, 60, 60, [u] * 240)
    write_samples(str(root), rows)
    return str(root)


def pricing(tmp_path, text: str) -> str:
    p = tmp_path / "pricing.toml"
    p.write_text('currency = "USD"\n[gpu]\n"H100" = 3.00\n' + text)
    return str(p)


def idle_card(f):
    (r,) = [r for r in f["recommendations"] if r["kind"] == "idle"]
    return r


def test_without_a_pricing_file_an_8_gpu_instance_price_is_billed_per_node(tmp_path):
    """The catalog's H100 price is p5.48xlarge / 8: assumed per node. Freeing GPU-a alone empties no
    node: capacity ($12.29 x 730 = $8,971.70), no cash."""
    f = build(ReportRequest([fleet_store(tmp_path / "s")], None, [], None, None))
    (a,) = [d for d in f["devices"] if d["uuid"] == "GPU-a"]
    assert a["billing"]["unit"] == "node" and a["billing"]["declared"] is False and "8-GPU instance" in a["billing"]["source"]
    r = idle_card(f)
    assert r["savings_class"] == "capacity" and r["monthly_savings_usd"] == pytest.approx(12.29 * 730)
    assert r["billing"] == {"unit": "node", "commitment": "on-demand", "declared": False, "source": a["billing"]["source"]}
    assert f["fleet"]["potential_monthly_savings_usd"] == 0 and f["fleet"]["cash_assumed_billing_usd"] == 0


def test_a_pricing_file_price_without_billing_is_assumed_per_gpu_and_said(tmp_path, run_cli):
    """$3.00 from the pricing file, no [billing]: per GPU on demand, assumed: $2,190 cash, all of it on assumed billing."""
    store = fleet_store(tmp_path / "s")
    f = build(ReportRequest([store], pricing(tmp_path, ""), [], None, None))
    r = idle_card(f)
    assert r["savings_class"] == "cash" and r["monthly_savings_usd"] == pytest.approx(2190.0)
    assert r["billing"]["unit"] == "gpu" and r["billing"]["declared"] is False
    assert f["fleet"]["potential_monthly_savings_usd"] == pytest.approx(2190.0)
    assert f["fleet"]["cash_assumed_billing_usd"] == pytest.approx(2190.0)
    code, out, _ = run_cli("report", store, "--pricing", pricing(tmp_path, ""))
    assert code == 0 and "of the cash, $2,190.00/month rests on assumed billing" in out and "[billing]" in out
    assert "gpu, on-demand, assumed" in out


def test_declared_billing_carries_the_cash(tmp_path):
    f = build(ReportRequest([fleet_store(tmp_path / "s")], pricing(tmp_path, '[billing]\nunit = "gpu"\n'), [], None, None))
    r = idle_card(f)
    assert r["savings_class"] == "cash" and r["billing"]["declared"] is True
    assert f["fleet"]["potential_monthly_savings_usd"] == pytest.approx(2190.0) and f["fleet"]["cash_assumed_billing_usd"] == 0


def test_billing_patterns_declare_only_the_hosts_they_match(tmp_path):
    """A [billing] with only a host pattern declares nothing for the other hosts (the demo's old 'pricing.toml [billing]')."""
    f = build(ReportRequest([fleet_store(tmp_path / "s")], pricing(tmp_path, '[billing.host."other-*"]\nunit = "node"\n'), [], None, None))
    (a,) = [d for d in f["devices"] if d["uuid"] == "GPU-a"]
    assert a["billing"]["declared"] is False and a["billing"]["source"].startswith("assumed")
    assert f["fleet"]["cash_assumed_billing_usd"] == pytest.approx(2190.0)


def test_owned_hosts_claim_no_cash_anywhere(tmp_path):
    f = build(ReportRequest([fleet_store(tmp_path / "s")], pricing(tmp_path, '[billing]\ncommitment = "owned"\n'), [], None, None))
    assert all(r["savings_class"] != "cash" for r in f["recommendations"])
    assert f["fleet"]["potential_monthly_savings_usd"] == 0


def test_a_30_s_snapshot_has_no_monthly_figure(tmp_path, run_cli):
    """One 30 s reading of one GPU at $3.00/h: $0.025 spent, and no month made of it."""
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 30, 30, [50.0]))
    f = build(ReportRequest([str(tmp_path / "s")], pricing(tmp_path, ""), [], None, None))
    assert f["fleet"]["spend_usd"] == pytest.approx(0.025)
    assert f["fleet"]["monthly_run_rate_usd"] is None and f["fleet"]["cash_share_of_run_rate_pct"] is None
    assert f["fleet"]["monthly_na"].startswith("n/a: 30s of evidence")
    assert f["recommendations"] == []
    code, out, _ = run_cli("report", str(tmp_path / "s"), "--pricing", pricing(tmp_path, ""))
    assert code == 0 and "monthly run-rate n/a: 30s of evidence" in out


def test_gpus_are_counted_per_host_and_uuid(tmp_path):
    """Six hosts whose masked UUIDs are all the same: six GPUs, not one."""
    for h in range(6):
        write_samples(str(tmp_path / "s"), series(f"n{h}", "GPU-masked", H100, 60, 60, [50.0] * 60))
    f = build(ReportRequest([str(tmp_path / "s")], pricing(tmp_path, ""), [], None, None))
    assert f["fleet"]["gpus"] == 6 and f["fleet"]["devices"] == 6
    assert f["fleet"]["spend_usd"] == pytest.approx(18.0)


def test_prices_says_how_each_catalog_price_was_quoted(run_cli):
    code, out, _ = run_cli("prices")
    assert code == 0 and "per 8-GPU" in out and "assumed: per GPU" in out
