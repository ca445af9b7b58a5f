"""Audits over time: this report against an earlier one (docs/findings.md "baseline").

``report --baseline FINDINGS.json`` (or a folder of kept findings: the newest one before this
window) compares the fleet, each device, model and workload with the baseline, per 730 hours so
that windows of different lengths compare, and checks every baseline recommendation against what
the fleet did since (DESIGN.md "Audits over time"):

- a recommendation that frees devices (its ``frees`` list) is measured: each freed device's monthly
  spend then (baseline) minus now (this report), times the share the card freed, is what it
  realised (``realized_monthly_usd``, at most what it claimed, at least 0). ``done`` at 80 % or
  more of the claim, ``partly`` from 20 %, ``not done`` below. A freed device absent from this
  report while its host still reports was released (spend 0 now); where the host reports nothing
  either, the audit cannot tell a release from a collector that stopped: the card is ``gone`` when
  none of its freed devices can be seen.
- a recommendation that frees no device (a product or client change) cannot be measured from GPU
  spend: ``done`` when the rule no longer fires, ``not done`` while it does (``measured``: false).

A recommendation's id is its kind and targets (``recommend.base.Recommendation.id``), so the same
advice keeps its id from day to day; each current card carries ``first_seen``.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from gpu_audit.errors import GpuAuditError

MONTH_H = 730.0
DONE_AT, PARTLY_AT = 0.8, 0.2
SCHEMA = 1  # the findings schema this version writes and reads


class BaselineError(GpuAuditError):
    pass


def _check(f: Any, path: str) -> dict[str, Any]:
    """A findings document fit to compare with, or one line saying why not."""
    if not isinstance(f, dict) or "schema_version" not in f:
        raise BaselineError(f"--baseline {path}: not a gpu-audit findings file (no schema_version)",
                            hint="give the JSON an earlier `gpu-audit report --json` wrote")
    v = f["schema_version"]
    if not isinstance(v, int) or v > SCHEMA:
        raise BaselineError(f"--baseline {path}: findings schema {v}, this version of gpu-audit reads up to {SCHEMA}",
                            hint="upgrade gpu-audit, or compare with a baseline this version wrote")
    for key in ("window", "fleet", "devices"):
        if not isinstance(f.get(key), (dict, list)):
            raise BaselineError(f"--baseline {path}: findings schema {v} without {key!r}: too old to compare with",
                                hint="re-run the earlier report with this version (its store is still there) and compare with that")
    hours = (f["window"] or {}).get("hours") if isinstance(f["window"], dict) else None
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not hours > 0:
        raise BaselineError(f"--baseline {path}: its window has no length (window.hours)")
    where = _malformed(f)
    if where:
        raise BaselineError(f"--baseline {path}: {where} is not what findings hold", hint="was the file edited by hand?")
    return f


_NUMBERS = ("spend_usd", "waste_usd", "idle_usd", "mean_util_pct", "cost_per_1m_output_tokens", "covered_hours", "cost_usd",
            "potential_monthly_savings_usd", "monthly_savings_usd", "counted_monthly_usd", "share", "cash_share")


def _malformed(f: dict[str, Any]) -> str | None:
    """The first field the comparison reads that has the wrong type (a hand-edited file), or None."""
    def bad_numbers(x: Any, where: str) -> str | None:
        if not isinstance(x, dict):
            return f"{where} (not an object)"
        for k in _NUMBERS:
            v = x.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                return f"{where}.{k}"
        return None

    if not isinstance(f["fleet"], dict):
        return "fleet"
    checks: list[tuple[Any, str]] = [(f["fleet"], "fleet")]
    for name, keys in (("devices", ("host", "uuid")), ("models", ("model",)), ("recommendations", ())):
        items = f.get(name) or []
        if not isinstance(items, list):
            return name
        for i, x in enumerate(items):
            if not isinstance(x, dict) or any(not isinstance(x.get(k), str) for k in keys):
                return f"{name}[{i}]"
            checks.append((x, f"{name}[{i}]"))
            frees = x.get("frees") or []
            if not isinstance(frees, list) or any(not isinstance(y, dict) or not isinstance(y.get("host"), str)
                                                  or not isinstance(y.get("uuid"), str) for y in frees):
                return f"{name}[{i}].frees"
            checks.extend((y, f"{name}[{i}].frees") for y in frees)
    return next((w for x, where in checks if (w := bad_numbers(x, where))), None)


def read_findings(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            f = json.load(fh)
    except FileNotFoundError:
        raise BaselineError(f"--baseline {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BaselineError(f"--baseline {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise BaselineError(f"--baseline {path}:{e.lineno}: not JSON ({e.msg})") from None
    return _check(f, path)


def kept(folder: str) -> list[tuple[str, dict[str, Any]]]:
    """The findings files kept in ``folder`` (any ``*.json`` that is a findings document), oldest window first.
    Files that are not findings (or too old to read) are passed over."""
    out = []
    for p in sorted(glob.glob(os.path.join(glob.escape(folder), "*.json"))):
        try:
            out.append((p, read_findings(p)))
        except BaselineError:
            continue
    return sorted(out, key=lambda x: (x[1]["window"].get("end") or "", x[0]))


def pick(path: str, window: dict[str, Any], exclude: str | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """The baseline ``path`` names: a findings file, or in a folder the newest kept findings whose
    window ended by the end of ``window`` and is not this window (nor the file this report writes)."""
    if os.path.isdir(path):
        ex = os.path.realpath(exclude) if exclude else None
        want = (window.get("start"), window.get("end"))
        cands = []
        for p in glob.glob(os.path.join(glob.escape(path), "*.json")):
            if os.path.realpath(p) == ex:
                continue
            w = _head_window(p)  # the window from the file's first bytes: months of large findings are not parsed whole
            if w is None or (w[1] <= (want[1] or "") and w != want):
                cands.append((w[1] if w else "", p))
        for _, p in sorted(cands, reverse=True):  # the newest window first; a file whose head did not tell is read whole
            try:
                f = read_findings(p)
            except BaselineError:
                continue
            w = (f["window"].get("start"), f["window"].get("end"))
            if (w[1] or "") <= (want[1] or "") and w != want:
                return p, f
        return None, None
    return path, read_findings(path)


_WINDOW = re.compile(r'"window":\s*\{\s*"start":\s*"([^"]*)",\s*"end":\s*"([^"]*)"')


def _head_window(path: str) -> tuple[str, str] | None:
    """A findings file's window (start, end) from its first 4 KB (the writer puts it third), or None."""
    try:
        with open(path, "rb") as fh:
            m = _WINDOW.search(fh.read(4096).decode("utf-8", "replace"))
    except OSError:
        return None
    return (m.group(1), m.group(2)) if m else None


def _monthly(v: Any, hours: float) -> float | None:
    return None if v is None else float(v) * MONTH_H / hours


def _delta(before: float | None, after: float | None) -> dict[str, Any]:
    change = None if before is None or after is None else after - before
    pct = 100 * change / before if change is not None and before else None
    return {"before": before, "after": after, "change": change, "change_pct": pct}


def _fig(x: dict[str, Any] | None, key: str, hours: float, monthly: bool = True) -> float | None:
    if x is None or x.get(key) is None:
        return None
    return _monthly(x[key], hours) if monthly else float(x[key])


def compare(f: dict[str, Any], b: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``baseline`` section of ``f`` against the baseline findings ``b``."""
    h_now, h_then = float(f["window"]["hours"]), float(b["window"]["hours"])
    fl = {}
    for key in ("spend_usd", "waste_usd", "idle_usd"):
        fl[key.replace("_usd", "_monthly_usd")] = _delta(_fig(b["fleet"], key, h_then), _fig(f["fleet"], key, h_now))
    for key in ("mean_util_pct", "cost_per_1m_output_tokens"):
        fl[key] = _delta(_fig(b["fleet"], key, h_then, False), _fig(f["fleet"], key, h_now, False))

    def rows(now: list[dict], then: list[dict], key, figs: tuple[str, ...], label) -> tuple[list[dict], list, list]:
        a = {key(x): x for x in now}
        z = {key(x): x for x in then}
        out = []
        for k in sorted(set(a) | set(z), key=str):
            x, y = a.get(k), z.get(k)
            e = {**label(x or y), "status": "both" if x and y else "appeared" if x else "left"}
            for fig in figs:
                e[fig.replace("_usd", "_monthly_usd")] = _delta(_fig(y, fig, h_then), _fig(x, fig, h_now))
            out.append(e)
        first = figs[0].replace("_usd", "_monthly_usd")
        out.sort(key=lambda e: -abs(e[first]["change"] or (e[first]["after"] or 0) - (e[first]["before"] or 0)))
        return out, [e for e in out if e["status"] == "appeared"], [e for e in out if e["status"] == "left"]

    def dev_key(d):
        return (d["host"], d["uuid"])

    devices, dev_in, dev_out = rows(f["devices"], b["devices"], dev_key, ("spend_usd", "waste_usd", "idle_usd"),
                                    lambda d: {"host": d["host"], "uuid": d["uuid"], "name": d.get("name")})
    now_by, then_by = {dev_key(x): x for x in f["devices"]}, {dev_key(x): x for x in b["devices"]}
    for e in devices:
        k = (e["host"], e["uuid"])
        e["mean_util_pct"] = _delta(_fig(then_by.get(k), "mean_util_pct", h_then, False), _fig(now_by.get(k), "mean_util_pct", h_now, False))
    models, mod_in, mod_out = rows(f.get("models") or [], b.get("models") or [], lambda m: m["model"], ("cost_usd",),
                                   lambda m: {"model": m["model"]})
    for e in models:
        now = next((x for x in f.get("models") or [] if x["model"] == e["model"]), None)
        then = next((x for x in b.get("models") or [] if x["model"] == e["model"]), None)
        e["cost_per_1m_output_tokens"] = _delta(_fig(then, "cost_per_1m_output_tokens", h_then, False),
                                                _fig(now, "cost_per_1m_output_tokens", h_now, False))
    workloads, _, _ = rows(f.get("workloads") or [], b.get("workloads") or [], lambda w: (w.get("kind"), w.get("id")),
                           ("spend_usd", "waste_usd", "idle_usd"), lambda w: {"kind": w.get("kind"), "id": w.get("id"), "name": w.get("name")})

    recs = [_status(r, f, b, h_now, h_then) for r in b.get("recommendations") or []]
    common_devices = {dev_key(d) for d in f["devices"]} & {dev_key(d) for d in b["devices"]}
    note = None
    if not common_devices:
        note = (f"the baseline ({os.path.basename(source)}) shares no device with this report (another fleet?): "
                "its recommendations cannot be checked, and the deltas compare two fleets")
    realized = _realized_total(b, f, h_now, h_then)
    return {
        "source": source, "generated_at": b.get("generated_at"), "window": b["window"],
        "note": note,
        # what the baseline claimed in cash, each freed share once (its ledger's total)
        "claimed_monthly_usd": b["fleet"].get("potential_monthly_savings_usd")
        if b["fleet"].get("potential_monthly_savings_usd") is not None else
        sum(r.get("counted_monthly_usd") or 0.0 for r in b.get("recommendations") or [] if r.get("savings_class") == "cash"),
        "realized_monthly_usd": realized,
        "status_counts": {s: sum(1 for r in recs if r["status"] == s) for s in ("done", "partly", "not done", "gone")},
        "deltas": {"fleet": fl, "devices": devices, "models": models, "workloads": workloads,
                   "appeared": {"devices": [{"host": e["host"], "uuid": e["uuid"]} for e in dev_in], "models": [e["model"] for e in mod_in]},
                   "left": {"devices": [{"host": e["host"], "uuid": e["uuid"]} for e in dev_out], "models": [e["model"] for e in mod_out]}},
        "recommendations": recs,
    }


def _spend(f: dict[str, Any], hours: float) -> tuple[dict[tuple[str, str], float], set[str]]:
    """Per device, what it costs a month while it is seen (spend x 730 / the hours its samples cover;
    the window's hours for a device without coverage figures), and the hosts that report. A device
    seen half the window (a collector that stopped, a gap) costs the same rate as before: missing
    samples are not a saving."""
    def rate(d: dict[str, Any]) -> float:
        covered = d.get("covered_hours")
        return float(_monthly(d.get("spend_usd") or 0.0, covered if covered and covered > 0 else hours))

    return {(d["host"], d["uuid"]): rate(d) for d in f["devices"]}, {d["host"] for d in f["devices"]}


def _freed_share(r: dict[str, Any], x: dict[str, Any]) -> float:
    """The share of a device's cost a card frees that it can realise: for a cash card the part that
    shrinks a bill (``cash_share``), else the share."""
    if r.get("savings_class") == "cash" and x.get("cash_share") is not None:
        return float(x["cash_share"])
    return float(x.get("share") or 0.0)


def _status(r: dict[str, Any], f: dict[str, Any], b: dict[str, Any], h_now: float, h_then: float) -> dict[str, Any]:
    claimed = r.get("monthly_savings_usd")
    still = any(x.get("id") == r.get("id") for x in f.get("recommendations") or []) if r.get("id") else None
    out = {"id": r.get("id"), "kind": r.get("kind"), "title": r.get("title"), "savings_class": r.get("savings_class"),
           "claimed_monthly_usd": claimed, "realized_monthly_usd": None, "status": None, "measured": False, "still_open": still,
           "why": None}
    frees = [x for x in r.get("frees") or [] if _freed_share(r, x) > 0]
    if not frees:
        out["status"] = "not done" if still else "done"
        out["why"] = ("frees no device, so GPU spend cannot show it: judged by whether the rule still fires"
                      if still is not None else "an older baseline without recommendation ids")
        return out
    now, hosts = _spend(f, h_now)
    then, _ = _spend(b, h_then)
    seen = [x for x in frees if (x["host"], x["uuid"]) in now or x["host"] in hosts]
    if not seen:
        out.update(status="gone", measured=True,
                   why="its devices and their hosts are absent from this report: a release cannot be told from a collector that stopped")
        return out
    fell = sum(_freed_share(r, x) * max(0.0, then.get((x["host"], x["uuid"]), 0.0) - now.get((x["host"], x["uuid"]), 0.0)) for x in seen)
    realized = min(fell, claimed) if claimed is not None and claimed > 0 else fell
    ratio = realized / claimed if claimed else (1.0 if fell > 0 else 0.0)
    out.update(realized_monthly_usd=realized, measured=True,
               status="done" if ratio >= DONE_AT else "partly" if ratio >= PARTLY_AT else "not done",
               why=f"freed devices' spend fell ${fell:,.2f}/month (x share) of ${claimed or 0:,.2f} claimed")
    return out


def _realized_total(b: dict[str, Any], f: dict[str, Any], h_now: float, h_then: float) -> float:
    """Realised savings since the baseline, each freed device counted once (two cards that free the
    same GPU realise its saving once): per device, its monthly cost's fall x the largest cash share a
    cash card freed of it."""
    now, hosts = _spend(f, h_now)
    then, _ = _spend(b, h_then)
    share: dict[tuple[str, str], float] = {}
    for r in b.get("recommendations") or []:
        if r.get("savings_class") != "cash":
            continue
        for x in r.get("frees") or []:
            k = (x["host"], x["uuid"])
            if (k in now or x["host"] in hosts) and _freed_share(r, x) > 0:
                share[k] = min(1.0, max(share.get(k, 0.0), _freed_share(r, x)))
    return sum(s * max(0.0, then.get(k, 0.0) - now.get(k, 0.0)) for k, s in share.items())


def first_seen(f: dict[str, Any], b: dict[str, Any] | None) -> None:
    """Each current recommendation's ``first_seen``: the baseline's, where it had the same id."""
    prev = {r.get("id"): r.get("first_seen") or (b or {}).get("window", {}).get("start") for r in (b or {}).get("recommendations") or []}
    for r in f.get("recommendations") or []:
        r["first_seen"] = prev.get(r.get("id")) or f["window"]["start"]


def history(folder: str, current: dict[str, Any] | None = None, exclude: str | None = None) -> list[dict[str, Any]]:
    """One point per kept findings file (and the current report): spend and waste per day, and the
    realised savings its baseline section measured."""
    ex = os.path.realpath(exclude) if exclude else None
    docs = [f for p, f in kept(folder) if os.path.realpath(p) != ex]
    if current is not None:
        docs = [f for f in docs if (f["window"].get("start"), f["window"].get("end")) != (current["window"]["start"], current["window"]["end"])]
        docs.append(current)
    pts = []
    for f in sorted(docs, key=lambda f: f["window"].get("end") or ""):
        h = float(f["window"]["hours"])
        pts.append({"window_start": f["window"].get("start"), "window_end": f["window"].get("end"), "hours": h,
                    "spend_per_day_usd": (f["fleet"].get("spend_usd") or 0.0) * 24 / h,
                    "waste_per_day_usd": (f["fleet"].get("waste_usd") or 0.0) * 24 / h,
                    "realized_monthly_usd": (f.get("baseline") or {}).get("realized_monthly_usd")})
    return pts


def regression(f: dict[str, Any], pct: float) -> str | None:
    """The line saying waste rose more than ``pct`` % against the baseline (per 730 h), or None."""
    d = ((f.get("baseline") or {}).get("deltas") or {}).get("fleet", {}).get("waste_monthly_usd")
    if not d or d["before"] is None or d["after"] is None:
        return None
    if d["before"] <= 0:
        return None if d["after"] <= 0 else f"waste rose from $0 to ${d['after']:,.2f}/month against the baseline"
    rise = 100 * (d["after"] - d["before"]) / d["before"]
    if rise > pct:
        return (f"waste rose {rise:.1f}% against the baseline (${d['before']:,.2f} -> ${d['after']:,.2f} per month), "
                f"over --fail-on-regression {pct:g}%")
    return None
