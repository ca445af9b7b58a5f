"""Evidence cross-checks (issue 19; docs/metrics.md "Evidence cross-checks"), computed by hand.

One H100 SXM (dense BF16 989 TFLOP/s: 3.5604e18 FLOPs in an hour) serving llama-3.1-8b (8 B parameters).
"""

from __future__ import annotations

import json

import pytest

from conftest import ASSETS
from storefix import T0, series, write_samples
from gpu_audit.analyze.crosscheck import params_b
from gpu_audit.analyze.findings import ReportRequest, build

H100 = "NVIDIA H100 80GB HBM3"
PRICING = str(ASSETS / "pricing.toml")


def tokens(path, per_hour: list[tuple[int, int]], model="llama-3.1-8b", gpu="GPU-a"):
    """One record per hour: (prompt, output) tokens."""
    path.write_text("".join(json.dumps({"timestamp": T0 + 3600 * h + 60, "model": model, "host": "n1", "gpu_uuid": gpu,
                                        "prompt_tokens": p, "completion_tokens": c}) + "\n" for h, (p, c) in enumerate(per_hour)))
    return str(path)


def test_params_from_settings_else_from_the_name():
    assert params_b("llama-3.1-70b") == 70 and params_b("Qwen2.5-0.5B-Instruct") == 0.5 and params_b("qwen2.5-7b") == 7
    assert params_b("gpt-4o-mini") is None and params_b("my-model", {"my-model": 13}) == 13


def test_tokens_beyond_the_gpus_compute_are_a_contradiction_and_withhold_serving_cards(tmp_path):
    """Hour 0: 290M prompt + 10M output tokens = 2 x 8e9 x 3e8 = 4.8e18 FLOPs, 135 % of the peak.
    Hour 1: 10M tokens, 4.5 %. One hour above: the model is contradicted, and no card is built on it."""
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [30.0] * 120))
    t = tokens(tmp_path / "t.jsonl", [(290_000_000, 10_000_000), (9_000_000, 1_000_000)])
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [t], None, None))
    (c,) = f["data_quality"]["contradictions"]
    assert (c["kind"], c["host"], c["uuid"], c["model"], c["hours"]) == ("tokens_vs_compute", "n1", "GPU-a", "llama-3.1-8b", 1)
    assert "implies 135% of the dense BF16 peak" in c["why"]
    (m,) = f["models"]
    assert m["contradicted"] is True
    assert not [r for r in f["recommendations"] if r["kind"] in ("batching", "quantization", "token_economics")]


def test_a_plausible_volume_is_no_contradiction(tmp_path):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [30.0] * 120))
    t = tokens(tmp_path / "t.jsonl", [(90_000_000, 10_000_000), (9_000_000, 1_000_000)])  # 45 % in the busiest hour
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [t], None, None))
    assert f["data_quality"]["contradictions"] == [] and f["models"][0]["contradicted"] is False


def test_the_settings_file_gives_parameters_a_name_does_not(tmp_path):
    write_samples(str(tmp_path / "s"), series("n1", "GPU-a", H100, 60, 60, [30.0] * 60))
    t = tokens(tmp_path / "t.jsonl", [(290_000_000, 10_000_000)], model="house-model")
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [t], None, None))
    assert f["data_quality"]["contradictions"] == []  # no parameter count, no check
    st = tmp_path / "settings.toml"
    st.write_text('[models."house-model"]\nparams_b = 8\n')
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [t], None, None, settings=str(st)))
    assert [c["model"] for c in f["data_quality"]["contradictions"]] == ["house-model"]


def test_memory_above_the_named_gpu_is_a_contradiction(tmp_path, run_cli):
    """100 GiB used on a GPU named H100 80GB (total 80 GiB): no recommendation on it, and said."""
    rows = series("n1", "GPU-a", H100, 60, 60, [0.0] * 120)
    for r in rows:
        r["mem_used_bytes"] = 100 * 2**30
    write_samples(str(tmp_path / "s"), rows)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [], None, None))
    (c,) = f["data_quality"]["contradictions"]
    assert c["kind"] == "memory" and c["uuid"] == "GPU-a" and "above the device's total" in c["why"]
    assert f["recommendations"] == []  # an idle GPU, but its readings contradict each other
    code, out, _ = run_cli("report", str(tmp_path / "s"), "--pricing", PRICING)
    assert code == 0 and "contradiction:" in out


@pytest.mark.parametrize("parent_pct, visible", [(99.6, False), (6.4, True)])
def test_a_dcgm_mig_parent_busier_than_its_visible_instances_shows_no_unallocated_slices(tmp_path, parent_pct, visible):
    """A DCGM scrape of an A100 80GB in MIG mode showing one 1g.10gb instance at 10 %: its share-weighted
    activity is 10 x 1/7 = 1.43 %. A parent at 99.6 % GR-engine activity runs instances the scrape does
    not show: invisible, not idle (no unallocated $). At 6.4 % (within 5 points) the other 6/7 are free:
    unallocated = $7.00/h x 6/7 x 1 h = $6.00."""
    parent = series("n1", "GPU-p", "NVIDIA A100-SXM4-80GB", 60, 60, [None] * 60, mig_mode=True, source="dcgm",
                    gr_engine_active_pct=parent_pct)
    inst = series("n1", "MIG-1", "NVIDIA A100-SXM4-80GB", 60, 60, [None] * 60, parent_uuid="GPU-p", mig_profile="1g.10gb",
                  source="dcgm", gr_engine_active_pct=10.0)
    write_samples(str(tmp_path / "s"), parent + inst)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [], None, None))
    (p,) = [d for d in f["devices"] if d["uuid"] == "GPU-p"]
    assert p["mig_instances_visible"] is visible
    if visible:
        assert p["unallocated_usd"] == pytest.approx(6.0)
    else:
        assert not p["unallocated_usd"] and p["spend_usd"] == pytest.approx(6.0)  # billed whole, no evidence


@pytest.mark.parametrize("n, profile, unalloc, stranded", [(4, "1g.20gb", 0.0, 3.0), (3, "1g.20gb", 4.0, 0.0)])
def test_mig_compute_stranded_by_taken_memory_is_not_unallocated(tmp_path, n, profile, unalloc, stranded):
    """An A100 80GB ($7.00/h) with n x 1g.20gb instances for 1 h, collected (instances visible). Each takes
    1 of 7 compute slices and 2 of 8 memory slices. 4 instances take all 8 memory slices: the other 3/7 of
    compute is stranded ($3.00), not unallocated. 3 instances leave 2 memory slices: 4/7 unallocated ($4.00)."""
    a100 = "NVIDIA A100-SXM4-80GB"
    rows = series("n1", "GPU-p", a100, 60, 60, [None] * 60, mig_mode=True, mem_total_bytes=80 * 2**30)
    for k in range(n):
        rows += series("n1", f"MIG-{k}", a100, 60, 60, [50.0] * 60, parent_uuid="GPU-p", mig_profile=profile)
    write_samples(str(tmp_path / "s"), rows)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [], None, None))
    (p,) = [d for d in f["devices"] if d["uuid"] == "GPU-p"]
    assert p["unallocated_usd"] == pytest.approx(unalloc) and p["stranded_usd"] == pytest.approx(stranded)
    assert f["fleet"]["spend_usd"] == pytest.approx(7.0)  # the whole GPU, once
    assert f["fleet"]["idle_usd"] == pytest.approx(unalloc)
    assert not [r for r in f["recommendations"] if r["kind"] == "mig" and stranded]


def test_idle_readings_at_high_power_are_no_evidence(tmp_path):
    """Hour 0 at 50 %; hour 1 reads 0 % while drawing 600 W of a 700 W limit (86 %): hour 1 is billed ($3)
    with no evidence: waste $1.50 (hour 0 only), no idle $, and a contradiction for the hour."""
    rows = series("n1", "GPU-a", H100, 0, 60, [50.0] * 60, power_w=300.0, power_limit_w=700.0)  # 00:00-00:59
    rows += series("n1", "GPU-a", H100, 3600, 60, [0.0] * 60, power_w=600.0, power_limit_w=700.0)  # 01:00-01:59
    write_samples(str(tmp_path / "s"), rows)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [], None, None))
    (d,) = f["devices"]
    assert d["spend_usd"] == pytest.approx(6.0) and d["waste_usd"] == pytest.approx(1.5) and d["idle_usd"] == pytest.approx(0.0)
    assert d["mean_util_pct"] == pytest.approx(50.0)
    (c,) = f["data_quality"]["contradictions"]
    assert (c["kind"], c["uuid"], c["hours"]) == ("utilization_vs_power", "GPU-a", 1)
    assert not [r for r in f["recommendations"] if r["kind"] == "idle"]


def test_a_few_minutes_of_high_power_at_idle_are_not_a_contradiction(tmp_path):
    rows = series("n1", "GPU-a", H100, 0, 60, [0.0] * 5 + [50.0] * 55, power_w=600.0, power_limit_w=700.0)
    write_samples(str(tmp_path / "s"), rows)
    f = build(ReportRequest([str(tmp_path / "s")], PRICING, [], None, None))
    assert f["data_quality"]["contradictions"] == [] and f["devices"][0]["idle_usd"] == pytest.approx(3.0 * 5 / 60)
