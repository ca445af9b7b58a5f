"""Audits over time (issue 23; DESIGN.md "Audits over time"; docs/findings.md "baseline"), hand-computed.

H100s at $3.00/h (tests/assets/pricing.toml): a whole GPU costs $72 a day, $3.00 x 730 = $2,190 per
730 h. Day 1 is 2026-11-28, day 2 the 29th; samples every 10 minutes. Baseline recommendations are
the rules' own where they fire, else written by hand into a real day-1 report (the claim is then
the hand's): the status depends only on the freed devices' spend then and now.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ASSETS
from storefix import series, write_samples
from gpu_audit.analyze.findings import ReportRequest, build, write_json

PRICING = str(ASSETS / "pricing.toml")
H100 = "NVIDIA H100 80GB HBM3"
DAY1 = ("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z")
DAY2 = ("2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z")
MONTH = 3.0 * 730  # one H100 for 730 h


def gpu(host: str, uuid: str, day: int, util: float, hours: float = 24) -> list[dict]:
    return series(host, uuid, H100, day * 86400, 600, [util] * int(hours * 6))


def report(store: Path, window: tuple[str, str], baseline: str | None = None, **kw) -> dict:
    return build(ReportRequest([str(store)], PRICING, since=window[0], until=window[1], baseline=baseline, **kw))


def day1_with(tmp_path: Path, store: Path, recs: list[dict]) -> str:
    """A real day-1 report whose recommendations are ``recs`` (hand-made claims)."""
    f = report(store, DAY1)
    f["recommendations"] = recs
    f["fleet"]["potential_monthly_savings_usd"] = sum(r.get("counted_monthly_usd", 0.0) for r in recs if r["savings_class"] == "cash")
    path = str(tmp_path / "day1.json")
    write_json(f, path)
    return path


def card(rid: str, kind: str, frees: list[tuple[str, str]], claimed: float, cls: str = "cash") -> dict:
    return {"id": rid, "kind": kind, "title": f"{kind} {rid}", "savings_class": cls, "monthly_savings_usd": claimed,
            "counted_monthly_usd": claimed, "targets": [{"host": h, "uuid": u} for h, u in frees],
            "frees": [{"host": h, "uuid": u, "share": 1.0, "cash_share": 1.0} for h, u in frees]}


def rec(f: dict, rid: str) -> dict:
    return next(r for r in f["baseline"]["recommendations"] if r["id"] == rid)


def test_a_gpu_released_after_an_idle_card_is_done_with_the_full_saving(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50))
    f1 = report(store, DAY1)
    idle = next(r for r in f1["recommendations"] if r["kind"] == "idle")
    assert idle["monthly_savings_usd"] == pytest.approx(MONTH)  # the rule's own claim: GPU-b, a whole month
    write_json(f1, str(tmp_path / "day1.json"))
    f2 = report(store, DAY2, str(tmp_path / "day1.json"))  # GPU-b was released: gone from the store, its host still reports
    r = rec(f2, idle["id"])
    assert r["status"] == "done" and r["realized_monthly_usd"] == pytest.approx(MONTH)
    b = f2["baseline"]
    assert b["realized_monthly_usd"] == pytest.approx(MONTH)  # the same GPU freed by two cards counts once
    assert b["claimed_monthly_usd"] == pytest.approx(MONTH)
    assert b["deltas"]["fleet"]["spend_monthly_usd"]["before"] == pytest.approx(2 * MONTH)
    assert b["deltas"]["fleet"]["spend_monthly_usd"]["after"] == pytest.approx(MONTH)
    assert b["deltas"]["fleet"]["idle_monthly_usd"]["change"] == pytest.approx(-MONTH)
    assert b["deltas"]["left"]["devices"] == [{"host": "n1", "uuid": "GPU-b"}]
    assert b["status_counts"]["done"] == len(f1["recommendations"])


def test_a_consolidation_carried_out_halfway_is_partly(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), [r for u in ("GPU-a", "GPU-b", "GPU-c", "GPU-d") for r in gpu("n1", u, 0, 10)]
                  + [r for u in ("GPU-a", "GPU-b", "GPU-d") for r in gpu("n1", u, 1, 13.3)])
    base = day1_with(tmp_path, store, [card("consolidation-x", "consolidation", [("n1", "GPU-c"), ("n1", "GPU-d")], 2 * MONTH)])
    r = rec(report(store, DAY2, base), "consolidation-x")
    assert r["realized_monthly_usd"] == pytest.approx(MONTH)  # GPU-c released, GPU-d still there: half
    assert r["status"] == "partly"


def test_nothing_changed_is_not_done_and_the_advice_keeps_its_id(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50) + gpu("n1", "GPU-b", 1, 0))
    f1 = report(store, DAY1)
    write_json(f1, str(tmp_path / "day1.json"))
    f2 = report(store, DAY2, str(tmp_path / "day1.json"))
    assert {r["status"] for r in f2["baseline"]["recommendations"]} == {"not done"}
    assert f2["baseline"]["realized_monthly_usd"] == pytest.approx(0)
    assert [r["id"] for r in f1["recommendations"]] == [r["id"] for r in f2["recommendations"]]  # the same advice, the same id
    assert {r["first_seen"] for r in f2["recommendations"]} == {f1["window"]["start"]}  # tracked since day 1


def test_a_device_gone_from_the_store_is_gone(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n2", "GPU-z", 0, 0) + gpu("n1", "GPU-a", 1, 50))
    base = day1_with(tmp_path, store, [card("idle-z", "idle", [("n2", "GPU-z")], MONTH)])
    f2 = report(store, DAY2, base)
    r = rec(f2, "idle-z")
    assert r["status"] == "gone" and r["realized_monthly_usd"] is None  # n2 reports nothing: a release cannot be told from a stopped collector
    assert f2["baseline"]["realized_monthly_usd"] == 0


def test_windows_of_different_lengths_compare_per_730_hours(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 40) + gpu("n1", "GPU-a", 1, 40, hours=12))
    write_json(report(store, DAY1), str(tmp_path / "day1.json"))
    f2 = report(store, ("2026-11-29T00:00:00Z", "2026-11-29T12:00:00Z"), str(tmp_path / "day1.json"))
    assert f2["fleet"]["spend_usd"] == pytest.approx(36.0)  # half the spend of day 1's $72 in half the time
    d = f2["baseline"]["deltas"]["fleet"]
    assert d["spend_monthly_usd"]["before"] == pytest.approx(MONTH) and d["spend_monthly_usd"]["after"] == pytest.approx(MONTH)
    assert d["spend_monthly_usd"]["change"] == pytest.approx(0, abs=1e-9)
    assert d["waste_monthly_usd"]["after"] == pytest.approx(MONTH * 0.6)
    assert d["mean_util_pct"]["change"] == pytest.approx(0, abs=1e-9)


def test_a_baseline_from_another_fleet_is_said_in_one_line(tmp_path, run_cli):
    a, b = tmp_path / "a", tmp_path / "b"
    write_samples(str(a), gpu("n1", "GPU-a", 0, 0) + gpu("n1", "GPU-b", 0, 50))
    write_samples(str(b), gpu("x9", "GPU-q", 1, 50))
    write_json(report(a, DAY1), str(tmp_path / "a.json"))
    code, out, err = run_cli("report", str(b), "--pricing", PRICING, "--baseline", str(tmp_path / "a.json"))
    assert code == 0
    lines = [l for l in out.splitlines() if "shares no device" in l]
    assert len(lines) == 1 and "another fleet" in lines[0]
    f = build(ReportRequest([str(b)], PRICING, baseline=str(tmp_path / "a.json")))
    assert {r["status"] for r in f["baseline"]["recommendations"]} == {"gone"}


@pytest.mark.parametrize("content, says", [
    ('{"schema_version": 7, "window": {}, "fleet": {}, "devices": []}', "findings schema 7, this version of gpu-audit reads up to 1"),
    ('{"fleet": {}}', "not a gpu-audit findings file"),
    ('{"schema_version": 1, "fleet": {}}', "without 'window': too old to compare with"),
    ('{"schema_version": 1,\n "fleet": ', "baseline.json:2: not JSON"),
])
def test_a_baseline_of_another_schema_is_refused_in_one_line(tmp_path, run_cli, content, says):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50))
    (tmp_path / "baseline.json").write_text(content)
    code, out, err = run_cli("report", str(store), "--pricing", PRICING, "--baseline", str(tmp_path / "baseline.json"))
    assert code == 2 and says in err and "Traceback" not in err
    assert len([l for l in err.splitlines() if l.strip()]) <= 2  # the line, and its hint


def test_an_older_baseline_without_ids_or_frees_is_read(tmp_path):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50))
    f1 = report(store, DAY1)
    for r in f1["recommendations"]:  # as an older version wrote them
        for k in ("id", "frees", "counted_monthly_usd", "first_seen"):
            r.pop(k, None)
    write_json(f1, str(tmp_path / "old.json"))
    f2 = report(store, DAY2, str(tmp_path / "old.json"))
    assert f2["baseline"]["recommendations"] and all(r["why"] for r in f2["baseline"]["recommendations"])
    assert f2["baseline"]["deltas"]["fleet"]["spend_monthly_usd"]["after"] == pytest.approx(MONTH)


def test_fail_on_regression_exits_1_when_waste_rose(tmp_path, run_cli):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 80) + gpu("n1", "GPU-a", 1, 50))  # waste $0.6/h -> $1.5/h: +150 %
    write_json(report(store, DAY1), str(tmp_path / "day1.json"))
    args = ("report", str(store), "--pricing", PRICING, "--since", DAY2[0], "--until", DAY2[1], "--baseline", str(tmp_path / "day1.json"))
    code, _, err = run_cli(*args, "--fail-on-regression", "100")
    assert code == 1 and "waste rose 150.0% against the baseline" in err
    code, _, _ = run_cli(*args, "--fail-on-regression", "200")
    assert code == 0
    code, _, err = run_cli(*args, "--fail-on-regression", "nan")
    assert code == 2 and "--fail-on-regression must be a number of percent" in err


def test_a_folder_of_kept_findings_is_the_baseline_and_the_history(tmp_path, run_cli):
    store, kept = tmp_path / "s", tmp_path / "reports"
    kept.mkdir()
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50)
                  + gpu("n1", "GPU-a", 2, 50))
    (kept / "notes.json").write_text('{"not": "findings"}')  # passed over
    code, _, _ = run_cli("report", str(store), "--pricing", PRICING, "--since", DAY1[0], "--until", DAY1[1], "--baseline", str(kept),
                         "--json", str(kept / "findings-1.json"))
    assert code == 0 and json.loads((kept / "findings-1.json").read_text())["baseline"] is None  # the first audit: nothing yet
    run_cli("report", str(store), "--pricing", PRICING, "--since", DAY2[0], "--until", DAY2[1], "--baseline", str(kept),
            "--json", str(kept / "findings-2.json"))
    code, out, _ = run_cli("report", str(store), "--pricing", PRICING, "--since", "2026-11-30T00:00:00Z", "--until", "2026-12-01T00:00:00Z",
                           "--baseline", str(kept), "--json", str(kept / "findings-3.json"), "--html", str(tmp_path / "r.html"))
    f3 = json.loads((kept / "findings-3.json").read_text())
    assert f3["baseline"]["window"]["end"] == "2026-11-30T00:00:00Z"  # the newest kept before this window: day 2
    assert [p["spend_per_day_usd"] for p in f3["history"]] == pytest.approx([144.0, 72.0, 72.0])
    assert [p["realized_monthly_usd"] for p in f3["history"]][1] == pytest.approx(MONTH)  # day 2 realised GPU-b's release
    assert "Since the last audit" in out
    html = (tmp_path / "r.html").read_text()
    assert "Since the last audit" in html and 'id="chart-since"' in html


def test_scheduled_reports_keep_findings_and_pass_the_previous_one(tmp_path):
    from gpu_audit.schedule import ScheduleSettings, cron, systemd

    s = ScheduleSettings(report_to="/srv/audits")
    for text in (*cron(s).values(), *systemd(s).values()):
        if "report " in text:
            assert "--baseline /srv/audits" in text and "/srv/audits/findings-" in text


def test_a_folder_baseline_is_found_from_the_files_heads(tmp_path):
    """In a folder the newest earlier window is chosen from each file's first bytes; a file that is not
    findings is passed over, and a newer window than this report's is never a baseline."""
    from gpu_audit.analyze import baseline as bl

    store, kept = tmp_path / "s", tmp_path / "k"
    kept.mkdir()
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-a", 1, 50) + gpu("n1", "GPU-a", 2, 50))
    for i, w in enumerate((DAY1, DAY2, ("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"))):
        write_json(report(store, w), str(kept / f"f{i}.json"))
    (kept / "zz.json").write_text('{"window": {"start": "2026-11-30T00:00:00Z", "end": "2026-11-30T06:00:00Z"}, "x": ')  # the newest head, not JSON
    path, f = bl.pick(str(kept), {"start": DAY2[1], "end": "2026-11-30T12:00:00Z"})
    assert path.endswith("zz.json") is False and f["window"]["end"] == "2026-11-30T00:00:00Z"


def test_a_collector_gap_is_not_a_saving(tmp_path):
    """The idle GPU is still there on day 2, but its samples cover only 12 of the 24 hours (the
    collector stopped): its spend in the window halved, its cost did not. Realised: $0, not done."""
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50)
                  + gpu("n1", "GPU-b", 1, 0, hours=12))
    base = day1_with(tmp_path, store, [card("idle-b", "idle", [("n1", "GPU-b")], MONTH)])
    f2 = report(store, DAY2, base)
    r = rec(f2, "idle-b")
    assert r["realized_monthly_usd"] == pytest.approx(0) and r["status"] == "not done"
    assert f2["baseline"]["deltas"]["fleet"]["spend_monthly_usd"]["after"] == pytest.approx(1.5 * MONTH)  # what was spent: its half day
    assert f2["baseline"]["realized_monthly_usd"] == pytest.approx(0)


def test_a_cash_card_realises_only_its_cash_share(tmp_path):
    """A card that frees a GPU of which half the cost is cash (the other half committed): the GPU is
    released, $2,190 of cost stops being used, $1,095 of it leaves a bill."""
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0) + gpu("n1", "GPU-a", 1, 50))
    c = card("idle-b", "idle", [("n1", "GPU-b")], MONTH / 2)
    c["frees"][0]["cash_share"] = 0.5
    base = day1_with(tmp_path, store, [c])
    f2 = report(store, DAY2, base)
    assert rec(f2, "idle-b")["realized_monthly_usd"] == pytest.approx(MONTH / 2) and rec(f2, "idle-b")["status"] == "done"
    assert f2["baseline"]["realized_monthly_usd"] == pytest.approx(MONTH / 2)


def test_a_wrong_baseline_or_history_path_is_said_before_the_analysis(tmp_path, run_cli, monkeypatch):
    from gpu_audit.analyze import engine

    def no_analysis(*a, **k):
        raise AssertionError("the analysis ran before the inputs were checked")

    monkeypatch.setattr(engine, "analyze", no_analysis)
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50))
    (tmp_path / "bad.json").write_text("{")
    for args, says in ((("--baseline", str(tmp_path / "nope.json")), "no such file or folder"),
                       (("--baseline", str(tmp_path / "bad.json")), "bad.json:1: not JSON"),
                       (("--history", str(tmp_path / "bad.json")), "--history")):
        code, _, err = run_cli("report", str(store), "--pricing", PRICING, *args)
        assert code == 2 and says in err and "Traceback" not in err


@pytest.mark.parametrize("edit, says", [
    (lambda f: f["fleet"].update(spend_usd="lots"), "fleet.spend_usd is not what findings hold"),
    (lambda f: f["devices"][0].pop("host"), "devices[0] is not what findings hold"),
    (lambda f: f["recommendations"].append({"id": "x", "frees": [{"host": 1}]}), "frees is not what findings hold"),
    (lambda f: f["window"].update(hours=True), "its window has no length"),
])
def test_a_hand_edited_baseline_is_refused_in_one_line(tmp_path, run_cli, edit, says):
    store = tmp_path / "s"
    write_samples(str(store), gpu("n1", "GPU-a", 0, 50) + gpu("n1", "GPU-b", 0, 0))
    f = report(store, DAY1)
    edit(f)
    (tmp_path / "b.json").write_text(json.dumps(f))
    code, _, err = run_cli("report", str(store), "--pricing", PRICING, "--baseline", str(tmp_path / "b.json"))
    assert code == 2 and says in err and "Traceback" not in err
