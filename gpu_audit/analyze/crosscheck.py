"""Evidence cross-checks (DESIGN.md "Evidence cross-checks"): sources checked against each other.

Each contradiction is a row of ``data_quality.contradictions`` ({kind, host, uuid, model, hours,
why}), and no recommendation is built on it:

- ``tokens_vs_compute``: a model's implied compute in a device-hour (or host-hour, where the token log
  names no GPU), 2 x params x (prompt - cached + output) FLOPs, above the dense BF16 peak of those
  GPUs x 3600 s. The token log, or its host/gpu_uuid mapping, cannot be right; the serving rules skip
  the model. Params from ``[models."name"] params_b`` in settings, else from the name ("70b", "8B",
  "0.5b"), else unknown (no check).
- ``utilization_vs_power``: utilization below 5 % while the board draws over 70 % of its power limit
  for 10 minutes or more in an hour: those samples are no evidence (billed; no waste, idle or
  unallocated claim).
- ``memory``: memory used above the device's total, or above the memory the catalog gives for the
  named GPU (a wrong name): the device gets no recommendation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpu_audit.catalog import find_model, params_in_name

if TYPE_CHECKING:
    import pandas as pd


def params_b(model: str, given: dict[str, float] | None = None) -> float | None:
    """Billions of parameters of a model: given in settings, else read from its name, else None."""
    if given and model in given:
        return float(given[model])
    return params_in_name(model or "")


def _peak_flops_per_s(d: dict[str, Any]) -> float | None:
    m = find_model(d.get("name") or "")
    if m is None or not m.bf16_dense_tflops:
        return None
    return m.bf16_dense_tflops * 1e12 * (d.get("share") or 1.0)


def tokens_vs_compute(toks: pd.DataFrame | None, devices: list[dict[str, Any]],
                      given: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The (model, device or host) pairs whose token volume in some hour is beyond what the GPUs can compute."""
    if toks is None or toks.empty:
        return []
    import pandas as pd  # (toks is a frame: pandas is loaded)

    rows = toks[toks["in_window"] & toks["known_host"]]
    if rows.empty:
        return []
    by_dev = {(d["host"], d["uuid"]): d for d in devices if not (d.get("mig_mode") and not d.get("parent_uuid"))}
    host_peak: dict[str, float] = {}
    for (h, _), d in by_dev.items():
        if not d.get("parent_uuid"):
            host_peak[h] = host_peak.get(h, 0.0) + (_peak_flops_per_s(d) or 0.0)
    cached = rows["cached_tokens"].fillna(0) if "cached_tokens" in rows else 0
    rows = rows.assign(work=(rows["prompt_tokens"].fillna(0) - cached).clip(lower=0) + rows["completion_tokens"].fillna(0))
    rows = rows.assign(gpu_uuid=rows["gpu_uuid"].astype(object).where(rows["gpu_uuid"].notna(), None))
    per = rows.groupby(["model", "host", "gpu_uuid", "hour"], dropna=False, as_index=False)["work"].sum()
    out = []
    for (model, host, gpu), g in per.groupby(["model", "host", "gpu_uuid"], dropna=False):
        p = params_b(str(model), given)
        if p is None:
            continue
        if gpu is not None and not pd.isna(gpu):
            d = by_dev.get((host, gpu))
            peak = _peak_flops_per_s(d) if d else None
        else:
            peak = host_peak.get(host) or None
        if not peak:
            continue
        ratio = 2 * p * 1e9 * g["work"] / (peak * 3600)
        over = ratio > 1.0
        if over.any():
            worst = float(ratio.max())
            where = f"GPU {gpu} of {host}" if gpu is not None and not pd.isna(gpu) else f"the GPUs of {host}"
            out.append({"kind": "tokens_vs_compute", "host": host, "uuid": None if gpu is None or pd.isna(gpu) else gpu,
                        "model": model, "hours": int(over.sum()),
                        "why": f"{model} ({p:g} B parameters) implies {100 * worst:.0f}% of the dense BF16 peak of {where} in its "
                               f"busiest hour (2 x params x (prompt - cached + output) tokens, {int(over.sum())} hour(s) above "
                               "100%): the token log or its host/gpu_uuid mapping is wrong; no serving recommendation is built on it"})
    return out


def memory(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Devices whose memory readings cannot be right: used above total, or above the named GPU's memory."""
    out = []
    for d in devices:
        peak, total = d.get("peak_memory_bytes"), d.get("memory_total_bytes")
        m = find_model(d.get("name") or "") if not d.get("parent_uuid") else None
        why = None
        if peak is not None and total and peak > total * 1.001:
            why = f"memory used ({peak / 2**30:.1f} GiB) above the device's total ({total / 2**30:.1f} GiB)"
        elif peak is not None and m is not None and peak > m.memory_bytes * 1.02:
            why = (f"memory used ({peak / 2**30:.1f} GiB) above what a {m.key} has ({m.memory_bytes / 2**30:.1f} GiB): "
                   "a wrong GPU name?")
        if why:
            out.append({"kind": "memory", "host": d["host"], "uuid": d["uuid"], "model": None, "hours": None,
                        "why": why + "; no recommendation is built on this device"})
    return out


def utilization_vs_power(hot: list[tuple[str, str, int, float]]) -> list[dict[str, Any]]:
    """Devices with hours where utilization read idle (< 5 %) while the board drew over 70 % of its power
    limit for 10 minutes or more (usage.device_hours made those samples no evidence). ``hot``: per
    such device, (host, uuid, hours, seconds of those samples)."""
    return [{"kind": "utilization_vs_power", "host": host, "uuid": uuid, "model": None, "hours": int(n),
             "why": f"utilization below 5 % while drawing over 70 % of the power limit for {hot_s / 60:.0f} min "
                    f"in {n} hour(s): the reading is not what the GPU does (MIG instances not seen, a wrong unit); "
                    "those samples are billed as no evidence, with no waste, idle or unallocated claim"}
            for host, uuid, n, hot_s in hot]
