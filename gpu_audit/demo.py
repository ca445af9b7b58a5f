"""`gpu-audit demo`: the whole pipeline on a simulated fleet, on a machine without a GPU.

The real collector runs against the virtual NVML for each shipped scenario (24 simulated hours),
token logs are generated from the same simulated load (each served model's output tokens follow
its GPUs' utilization), and `report` writes the findings and the HTML report.

With two days (the default), the second day is simulated after the first day's cash cards are
carried out the way a person would: every whole GPU a cash card frees (an idle GPU, the GPU a
consolidation empties) is given back, and the second report compares itself with the first
(``--baseline``: realised savings, docs/findings.md "baseline"). Cards that need a person to move
work (right-sizing, MIG layouts, batching) are left as they were. Each day's findings are kept in
``audits/``, as a scheduled audit keeps them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpu_audit.collect.clock import WallClock
from gpu_audit.collect.run import collect
from gpu_audit.collect.virtual.scenario import Scenario, load_scenario
from gpu_audit.errors import GpuAuditError

PKG = Path(__file__).resolve().parent
SCENARIOS = ("h100-inference.toml", "mixed-idle.toml", "a100-mig.toml", "h200-mig.toml")
# Request shapes per served model: (median prompt tokens, median completion tokens, spread of completions).
SHAPES = {
    "llama-3.1-70b": (1500, 250, 1.1),      # chat with a long tail of completions
    "qwen2.5-7b": (1300, 120, 0.5),         # RAG: prompts longer than answers (a volume its GPUs can compute)
    "mistral-7b-instruct": (400, 40, 0.6),  # short classification-style answers
}
DEFAULT_SHAPE = (800, 200, 0.6)


@dataclass
class DemoResult:
    out: str
    store: str
    tokens: str
    pricing: str
    json: str
    html: str | None
    requests: int
    findings: dict[str, Any]
    days: list[dict[str, Any]] | None = None  # each simulated day's findings, the last one is ``findings``
    released: list[str] | None = None  # the GPUs the second day gave back


def token_log(scenarios: list[tuple[Scenario, float]], duration_s: float, path: str, seed: int = 1) -> int:
    """Per-request records consistent with the simulated load: for every minute, each device with a
    served model produces (output tokens/s at that minute's utilization) x 60 tokens, split into
    requests of realistic lengths. Returns the number of requests."""
    rng = np.random.default_rng(seed)
    parts = []
    for sc, start in scenarios:
        for dev in sc.devices:
            w = dev.workload
            if not w.model or not w.tokens_per_s:
                continue
            p50, c50, sigma = SHAPES.get(w.model, DEFAULT_SHAPE)
            mean_c = c50 * math.exp(sigma**2 / 2)
            minutes = np.arange(0, duration_s, 60.0)
            budget = np.array([sc.output_tokens_per_s(dev, start + m) * 60 for m in minutes])
            n = rng.poisson(budget / mean_c)
            total = int(n.sum())
            if total == 0:
                continue
            ts = start + np.repeat(minutes, n) + rng.uniform(0, 60, total)
            comp = np.maximum(1, rng.lognormal(math.log(c50), sigma, total)).astype(np.int64)
            prompt = np.maximum(1, rng.lognormal(math.log(p50), 0.4, total)).astype(np.int64)

            def label(value: str) -> pa.DictionaryArray:  # one string for millions of records
                return pa.DictionaryArray.from_arrays(np.zeros(total, dtype=np.int32), pa.array([value]))

            parts.append(pa.table({
                "timestamp": pa.array((ts * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
                "model": label(w.model), "host": label(sc.host),
                "prompt_tokens": prompt, "completion_tokens": comp,
                "gpu_uuid": label(dev.uuid)}))
    table = pa.concat_tables(parts).unify_dictionaries().combine_chunks() if parts else pa.table({
        "timestamp": pa.array([], pa.timestamp("us", tz="UTC")), "model": pa.array([], pa.string()), "host": pa.array([], pa.string()),
        "prompt_tokens": pa.array([], pa.int64()), "completion_tokens": pa.array([], pa.int64()), "gpu_uuid": pa.array([], pa.string())})
    pq.write_table(table.sort_by("timestamp"), path, compression="zstd")
    return table.num_rows


START_ENV = "GPU_AUDIT_DEMO_START"


def demo_start(start: str | float | None, duration_s: float) -> float:
    """The simulated fleet's start, a whole hour: ``start`` (ISO 8601 or epoch seconds), else
    $GPU_AUDIT_DEMO_START, else so that the run ends about now. Tests fix it, so that the demo gives
    the same fleet at any hour of the day."""
    from gpu_audit.units import parse_time

    given = start if start is not None else os.environ.get(START_ENV) or None
    if given is None:
        t = WallClock().now() - duration_s
    elif isinstance(given, (int, float)):
        t = float(given)
    else:
        t = parse_time(given, "--start" if start is not None else f"${START_ENV}").timestamp()
    return math.floor(t / 3600) * 3600


def released_by(findings: dict[str, Any]) -> list[str]:
    """The whole GPUs that the cash cards of ``findings`` free (what the demo's second day gives back)."""
    whole = {d["uuid"] for d in findings["devices"] if not d.get("parent_uuid") and not d.get("mig_mode")}
    return sorted({x["uuid"] for r in findings["recommendations"] if r.get("savings_class") == "cash"
                   for x in r.get("frees") or [] if x.get("share", 0) >= 1 - 1e-9 and x["uuid"] in whole})  # a whole GPU, to rounding


def run_demo(out: str, hours: float = 24.0, interval_s: float = 30.0, html: bool = True,
             step: Callable[[str], None] | None = None, start: str | float | None = None, days: int = 2) -> DemoResult:
    from datetime import datetime, timezone

    from gpu_audit.analyze.findings import ReportRequest, build, write_json

    say = step or (lambda _msg: None)
    if days not in (1, 2):
        raise GpuAuditError(f"--days must be 1 or 2, got {days}")
    if not hours > 0 or not interval_s > 0:  # checked before anything in the folder is touched
        raise GpuAuditError(f"--hours must be positive, got {hours:g}" if not hours > 0 else
                            f"the interval must be positive, got {interval_s:g}")
    duration = hours * 3600
    t0 = demo_start(start, duration * days)  # checked before anything in the folder is touched
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise GpuAuditError(f"--out {out}: exists and is not a folder")
    try:
        outp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpuAuditError(f"cannot create {out}: {e.strerror}") from None
    store, audits = outp / "store", outp / "audits"
    for old in (store, audits):
        if old.exists():
            shutil.rmtree(old)  # a demo rerun starts clean; nothing else in the folder is touched
    audits.mkdir()
    pricing = str(outp / "pricing.toml")
    shutil.copyfile(PKG / "data" / "demo-pricing.toml", pricing)
    found: list[dict[str, Any]] = []
    released: list[str] = []
    requests = 0
    for day in range(days):
        start_s = t0 + day * duration
        if day:
            released = released_by(found[-1])
            say(f"day {day + 1}: giving back {len(released)} GPU(s) that day {day}'s cash cards free")
        runs = []
        for name in SCENARIOS:
            text = (PKG / "scenarios" / name).read_text()
            path = outp / f".scenario-{name}"
            head = f"[host]\nstart = {start_s}\n" + (f"released = {json.dumps(released)}\n" if released else "")  # a JSON array of strings is a TOML one
            path.write_text(text.replace("[host]\n", head, 1))
            say(f"collecting {name}: {hours:g} simulated hours at {interval_s:g} s" + (f" (day {day + 1})" if days > 1 else ""))
            collect(str(store), interval_s=interval_s, duration_s=duration, simulate=str(path), handle_signals=False)
            runs.append((load_scenario(str(path)), float(start_s)))
            path.unlink()
        say("generating token logs from the simulated load")
        tokens = str(outp / ("tokens.parquet" if day == days - 1 else f"tokens-day{day + 1}.parquet"))
        requests = token_log(runs, duration, tokens)
        say("analyzing")
        kept = str(audits / f"findings-day{day + 1}.json")
        since = datetime.fromtimestamp(start_s, timezone.utc).isoformat() if day else None
        findings = build(ReportRequest([str(store)], pricing, [tokens], since, None, baseline=str(audits) if day else None,
                                       writes=kept))
        write_json(findings, kept)
        found.append(findings)
    js = str(outp / "findings.json")
    write_json(findings, js)
    html_path = None
    if html:
        from gpu_audit.report.html import write_html

        say("writing the HTML report")
        html_path = str(outp / "report.html")
        write_html(findings, html_path)
    return DemoResult(out=str(outp), store=str(store), tokens=tokens, pricing=pricing, json=js, html=html_path,
                      requests=requests, findings=findings, days=found, released=released)

