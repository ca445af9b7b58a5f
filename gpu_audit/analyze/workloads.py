"""Who is using the GPUs: each device-hour's cost split among the workloads present on the device in
that hour (docs/metrics.md "Cost per workload").

A workload is named from a process row, most specific first: its Slurm job id, its Kubernetes pod
(``namespace/name`` where the collector resolved it, else its UID), its container id, else its host,
Unix user and command name. In each (device, clock hour) the workloads present
share the device's spend, waste and idle cost by their mean SM share where NVML gives per-process
utilization on that device-hour, else by the memory they hold, else evenly. A device-hour with no
process row is "no workload" (idle capacity or work the collector could not see), so the workloads
and "no workload" add up to the priced fleet's spend.

Limits: an hour is the unit (a process present for 5 minutes of an hour takes its share of the whole
hour); MIG instances carry no per-process utilization (split by memory); container ids are not PID-
namespace aware; processes that start and end between two samples are not seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from gpu_audit.analyze.runner import DuckRunner as Runner  # the interface; Spark's runner has the same methods
from gpu_audit.store.dialect import Dialect
from gpu_audit.store.query import window_where

if TYPE_CHECKING:
    import pandas as pd

def _q(name: str, d: Dialect) -> str:
    """A column name quoted for the dialect (``user`` is a word in both)."""
    return f'"{name}"' if d.name == "duckdb" else f"`{name}`"


KIND_SQL = """CASE WHEN slurm_job_id IS NOT NULL THEN 'slurm_job' WHEN k8s_pod_uid IS NOT NULL THEN 'pod'
                   WHEN container_id IS NOT NULL THEN 'container' ELSE 'process' END"""
ID_SQL = """coalesce(slurm_job_id, CASE WHEN k8s_pod IS NOT NULL THEN coalesce(k8s_namespace, '?') || '/' || k8s_pod END, k8s_pod_uid,
                     container_id, host || ':' || coalesce({user} || ':', '') || coalesce(name, 'pid ' || CAST(pid AS {string})))"""
OPTIONAL = ("container_id", "k8s_pod_uid", "slurm_job_id", "user", "k8s_namespace", "k8s_pod")


def workloads(q: Runner, files: list[str], since: Any, until: Any,
              priced: Callable[[], pd.DataFrame], rows: str | None = None) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[str]]]:
    """Per workload: its GPUs, GPU-hours, spend, waste, idle cost and hours, mean utilization of its GPUs
    while present, peak memory; plus one "no workload" entry (empty without a processes table). And
    per device, the workloads seen on it. ``priced``: the priced device-hours as a frame (made only
    where there are workloads)."""
    pods = _dcgm_pods(q, rows)
    if not files and pods is None:
        return [], {}
    import pandas as pd  # only where there are workloads

    if not files:
        w = pods
    else:
        w = _process_rows(q, files, since, until)
        if pods is not None:  # DCGM pod labels speak for the device-hours without process rows
            seen = w[["host", "uuid", "hour"]].drop_duplicates().assign(_p=True)
            extra = pods.merge(seen, on=["host", "uuid", "hour"], how="left")
            w = pd.concat([w, extra[extra["_p"].isna()].drop(columns=["_p"])], ignore_index=True)
    return _split(w, priced())


def _dcgm_pods(q: Runner, rows: str | None) -> pd.DataFrame | None:
    """Device-hours whose samples carry Kubernetes pod labels (dcgm-exporter), as workload rows weighted
    by the time each pod was on the device (the same identity, ``namespace/pod``, as the collector's)."""
    if rows is None:
        return None
    d = q.d
    return q.df(f"""
        SELECT host, uuid, hour, 'pod' AS kind, coalesce(k8s_namespace, '?') || '/' || k8s_pod AS id, k8s_pod AS name,
               CAST(NULL AS {d.type("VARCHAR")}) AS {_q("user", d)}, any_value(k8s_namespace) AS namespace, sum(dt) AS sm,
               CAST(NULL AS DOUBLE) AS mem, max(mem_used_bytes) AS peak
        FROM ({rows}) b WHERE k8s_pod IS NOT NULL GROUP BY ALL
    """) if _has_pods(q, rows) else None


def _has_pods(q: Runner, rows: str) -> bool:
    return bool(q.fetch(f"SELECT count(*) FROM (SELECT 1 FROM ({rows}) b WHERE k8s_pod IS NOT NULL LIMIT 1) p")[0][0])


def _process_rows(q: Runner, files: list[str], since: Any, until: Any) -> pd.DataFrame:
    """Per (device, hour, workload): its name, user and namespace, mean SM share and memory, peak memory."""
    d = q.d
    have = q.columns(files)
    string = d.type("VARCHAR")
    cols = ", ".join(_q(c, d) if c in have else f'CAST(NULL AS {string}) AS {_q(c, d)}' for c in OPTIONAL)
    src = f"(SELECT ts, host, uuid, pid, name, used_mem_bytes, sm_util_pct, {cols} FROM {q.table(files)} p)"
    return q.df(f"""
        SELECT host, uuid, {d.hour("ts")} AS hour, {KIND_SQL} AS kind, {ID_SQL.format(user=_q("user", d), string=string)} AS id,
               any_value(name) AS name, any_value({_q("user", d)}) AS {_q("user", d)}, any_value(k8s_namespace) AS namespace,
               avg(sm_util_pct) AS sm, avg(used_mem_bytes) AS mem, max(used_mem_bytes) AS peak
        FROM {src} s {window_where(since, until, d=d)} GROUP BY ALL
    """)


def _split(w: pd.DataFrame, priced: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[str]]]:
    """Each device-hour's cost split among the workload rows of that device-hour (``sm`` weights, else
    ``mem``, else evenly). ``priced``: the priced device-hours."""
    import numpy as np
    cost = priced[["host", "uuid", "hour", "spend_usd", "waste_usd", "idle_usd", "gpu_s", "idle_share_dt", "free_dt", "u_dt", "ev_dt"]]
    if w.empty:
        return ([_none(cost)] if len(cost) else []), {}
    w["hour"] = w["hour"].astype("int64")
    key = ["host", "uuid", "hour"]
    g = w.groupby(key)
    any_sm = g["sm"].transform(lambda s: s.notna().any())
    any_mem = g["mem"].transform(lambda s: (s.fillna(0) > 0).any())
    weight = np.where(any_sm, w["sm"].fillna(0.0), np.where(any_mem, w["mem"].fillna(0.0), 1.0))
    w["weight"] = weight
    tot = w.groupby(key)["weight"].transform("sum")
    # all weights 0 (every process at 0 % SM): evenly
    w["share"] = np.where(tot > 0, w["weight"] / tot.where(tot > 0, 1), 1.0 / w.groupby(key)["weight"].transform("size"))
    c = cost.assign(hour=cost["hour"].astype("int64"))
    m = w.merge(c, on=key, how="inner")
    out = []
    for (kind, wid), part in m.groupby(["kind", "id"], sort=False):
        sh = part["share"]
        present_ev = part["ev_dt"].sum()
        out.append({
            "kind": kind, "id": wid, "name": part["name"].dropna().iloc[0] if part["name"].notna().any() else None,
            "user": part["user"].dropna().iloc[0] if part["user"].notna().any() else None,
            "namespace": part["namespace"].dropna().iloc[0] if part["namespace"].notna().any() else None,
            "gpus": int(part[["host", "uuid"]].drop_duplicates().shape[0]),
            "hosts": sorted(part["host"].unique().tolist()),
            "gpu_hours": float((part["gpu_s"] * sh).sum() / 3600),
            "spend_usd": float((part["spend_usd"] * sh).sum()),
            "waste_usd": float((part["waste_usd"] * sh).sum()),
            "idle_usd": float((part["idle_usd"] * sh).sum()),
            "idle_held_hours": float(((part["idle_share_dt"] + part["free_dt"]) * sh).sum() / 3600),
            "mean_util_pct": float(part["u_dt"].sum() / present_ev) if present_ev > 0 else None,
            "peak_memory_bytes": float(part["peak"].max()) if part["peak"].notna().any() else None,
        })
    # per device, the workloads seen on it (the idle and right-size cards name them)
    on: dict[tuple[str, str], list[str]] = {}
    for (h, u), ids in m.groupby(["host", "uuid"])["id"]:
        on[(h, u)] = sorted(set(ids))
    seen = m[key].drop_duplicates()
    rest = c.merge(seen, on=key, how="left", indicator=True)
    out.sort(key=lambda e: (-round(e["waste_usd"], 9), e["kind"], str(e["id"])))  # ties in a stable order
    return out + [_none(rest[rest["_merge"] == "left_only"])], on


def _none(c: pd.DataFrame) -> dict[str, Any]:
    """Device time with no process: idle capacity, or work the collector could not see."""
    return {"kind": "none", "id": None, "name": "no workload", "user": None, "namespace": None, "gpus": int(c[["host", "uuid"]].drop_duplicates().shape[0]),
            "hosts": sorted(c["host"].unique().tolist()), "gpu_hours": float(c["gpu_s"].sum() / 3600),
            "spend_usd": float(c["spend_usd"].sum()), "waste_usd": float(c["waste_usd"].sum()), "idle_usd": float(c["idle_usd"].sum()),
            "idle_held_hours": float((c["idle_share_dt"] + c["free_dt"]).sum() / 3600),
            "mean_util_pct": float(c["u_dt"].sum() / c["ev_dt"].sum()) if c["ev_dt"].sum() > 0 else None, "peak_memory_bytes": None}
