"""batching, quantization and token_economics: how inference is served and what a token costs."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

from gpu_audit.catalog import find_model, params_in_name
from gpu_audit.recommend.base import Recommendation, RecommendSettings, busy, eligible, hourly, monthly, target


def serving_devices(findings: dict[str, Any], s: RecommendSettings) -> dict[str, list[dict[str, Any]]]:
    """model -> the devices that served it: from the token logs' gpu_uuid where they carry it, else
    the devices of the model's hosts that did some work (an idle GPU is not a replica)."""
    idle = findings.get("idle_below_pct") or 5
    out = {}
    for m in findings["models"]:
        if m.get("contradicted"):
            continue  # its token volume is beyond what its GPUs can compute (data_quality.contradictions)
        gpus = set(m.get("gpus") or [])
        if gpus:
            devs = [d for d in findings["devices"] if d["uuid"] in gpus]
        else:
            devs = [d for d in findings["devices"] if d["host"] in (m.get("hosts") or [])
                    and (d.get("mean_util_pct") or 0) >= idle and not (d.get("mig_mode") and not d.get("parent_uuid"))]
        out[m["model"]] = [d for d in devs if eligible(d, s)]
    return out


def batching(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    """Low utilization on the GPUs serving a model: fewer replicas with bigger batches carry the measured peak."""
    out = []
    series = hourly(findings)
    by_model = serving_devices(findings, s)
    for m in findings["models"]:
        devs = by_model.get(m["model"], [])
        if len(devs) < 2:
            continue
        hours_total = sum(d["gpu_hours"] for d in devs)
        mean = sum(d["mean_util_pct"] * d["gpu_hours"] for d in devs) / max(1e-9, hours_total)
        if mean >= s.batching_max_mean_util_pct:
            continue
        per_hour: dict[int, float] = defaultdict(float)
        for d in devs:
            for r in series.get((d["host"], d["uuid"]), []):
                per_hour[r["h"]] += (r["mean_util_pct"] or 0.0) * d["share"] if d.get("share") else (r["mean_util_pct"] or 0.0)
        peak = max(per_hour.values()) if per_hour else 0.0
        size = replica_size(m["model"], devs, s)  # never split a model below the GPUs its weights need
        replicas = max(1, len(devs) // size)
        needed = max(1, math.ceil(peak / (s.batching_target_util_pct * size)))
        freed = (replicas - needed) * size if needed < replicas else 0
        eng = m.get("engine") or {}
        # Requests queue while the KV cache has room and the GPUs idle: the batch is capped by configuration.
        capped = bool(eng) and (eng.get("mean_requests_waiting") or 0) >= 1 and (eng.get("p95_kv_cache_usage_pct") or 100) < 80
        if freed < 1 and not capped:
            continue
        spend = sum(d["spend_usd"] for d in devs)
        out.append(Recommendation(
            kind="batching", title=f"{m['model']}: {len(devs)} GPUs serve it at {mean:.0f}% mean utilization; "
                                   f"{needed * size} with larger batches carr{'ies' if needed * size == 1 else 'y'} the peak",
            targets=tuple(target(d) for d in devs),
            evidence={"model": m["model"], "gpus": len(devs), "mean_util_pct": mean, "peak_hourly_util_sum_pct": peak,
                      "gpus_per_replica": size, "replicas": replicas, "replicas_needed": needed,
                      "replicas_freed": replicas - needed if needed < replicas else 0, "gpus_freed": freed,
                      "output_tokens_per_gpu_hour": m["completion_tokens"] / max(1e-9, hours_total),
                      "devices_from": "token logs' gpu_uuid" if m.get("gpus") else "the model's hosts (GPUs doing work)",
                      "engine_metrics": eng or "not in the store: batch size, queueing and KV use come from collect --scrape",
                      "batch_capped_by_configuration": capped},
            monthly_savings_usd=monthly(findings, spend * max(0, freed) / len(devs)), confidence="medium",
            action=(f"Requests wait (mean {eng.get('mean_requests_waiting', 0):.1f}) while the KV cache is at most "
                    f"{eng.get('p95_kv_cache_usage_pct', 0):.0f}% used (p95) and the GPUs idle: the batch is capped by configuration. "
                    "Raise vLLM --max-num-seqs (SGLang --max-running-requests, TGI --max-batch-total-tokens), then "
                    if capped else "") + (f"run {needed} replica(s) of {size} GPU(s) instead of {replicas} and let continuous batching fill them. "
                    if freed > 0 else "") + "Continuous batching's published effect: up to 23x throughput (Anyscale).",
            settings={"max_mean_util_pct": s.batching_max_mean_util_pct, "target_util_pct": s.batching_target_util_pct},
        ))
    return out


_QUANTIZED = re.compile(r"fp8|fp4|int8|int4|awq|gptq|w4a16|w8a8|w8a16|[48]-?bit|nf4|gguf|exl2|bnb|q[2-8]_", re.IGNORECASE)
WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
ENGINE_MEMORY_SHARE = 0.9  # vLLM's default gpu_memory_utilization: the memory an engine takes for weights and KV
PUBLISHED = ("FP8 W8A8: 2x less model memory, up to 1.6x throughput (vLLM FP8 docs)",
             "INT4 AWQ: ~3x less memory and up to 3x faster than FP16 (Qwen AWQ docs)",
             "FP8 KV cache halves KV bytes per token (vLLM --kv-cache-dtype fp8)")


def params_from_name(model: str) -> float | None:
    """Parameters in a model's name (70b -> 70e9), or None where the name does not say or says it is quantized."""
    if _QUANTIZED.search(model):
        return None
    b = params_in_name(model)
    return b * 1e9 if b is not None else None


def replica_size(model: str, devs: list[dict[str, Any]], s: RecommendSettings) -> int:
    """GPUs per replica (DESIGN.md "Replicas"): the smallest power of two whose engine memory holds the
    weights x (1 + memory_headroom) (BF16 2 bytes a parameter; FP8/INT8 1, INT4 0.5 where the name
    says so), where the name gives the parameters; else 1. The quantization card sizes replicas the same way."""
    b = params_in_name(model)
    mem = min((d.get("memory_total_bytes") or 0 for d in devs), default=0)
    if b is None or not mem:
        return 1
    fmt = "int4" if re.search(r"int4|awq|gptq|w4a16|4-?bit|nf4", model, re.IGNORECASE) else \
          "fp8" if re.search(r"fp8|int8|w8a8|w8a16|8-?bit", model, re.IGNORECASE) else "bf16"
    return gpus_per_replica(b * 1e9 * WEIGHT_BYTES[fmt], mem, s.memory_headroom)  # the quantization card's sizing too


def gpus_per_replica(weights_bytes: float, memory_bytes: float, headroom: float) -> int:
    """The smallest tensor-parallel size (a power of two) whose engine memory holds the weights with headroom."""
    n = 1
    while n * memory_bytes * ENGINE_MEMORY_SHARE < weights_bytes * (1 + headroom) and n < 64:
        n *= 2
    return n


def _sharded(findings: dict[str, Any], s: RecommendSettings, by_model: dict[str, list[dict[str, Any]]]) -> list[Recommendation]:
    """A BF16 model sharded over several GPUs that a quantized copy would fit on fewer, with the measured
    peak compute still carried."""
    out = []
    series = hourly(findings)
    for model, devs in by_model.items():
        params = params_from_name(model)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in devs:
            if d.get("memory_total_bytes") and not d.get("parent_uuid"):
                groups[d["name"] or ""].append(d)
        for name, group in groups.items():
            gpu = find_model(name)
            if params is None or gpu is None:
                continue
            mem = group[0]["memory_total_bytes"]
            fmt = "fp8" if gpu.fp8 else "int8"
            n_now = gpus_per_replica(params * WEIGHT_BYTES["bf16"], mem, s.memory_headroom)
            n_q = gpus_per_replica(params * WEIGHT_BYTES[fmt], mem, s.memory_headroom)
            held = sum(d.get("peak_memory_bytes") or 0 for d in group)
            # Evidence that the model runs in BF16 and sharded: enough GPUs and enough memory held for BF16 weights.
            if n_q >= n_now or len(group) < n_now or held < params * WEIGHT_BYTES["bf16"]:
                continue
            per_hour: dict[int, float] = defaultdict(float)
            for d in group:
                for r in series.get((d["host"], d["uuid"]), []):
                    per_hour[r["h"]] += r["mean_util_pct"] or 0.0
            peak = max(per_hour.values()) if per_hour else 0.0
            by_memory = math.ceil(len(group) * n_q / n_now)
            by_compute = math.ceil(peak / (s.target_util_pct * s.fp8_throughput_gain))
            after = n_q * math.ceil(max(by_memory, by_compute, 1) / n_q)
            if after >= len(group):
                continue
            spend = sum(d["spend_usd"] for d in group)
            label = "FP8 (W8A8)" if fmt == "fp8" else "INT8 weight-only (W8A16)"
            out.append(Recommendation(
                kind="quantization",
                title=f"{model}: sharded over {n_now} x {name} per replica in BF16; {label} fits {n_q}: {after} GPUs instead of {len(group)}",
                targets=tuple(target(d) for d in group),
                evidence={"model": model, "params_from_name": params, "gpu": name, "gpus": len(group),
                          "weights_bf16_bytes": params * WEIGHT_BYTES["bf16"], f"weights_{fmt}_bytes": params * WEIGHT_BYTES[fmt],
                          "format": label, "gpus_per_replica_bf16": n_now, "gpus_per_replica_quantized": n_q,
                          "gpus_per_replica_int4": gpus_per_replica(params * WEIGHT_BYTES["int4"], mem, s.memory_headroom),
                          "peak_memory_held_bytes": held, "peak_hourly_util_sum_pct": peak,
                          "gpus_for_memory": by_memory, "gpus_for_peak_compute": by_compute, "gpus_after": after,
                          "engine_memory_share": ENGINE_MEMORY_SHARE, "assumed_throughput_gain": s.fp8_throughput_gain,
                          "published": ["FP8 W8A8: 2x less model memory, up to 1.6x throughput (vLLM FP8 docs)",
                                        "weights = parameters x 2 bytes (BF16), 1 (FP8/INT8), 0.5 (INT4)"]},
                monthly_savings_usd=monthly(findings, spend * (len(group) - after) / len(group)), confidence="low",
                action=f"Serve {model} in {label} with tensor parallelism {n_q} instead of {n_now}: {after} GPUs carry the measured "
                       f"peak ({peak:.0f}% summed utilization at {s.target_util_pct:.0f}% each with {s.fp8_throughput_gain}x throughput). "
                       "The parameter count is read from the model name; validate accuracy on your evals first.",
                settings={"memory_headroom": s.memory_headroom, "target_util_pct": s.target_util_pct,
                          "throughput_gain": s.fp8_throughput_gain},
            ))
    return out


def quantization(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    """Memory-bound serving, or a BF16 model sharded over more GPUs than a quantized copy needs."""
    by_model = serving_devices(findings, s)
    out = _sharded(findings, s, by_model)
    covered = {(t["host"], t["uuid"]) for r in out for t in r.targets}
    served: dict[tuple[str, str], list[str]] = defaultdict(list)
    for model, devs in by_model.items():
        for d in devs:
            if (d["host"], d["uuid"]) not in covered:  # the sharded-model recommendation already speaks for it
                served[(d["host"], d["uuid"])].append(model)
    for d in findings["devices"]:
        here = served.get((d["host"], d["uuid"]))
        if not here or busy(d, s) or not d.get("memory_total_bytes") or d.get("peak_memory_bytes") is None:
            continue
        mem_pct = 100 * d["peak_memory_bytes"] / d["memory_total_bytes"]
        engs = [m.get("engine") or {} for m in findings["models"] if m["model"] in here]
        kv_full = any((e.get("p95_kv_cache_usage_pct") or 0) >= 95 or (e.get("preemptions") or 0) > 0 for e in engs)
        # High GPU memory alone is no evidence: vLLM and SGLang take gpu_memory_utilization (0.9) of the GPU for
        # weights and KV cache at start, whatever the load. Memory-bound means the engine's KV cache is full
        # or it preempts requests (collect --scrape).
        if not kv_full:
            continue
        model = find_model(d["name"] or "")
        already = [m for m in here if _QUANTIZED.search(m)]
        todo = [m for m in here if m not in already]
        gain = s.fp8_throughput_gain
        if not todo:
            # Every model here is named as quantized already: the weights are not the lever that the
            # published 1.6x is about. The KV cache (or INT4 weights) still are, with no dollar figure.
            fmt = "an FP8 KV cache (--kv-cache-dtype fp8), or INT4 weight-only (W4A16 / AWQ) weights"
            title = f"already-quantized {', '.join(here)}: quantize the KV cache"
            action = (f"{', '.join(here)} already run{'s' if len(here) == 1 else ''} in a quantized format (by name): use {fmt} to "
                      "fit more sequences per batch; validate accuracy first. No dollar figure: no published throughput "
                      "gain over quantized weights.")
        else:
            fmt = ("FP8 weights and activations (W8A8), and an FP8 KV cache" if model and model.fp8
                   else "INT8 or INT4 weight-only (W8A16 / AWQ)")
            title = f"quantize to {fmt.split(' (')[0]}"
            action = (f"Serve {', '.join(todo)} in {fmt}; validate accuracy on your evals first. "
                      + (f"The saving assumes {gain}x throughput, so the same traffic needs 1/{gain} of the GPU time."
                         if not already else "No dollar figure: this GPU also serves already-quantized models."))
        # Only the GPU time of models not yet quantized gains; with several models here, all of it is claimed
        # when none is quantized, else none (the split of a GPU's time among its models is not measured).
        saving = d["spend_usd"] * (1 - 1 / gain) if not already else 0.0
        out.append(Recommendation(
            kind="quantization", title=f"{d['host']}: memory-bound serving on {d['name']} ({mem_pct:.0f}% memory): {title}",
            targets=(target(d),),
            evidence={"peak_memory_pct": mem_pct, "mean_util_pct": d["mean_util_pct"], "models": here,
                      "already_quantized": already, "kv_cache_full_or_preempting": kv_full,
                      "engine_metrics": [e for e in engs if e] or None,
                      "format": fmt, "assumed_throughput_gain": gain if todo else None, "published": list(PUBLISHED)},
            monthly_savings_usd=monthly(findings, saving), confidence="low", action=action,
            settings={"memory_pct": s.quantization_memory_pct, **({"throughput_gain": gain} if todo else {})},
            savings_class="cash" if saving else "capacity",
        ))
    return out


def like_for_like(model: str, apis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference APIs of a model's class: those whose ``serves`` names it, or whose ``params_b`` is
    within a factor of 2 of the parameters in its name. An API of another class is never compared."""
    size = params_in_name(model)
    out = []
    for api in apis:
        if model in (api.get("serves") or ()):
            out.append(api)
        elif size and api.get("params_b") and 0.5 <= api["params_b"] / size <= 2.0:
            out.append(api)
    return out


def frees_billing_units(devs: list[dict[str, Any]]) -> bool:
    """Whether moving all of a model's traffic away frees GPUs that leave the bill: every one of its
    devices a whole GPU billed per GPU on demand (a node billed whole, reserved or owned GPUs: no)."""
    return bool(devs) and all(not d.get("parent_uuid") and (d.get("billing") or {}).get("unit", "gpu") == "gpu"
                              and (d.get("billing") or {}).get("commitment", "on-demand") == "on-demand" for d in devs)


def api_cost_usd(api: dict[str, Any], m: dict[str, Any]) -> float:
    """What the model's tokens would cost at an API's prices: prompt and completion tokens both, and the
    prompt tokens the logs say were cached at the API's cached-input price where it has one (measured
    cache hits, not assumed)."""
    cached = min(m.get("cached_tokens") or 0, m["prompt_tokens"]) if api.get("cached_input_per_1m") is not None else 0
    return ((m["prompt_tokens"] - cached) * api["input_per_1m"] + cached * (api.get("cached_input_per_1m") or 0)
            + m["completion_tokens"] * api["output_per_1m"]) / 1e6


def token_economics(findings: dict[str, Any], s: RecommendSettings) -> list[Recommendation]:
    out = []
    # The model's own GPUs (gpu_uuid in its logs, else its hosts' GPUs doing work), observed enough to scale.
    by_model = serving_devices(findings, s)
    models = [m for m in findings["models"] if m["cost_usd"] > 0 and m["completion_tokens"] > 0 and not m.get("contradicted")]
    for m in models:
        devs = by_model.get(m["model"], [])
        if not devs:
            continue
        hours = sum(d["gpu_hours"] for d in devs)
        util = sum(d["mean_util_pct"] * d["gpu_hours"] for d in devs) / hours if hours else None
        evidence_base = {"cost_per_1m_output_tokens": m["cost_per_1m_output_tokens"], "cost_per_1m_tokens": m["cost_per_1m_tokens"],
                         "serving_util_pct": util}
        if util:
            evidence_base[f"cost_per_1m_output_tokens_at_{s.target_util_for_token_cost_pct:.0f}pct_util"] = (
                m["cost_per_1m_output_tokens"] * util / s.target_util_for_token_cost_pct)
        # The cheapest reference API of the model's own class, for its own token mix (one card, not one per API).
        apis = [(api, api_cost_usd(api, m)) for api in like_for_like(m["model"], findings.get("api_prices", []))]
        frees = frees_billing_units(devs)
        for api, api_cost in sorted(apis, key=lambda x: x[1])[:1]:
            if api_cost <= 0:
                continue
            # Priced net (DESIGN.md "Like-for-like API comparisons"): the GPU spend routing frees, by the
            # billing rules, minus the API spend for the routed tokens. Negative nets are said, not hidden.
            freed = m["cost_usd"] if frees else 0.0
            net = freed - api_cost
            breakeven = util * m["cost_usd"] / api_cost if util else None
            out.append(Recommendation(
                savings_class="behaviour", kind="token_economics",
                title=(f"{m['model']}: routing to {api['model']} nets {'+' if net >= 0 else '-'}${abs(monthly(findings, net)):,.2f}/month "
                       f"(self-hosted ${m['cost_usd']:.2f} vs ${api_cost:.2f} at its prices)"),
                targets=({"model": m["model"]},),
                evidence={**evidence_base, "api": api["model"], "api_cost_usd": api_cost, "self_hosted_cost_usd": m["cost_usd"],
                          "api_price_as_of": api.get("as_of"), "api_price_source": api.get("source"),
                          "comparable_by": "serves" if m["model"] in (api.get("serves") or ()) else "params_b",
                          "gpu_spend_freed_usd": freed, "frees_billing_units": frees,
                          "net_monthly_usd": monthly(findings, net), "breakeven_util_pct": breakeven},
                monthly_savings_usd=monthly(findings, net), confidence="medium",
                action=(f"Routing frees no GPU that leaves the bill (billed per node, reserved or owned): it would add "
                        f"${monthly(findings, api_cost):,.2f}/month of API spend. Raise utilization instead (batching, consolidation)."
                        if not frees else
                        f"Self-hosting costs more than {api['model']} for this traffic: route it there if its quality is enough "
                        f"(self-hosting breaks even at {breakeven:.0f}% utilization, now {util:.0f}%)." if net > 0 and breakeven
                        else f"Routing would cost more than self-hosting ({api['model']} at its listed prices): keep it, and "
                        "raise utilization to lower the cost per token."),
                settings={"target_util_pct": s.target_util_for_token_cost_pct},
            ))
        p50, p99 = m.get("completion_p50"), m.get("completion_p99")
        if p50 and p99 and p99 / p50 >= s.long_tail_ratio:
            share = (m.get("completion_tokens_beyond_p95") or 0) / m["completion_tokens"]
            out.append(Recommendation(
                savings_class="behaviour", kind="token_economics",
                title=f"{m['model']}: a long tail of completions (p99 {p99:.0f} vs median {p50:.0f} tokens): set max_tokens "
                      f"(frees ~${monthly(findings, m['cost_usd'] * share):,.0f}/month of GPU time; net $0 until fewer GPUs serve it)",
                targets=({"model": m["model"], "lever": "max_tokens"},),
                evidence={**evidence_base, "completion_p50": p50, "completion_p95": m.get("completion_p95"), "completion_p99": p99,
                          "completion_tokens_beyond_p95": m.get("completion_tokens_beyond_p95"), "share_of_output_beyond_p95": share,
                          "gpu_time_freed_monthly_usd": monthly(findings, m["cost_usd"] * share),
                          "net_cash_monthly_usd": 0.0,
                          "why_no_cash": "GPUs are billed per hour whatever they compute: fewer tokens shrink the bill only once fewer "
                                         "GPUs serve the model (then batching or consolidation says so)"},
                monthly_savings_usd=0.0, confidence="low",  # the net: GPUs billed per hour cost the same (the GPU time is in evidence)
                action=f"Cap max_tokens near the p95 length ({m.get('completion_p95', 0):.0f}); the tokens beyond it are "
                       f"{share:.0%} of this model's output.",
                settings={"long_tail_ratio": s.long_tail_ratio},
            ))
        pp = m.get("prompt_p50")
        # Measured cache hits first: the token logs' cached prompt tokens, else the engine's hit rate.
        measured = m.get("cache_hit_pct")
        hit = measured if measured is not None else (m.get("engine") or {}).get("prefix_cache_hit_pct")
        if pp and p50 and pp / p50 >= s.long_prompt_ratio and not (hit is not None and hit >= s.cached_prompt_share_pct):
            source = "the token logs' cached prompt tokens" if measured is not None else "the engine"
            out.append(Recommendation(
                savings_class="behaviour", kind="token_economics", title=f"{m['model']}: prompts are {pp / p50:.0f}x longer than completions: cache prefixes",
                targets=({"model": m["model"], "lever": "prefix_cache"},),
                evidence={**evidence_base, "prompt_p50": pp, "completion_p50": p50, "prefix_cache_hit_pct": hit,
                          "prefix_cache_hit_source": source if hit is not None else None},
                monthly_savings_usd=0.0, confidence="low",
                action=("Enable prefix caching (on by default in vLLM V1; SGLang RadixAttention: up to 5x on shared prefixes) and "
                        "shorten system prompts. " + (f"{hit:.0f}% of prompt tokens hit the cache now ({source})." if hit is not None else
                        "No dollar figure without a measured cache hit rate (cached tokens in the logs, or collect --scrape).")),
                settings={"long_prompt_ratio": s.long_prompt_ratio, "cached_prompt_share_pct": s.cached_prompt_share_pct},
            ))
    # A costly model serving short requests that a cheaper model could take.
    if len(models) >= 2:
        cheap = min(models, key=lambda m: m["cost_per_1m_output_tokens"])
        for m in models:
            if m is cheap or (m.get("completion_p50") or 1e9) > s.short_request_tokens:
                continue
            ratio = m["cost_per_1m_output_tokens"] / cheap["cost_per_1m_output_tokens"]
            if ratio < 2:
                continue
            share = m.get("short_request_share") or 0
            saving = m["cost_usd"] * share * (1 - 1 / ratio)
            out.append(Recommendation(
                savings_class="behaviour", kind="token_economics", title=f"{m['model']}: {share:.0%} of requests are short (<= {s.short_request_tokens} tokens): route them to {cheap['model']}",
                targets=({"model": m["model"], "lever": "routing"},),
                evidence={"cost_per_1m_output_tokens": m["cost_per_1m_output_tokens"], "cheaper_model": cheap["model"],
                          "cheaper_cost_per_1m_output_tokens": cheap["cost_per_1m_output_tokens"], "short_request_share": share,
                          "completion_p50": m.get("completion_p50")},
                monthly_savings_usd=monthly(findings, saving), confidence="low",
                action=f"Route short, simple requests to {cheap['model']} ({ratio:.1f}x cheaper per output token) with a router "
                       "that checks quality on a sample.",
                settings={"short_request_tokens": s.short_request_tokens},
            ))
    return out
