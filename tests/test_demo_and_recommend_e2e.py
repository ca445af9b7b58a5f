"""End to end on a virtual fleet: collector -> store -> token logs -> findings -> recommendations."""

from __future__ import annotations

import json

import pytest

from gpu_audit.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(str(out), hours=12, interval_s=60, html=False, days=1)  # the rules on one simulated day


def by_kind(f, kind):
    return [r for r in f["recommendations"] if r["kind"] == kind]


def uuids(recs):
    return {t["uuid"] for r in recs for t in r["targets"] if "uuid" in t}


def test_expected_kinds_for_expected_devices(demo):
    f = demo.findings
    devices = {d["uuid"]: d for d in f["devices"]}
    # idle: the empty L40S, the notebook L40S (memory held), and the idle H200 MIG slice.
    idle = by_kind(f, "idle")
    variants = {devices[r["targets"][0]["uuid"]]["host"] + ":" + r["evidence"]["variant"] for r in idle}
    assert {"mixed-01:idle_empty", "mixed-01:idle_memory_held", "h200-01:idle_empty"} <= variants
    held = next(r for r in idle if r["evidence"]["variant"] == "idle_memory_held")
    assert held["evidence"]["top_process"]["name"] == "python3"
    # mig: the H200 in MIG mode has unused slices; the A100 in MIG mode has an unallocated slice.
    mig_hosts = {devices[r["targets"][0]["uuid"]]["host"] for r in by_kind(f, "mig")}
    assert {"h200-01", "mig-a100-01"} <= mig_hosts
    # batching: the two lightly used qwen replicas on the H100 host (in a 12 h window that misses the
    # afternoon peak, the llama replicas may qualify too).
    b = next(r for r in by_kind(f, "batching") if r["evidence"]["model"] == "qwen2.5-7b")
    assert b["evidence"]["gpus"] == 2 and b["evidence"]["replicas_freed"] == 1
    # quantization: serving GPUs under 70 %, never the busy training H200 (a recommendation may target
    # several GPUs: the check is per target, not per recommendation).
    q = by_kind(f, "quantization")
    assert q and all(devices[u]["mean_util_pct"] < 70 for u in uuids(q))
    # token economics: the long tail of llama-3.1-70b completions, long prompts of qwen2.5-7b.
    te = {(r["targets"][0]["model"], r["targets"][0].get("lever")) for r in by_kind(f, "token_economics")}
    assert ("llama-3.1-70b", "max_tokens") in te and ("qwen2.5-7b", "prefix_cache") in te
    assert len({r["kind"] for r in f["recommendations"]}) >= 5


def test_busy_devices_get_no_idle_sizing_mig_or_consolidation_claim(demo):
    f = demo.findings
    busy = {d["uuid"] for d in f["devices"] if (d["mean_util_pct"] or 0) >= 70}
    assert busy, "the fleet has a busy training GPU"
    claimed = uuids([r for r in f["recommendations"] if r["kind"] in ("idle", "right_size", "mig", "consolidation")])
    assert not busy & claimed


def test_no_claim_without_evidence(demo):
    f = demo.findings
    blind = {d["uuid"] for d in f["data_quality"]["devices_without_evidence"]}
    assert blind, "A100 MIG slices have no utilization reading"
    assert not blind & uuids(f["recommendations"])


def test_totals_count_each_device_once(demo):
    f = demo.findings
    total = f["fleet"]["potential_monthly_savings_usd"]
    assert total == pytest.approx(sum(x["monthly_savings_usd"] for x in f["savings_by_device"]))
    assert total < sum(r["monthly_savings_usd"] for r in f["recommendations"])  # overlaps are not summed
    assert total > 0


def test_demo_outputs_rerun_by_hand(demo, run_cli, tmp_path):
    out = tmp_path / "again.json"
    code, _, err = run_cli("report", demo.store, "--pricing", demo.pricing, "--tokens", demo.tokens, "--json", str(out))
    assert code == 0, err
    again = json.loads(out.read_text())
    assert again["fleet"]["spend_usd"] == pytest.approx(demo.findings["fleet"]["spend_usd"])
    assert len(again["models"]) == 5 and demo.requests > 100_000


@pytest.mark.parametrize("args,message", [
    (["--hours", "-1"], "Error: --hours must be positive, got -1"),
    (["--hours", "0"], "Error: --hours must be positive, got 0"),
])
def test_demo_bad_options_touch_nothing(run_cli, tmp_path, args, message):
    kept = tmp_path / "store" / "keep.txt"
    kept.parent.mkdir()
    kept.write_text("a previous demo")
    code, _, err = run_cli("demo", "--out", str(tmp_path), *args)
    assert code == 2 and err.splitlines()[0] == message
    assert kept.read_text() == "a previous demo" and sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_demo_out_that_is_a_file(run_cli, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    code, _, err = run_cli("demo", "--out", str(f))
    assert code == 2 and err.startswith(f"Error: --out {f}: exists and is not a folder") and f.read_text() == "x"


def test_the_second_demo_day_realises_the_first_days_cash_cards(tmp_path):
    """Two days: every whole GPU a day-1 cash card frees is given back on day 2, and day 2's report
    measures it against day 1 (docs/findings.md "baseline")."""
    res = run_demo(str(tmp_path), hours=12, interval_s=120, html=False, days=2)
    day1, day2 = res.days
    assert res.released and set(res.released) <= {x["uuid"] for r in day1["recommendations"] for x in r.get("frees") or []}
    assert not set(res.released) & {d["uuid"] for d in day2["devices"]}  # given back: gone from day 2
    b = day2["baseline"]
    assert b is not None and b["window"] == day1["window"]
    freed = [r for r in b["recommendations"] if r["status"] == "done" and r["savings_class"] == "cash"]
    assert freed and b["realized_monthly_usd"] > 0
    # each released GPU realises its day-1 monthly spend once (hand: spend x 730 / window hours)
    hours = day1["window"]["hours"]
    expect = sum(d["spend_usd"] * 730 / hours for d in day1["devices"] if d["uuid"] in res.released)
    assert b["realized_monthly_usd"] == pytest.approx(expect)
    assert [p["window_end"] for p in day2["history"]] == [day1["window"]["end"], day2["window"]["end"]]
    assert sorted(p.name for p in (tmp_path / "audits").iterdir()) == ["findings-day1.json", "findings-day2.json"]
