"""Properties that must hold for any store (hypothesis)."""

from __future__ import annotations

import json
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ASSETS
from gpu_audit.analyze.findings import ReportRequest, build
from storefix import T0, at, write_samples

PRICING = str(ASSETS / "pricing.toml")
NAMES = ["NVIDIA H100 80GB HBM3", "NVIDIA L4", "NVIDIA A100-SXM4-80GB"]

device = st.tuples(
    st.sampled_from(["h1", "h2"]), st.sampled_from(NAMES),
    st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=1, max_size=30),
    st.sampled_from([30.0, 60.0, 600.0, 1800.0]),
)


def rows_of(devs, split=False):
    rows = []
    for i, (host, name, utils, dt) in enumerate(devs):
        for k, u in enumerate(utils):
            base = {"host": host, "uuid": f"GPU-{i}", "name": name, "util_gpu_pct": u, "mem_used_bytes": 1}
            if split:
                rows.append({**base, "ts": at(k * dt), "interval_s": dt / 2})
                rows.append({**base, "ts": at(k * dt + dt / 2), "interval_s": dt / 2})
            else:
                rows.append({**base, "ts": at(k * dt), "interval_s": dt})
    return rows


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(device, min_size=1, max_size=4))
def test_spend_is_the_sum_over_devices_and_waste_at_most_spend(devs):
    with tempfile.TemporaryDirectory() as tmp:
        write_samples(tmp, rows_of(devs))
        f = build(ReportRequest([tmp], PRICING, [], None, None))
    fl = f["fleet"]
    assert fl["spend_usd"] == pytest.approx(sum(d["spend_usd"] for d in f["devices"]))
    assert fl["waste_usd"] == pytest.approx(sum(d["waste_usd"] for d in f["devices"]))
    assert fl["waste_usd"] <= fl["spend_usd"] + 1e-9
    for d in f["devices"]:
        assert 0 <= d["waste_usd"] <= d["spend_usd"] + 1e-9


@SETTINGS
@given(st.lists(device, min_size=1, max_size=3))
def test_splitting_samples_in_halves_changes_nothing(devs):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        write_samples(a, rows_of(devs))
        write_samples(b, rows_of(devs, split=True))
        fa, fb = build(ReportRequest([a], PRICING, [], None, None)), build(ReportRequest([b], PRICING, [], None, None))
    for k in ("spend_usd", "waste_usd", "idle_usd", "gpu_hours"):
        assert fa["fleet"][k] == pytest.approx(fb["fleet"][k], abs=1e-9)


@SETTINGS
@given(st.lists(device, min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.sampled_from(["m1", "m2"]),
                          st.integers(0, 3 * 3600), st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=20))
def test_model_costs_plus_unattributed_is_total_spend(devs, toks):
    with tempfile.TemporaryDirectory() as tmp:
        write_samples(tmp, rows_of(devs))
        path = f"{tmp}/t.jsonl"
        with open(path, "w") as fh:
            for host, m, t, p, c in toks:
                fh.write(json.dumps({"timestamp": T0 + t, "model": m, "host": host, "prompt_tokens": p, "completion_tokens": c}) + "\n")
        f = build(ReportRequest([tmp], PRICING, [path], None, None))
    total = sum(m["cost_usd"] for m in f["models"]) + f["fleet"]["unattributed_usd"]
    assert total == pytest.approx(f["fleet"]["spend_usd"], abs=1e-9)
