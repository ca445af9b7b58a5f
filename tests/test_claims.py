"""Savings classes, billing and confidence (DESIGN.md "Savings classes", "Billing", "Confidence"),
hand-computed. An idle GPU at $2/h, idle 10 of 24 hours: $20 in the window, $20 x 730 / 24 =
$608.33 a month."""

from __future__ import annotations

import pytest

from findfix import device, findings, served_model
from gpu_audit.recommend import recommend
from gpu_audit.recommend.base import RecommendSettings

S = RecommendSettings()
L40S = "NVIDIA L40S"
IDLE = [0] * 10 + [50] * 14
BUSY = [80] * 24
MONTH = 20 * 730 / 24  # 608.33


def dev(host, uuid, utils, billing=None, **kw):
    d, rows = device(host, uuid, L40S, 2.0, utils, 0, covered_hours=24.0, **kw)
    d["billing"] = billing or {"unit": "gpu", "commitment": "on-demand"}
    return d, rows


NODE = {"unit": "node", "commitment": "on-demand"}
OWNED = {"unit": "gpu", "commitment": "owned"}


def test_one_idle_gpu_of_a_node_billed_per_node_is_capacity_not_cash():
    f = findings([dev("dgx", "GPU-0", IDLE, NODE)] + [dev("dgx", f"GPU-{i}", BUSY, NODE) for i in range(1, 8)], 24)
    out = recommend(f, S)
    (r,) = out["recommendations"]
    assert r["savings_class"] == "capacity" and r["monthly_savings_usd"] == pytest.approx(MONTH)
    assert "billed per node: this only saves if its other 7 GPU(s) are freed too" in r["action"]
    assert out["potential_monthly_savings_usd"] == 0
    assert out["capacity_monthly_usd"] == pytest.approx(MONTH)
    assert out["capacity_gpus_freed"] == pytest.approx(MONTH / (2.0 * 730))  # 0.417 GPU-equivalents


def test_every_gpu_of_a_node_idle_is_cash():
    f = findings([dev("dgx", f"GPU-{i}", IDLE, NODE) for i in range(8)], 24)
    out = recommend(f, S)
    assert [r["savings_class"] for r in out["recommendations"]] == ["cash"] * 8
    assert out["potential_monthly_savings_usd"] == pytest.approx(8 * MONTH)
    assert out["capacity_monthly_usd"] == 0
    assert "release the node" in out["recommendations"][0]["action"]


def test_an_owned_gpu_is_capacity():
    out = recommend(findings([dev("lab", "GPU-0", IDLE, OWNED)], 24), S)
    (r,) = out["recommendations"]
    assert r["savings_class"] == "capacity" and "owned" in r["action"]
    assert out["potential_monthly_savings_usd"] == 0 and out["capacity_monthly_usd"] == pytest.approx(MONTH)


def test_an_on_demand_idle_gpu_is_cash():
    out = recommend(findings([dev("cloud", "GPU-0", IDLE)], 24), S)
    (r,) = out["recommendations"]
    assert r["savings_class"] == "cash" and out["potential_monthly_savings_usd"] == pytest.approx(MONTH)
    assert out["savings_by_device"] == [{"host": "cloud", "uuid": "GPU-0", "monthly_savings_usd": pytest.approx(MONTH)}]


def test_an_idle_mig_slice_is_capacity_and_told_to_resize_the_instance():
    d = dev("h", "MIG-1", IDLE, parent_uuid="GPU-parent", mig_profile="1g.18gb", share=1 / 7)
    out = recommend(findings([d], 24), S)
    (r,) = out["recommendations"]
    assert r["savings_class"] == "capacity" and "destroy or resize the instance" in r["action"]
    assert "Release the GPU" not in r["action"]
    assert out["potential_monthly_savings_usd"] == 0


def test_max_tokens_is_behaviour_and_in_no_total():
    d = dev("inf", "GPU-h", [20] * 24)
    tail = served_model("tail", ["inf"], completion_p50=100.0, completion_p99=1000.0, completion_tokens_beyond_p95=200_000.0)
    out = recommend(findings([d], 24, [tail]), S)
    (r,) = [r for r in out["recommendations"] if r["targets"][0].get("lever") == "max_tokens"]
    assert r["savings_class"] == "behaviour" and r["monthly_savings_usd"] == 0.0  # the net: GPUs billed per hour
    assert r["evidence"]["gpu_time_freed_monthly_usd"] == pytest.approx(100 * 0.1 * 730 / 24)
    assert out["potential_monthly_savings_usd"] == 0 and out["capacity_monthly_usd"] == 0
    assert out["behaviour_recommendations"] == 1


def test_totals_are_the_sums_per_class_each_device_once():
    """Cash: two on-demand GPUs idle hours 0-9 and at 30 % otherwise. Capacity: an owned one. The ledger
    (most valuable card first): the consolidation of the three onto two frees one GPU whole, an
    on-demand one first (a: its month, $MONTH x 24/10); a's idle card then adds nothing (a is
    claimed), b's and c's idle cards add their 10 idle hours of 24. Each freed share once."""
    a = dev("cloud", "GPU-a", [0] * 10 + [30] * 14)
    b = dev("cloud", "GPU-b", [0] * 10 + [30] * 14)
    c = dev("lab", "GPU-c", IDLE, OWNED)
    out = recommend(findings([a, b, c], 24), S)
    whole = MONTH * 24 / 10  # one GPU's month: MONTH is its 10 idle hours of 24
    by = {(r["kind"], tuple(t["uuid"] for t in r["targets"])): r for r in out["recommendations"]}
    cons = by[("consolidation", ("GPU-a", "GPU-b", "GPU-c"))]
    assert cons["frees"] == [{"host": "cloud", "uuid": "GPU-a", "share": 1.0, "cash_share": 1.0}]
    assert cons["counted_monthly_usd"] == pytest.approx(whole)
    assert by[("idle", ("GPU-a",))]["counted_monthly_usd"] == 0.0
    assert by[("idle", ("GPU-b",))]["counted_monthly_usd"] == pytest.approx(MONTH)
    assert out["potential_monthly_savings_usd"] == pytest.approx(whole + MONTH)
    assert {(s["host"], s["uuid"]) for s in out["savings_by_device"]} == {("cloud", "GPU-a"), ("cloud", "GPU-b")}
    assert out["capacity_monthly_usd"] == pytest.approx(MONTH)


def test_one_day_is_never_high_confidence_and_the_card_says_why():
    out = recommend(findings([dev("cloud", "GPU-0", IDLE)], 24), S)
    (r,) = out["recommendations"]
    assert r["confidence"] == "medium"
    assert r["evidence"]["confidence_why"].startswith("1.0 days observed at 100% coverage")


def test_a_week_at_full_coverage_is_high():
    d = dev("cloud", "GPU-0", ([0] * 10 + [50] * 14) * 7)
    d[0]["covered_hours"] = 168.0
    (r,) = recommend(findings([d], 168), S)["recommendations"]
    assert r["confidence"] == "high"


def test_consolidation_on_node_billing_says_whether_it_empties_a_node():
    """Two 1-GPU nodes billed per node, each half idle: consolidating frees one GPU, which empties a node."""
    a = dev("n1", "GPU-a", [55] * 12 + [5] * 12, NODE, total_gib=48)
    b = dev("n2", "GPU-b", [5] * 12 + [55] * 12, NODE, total_gib=48)
    for d, _ in (a, b):
        d["peak_memory_bytes"] = 9.6 * 2**30
    out = recommend(findings([a, b], 24), RecommendSettings(gpu_prices={}))
    (r,) = [r for r in out["recommendations"] if r["kind"] == "consolidation"]
    assert r["savings_class"] == "cash" and r["evidence"]["node_plan"].startswith("empties whole node(s) n1")


def test_a_node_is_cash_only_in_the_hours_all_its_gpus_idle_together():
    """Two GPUs of a node billed per node: A idles hours 0-9, B hours 5-14. Both have release
    recommendations, but the node is empty only in hours 5-9: half of each GPU's 10 idle hours. Each
    card is cash for half its saving ($304.17) and capacity for the other half."""
    a = dev("n", "GPU-a", [0] * 10 + [50] * 14, NODE)
    b = dev("n", "GPU-b", [50] * 5 + [0] * 10 + [50] * 9, NODE)
    out = recommend(findings([a, b], 24), S)
    idle = [r for r in out["recommendations"] if r["kind"] == "idle"]
    assert len(idle) == 2 and all(r["savings_class"] == "cash" for r in idle)
    assert all(r["monthly_savings_usd"] == pytest.approx(MONTH / 2) for r in idle)
    assert all(r["evidence"]["capacity_part_monthly_usd"] == pytest.approx(MONTH / 2) for r in idle)
    assert out["potential_monthly_savings_usd"] == pytest.approx(MONTH)
