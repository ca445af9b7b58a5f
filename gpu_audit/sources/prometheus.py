"""Import DCGM exporter (and inference-engine) series from Prometheus, or from saved scrapes.

``import_prometheus`` asks a Prometheus server's HTTP API (``/api/v1/query_range``) for each DCGM
field in chunks of at most 10,000 points per series (Prometheus refuses more than 11,000).
``import_prometheus_text`` reads saved exporter scrapes (one point in time per file, the file's
time or ``--at``; or OpenMetrics/text with sample timestamps).

Mapping (docs/import.md): host from ``Hostname`` (else ``hostname``, else the ``instance`` host),
device from ``UUID``; a MIG instance (``GPU_I_ID``) is a device of its own, ``<UUID>/GI-<id>``, with
``parent_uuid`` and ``mig_profile`` from ``GPU_I_PROFILE``, whose utilization comes from
``PROF_GR_ENGINE_ACTIVE`` (``GPU_UTIL`` does not exist for it). DCGM's blank sentinels (values near
2^63, 2^31 and 2^47) are nulls. Pod, namespace and container labels are kept.
"""

from __future__ import annotations

import json
import re
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import MAX_HOST_BYTES
from gpu_audit.sources.sink import (ImportLedger, NothingImported, bad_name, StoredKeys, Tally, check_interval, row_key, series_times,
                                   time_out_of_range, to_us)
from gpu_audit.store.writer import StoreWriter, check_writable

MIB = 2**20
DCGM: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("util_gpu_pct", 1),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("util_mem_pct", 1),
    "DCGM_FI_DEV_FB_USED": ("mem_used_bytes", MIB),
    "DCGM_FI_DEV_FB_FREE": ("_fb_free", MIB),
    "DCGM_FI_DEV_FB_RESERVED": ("_fb_reserved", MIB),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_mj", 1),  # mJ since boot, like NVML's counter
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", 1),
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_active_pct", 100),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("sm_occupancy_pct", 100),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor_active_pct", 100),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_active_pct", 100),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gr_engine_active_pct", 100),
}
INT_COLS = {"mem_used_bytes", "sm_clock_mhz", "temp_c", "energy_mj"}
PCT_COLS = {c for c, _ in DCGM.values() if c.endswith("_pct")}
MAX_POINTS = 10_000


class PrometheusError(GpuAuditError):
    pass


def blank(v: float) -> bool:
    """DCGM's "blank" sentinels (no value for this field) and non-finite values."""
    return (not math.isfinite(v)) or v >= 9.2e18 or 2147483600 <= v <= 2147483647 or v == 140737488355328.0


@dataclass
class PromImport:
    rows: int = 0
    devices: int = 0
    engine_rows: int = 0
    queries: int = 0
    hosts: list[str] = field(default_factory=list)
    metrics_found: list[str] = field(default_factory=list)
    single_point: int = 0  # devices with one point in time and no --interval: their samples stand for 0 s
    tally: Tally = field(default_factory=Tally)
    engine_hosts_without_samples: list[str] = field(default_factory=list)
    time_sources: list[str] = field(default_factory=list)  # per file read: where its times came from


def _host(labels: dict[str, str]) -> str:
    if labels.get("Hostname") or labels.get("hostname"):
        return labels.get("Hostname") or labels["hostname"]
    inst = labels.get("instance", "")
    return inst.rsplit(":", 1)[0] if inst else "unknown"


def _device(labels: dict[str, str]) -> tuple[str, str, dict[str, Any]] | None:
    uuid = labels.get("UUID") or labels.get("uuid")
    if not uuid:
        return None
    host = _host(labels)
    ident: dict[str, Any] = {"name": labels.get("modelName") or labels.get("model_name"),
                             "index": int(labels["gpu"]) if re.fullmatch(r"[0-9]{1,6}", labels.get("gpu", "")) else None,
                             "k8s_pod": labels.get("pod") or labels.get("exported_pod"),
                             "k8s_namespace": labels.get("namespace") or labels.get("exported_namespace"),
                             "k8s_container": labels.get("container") or labels.get("exported_container")}
    gi = labels.get("GPU_I_ID")
    if gi not in (None, ""):
        ident.update(parent_uuid=uuid, mig_profile=labels.get("GPU_I_PROFILE"))
        uuid = f"{uuid}/GI-{gi}"
    return host, uuid, ident


class Assembler:
    """Points (metric, labels, ts, value) -> samples rows per device and engine rows per endpoint."""

    def __init__(self, engine_source: str = "import", host: str | None = None) -> None:
        from gpu_audit.collect.engines import engine_metric_names

        self.engine_source = engine_source
        self.host = host  # --host: for series whose labels name no host (engine dumps, exporters without Hostname)
        self.engine_names = engine_metric_names() | {n[: -len("_total")] for n in engine_metric_names() if n.endswith("_total")}
        self.dev: dict[tuple[str, str], dict[float, dict[str, Any]]] = defaultdict(dict)
        self.ident: dict[tuple[str, str], dict[str, Any]] = {}
        self.engine_points: dict[tuple[str, str, float], list[tuple[str, dict[str, str], float]]] = defaultdict(list)
        self.found: set[str] = set()
        self.duplicates = 0  # the same metric of the same device at the same instant, given again
        self.rejected = 0
        self.first_rejection = ""

    def add(self, name: str, labels: dict[str, str], ts: float, value: float) -> None:
        if name not in DCGM and name.endswith("_total") and name[: -len("_total")] in DCGM:
            name = name[: -len("_total")]  # a counter's sample as prometheus_client names it (the exporter writes no _total)
        if name in DCGM:
            d = _device(labels)
            if d is None:
                return
            host, uuid, ident = d
            if self.host and host == "unknown":
                host = self.host
            why = bad_name(host, "the Hostname label", MAX_HOST_BYTES) or bad_name(uuid, "the UUID label")
            if why:  # a name no store folder or report can hold: the point is refused and counted
                self.rejected += 1
                self.first_rejection = self.first_rejection or f"{name}: {why}"
                return
            self.found.add(name)
            self.ident.setdefault((host, uuid), ident)
            ts = to_us(ts) / 1e6  # the store's resolution: one instant per microsecond
            row = self.dev[(host, uuid)].setdefault(ts, {})
            col, scale = DCGM[name]
            v = None if blank(value) else value * scale
            if col in PCT_COLS and v is not None and not 0 <= v <= 100:
                self.rejected += 1
                self.first_rejection = self.first_rejection or f"{name} of {uuid} = {value:g}: outside 0-100 %"
                v = None
            if col in row:
                self.duplicates += 1
            row[col] = v
        elif name in self.engine_names:
            host = _host(labels)
            if self.host and (host == "unknown" or not (labels.get("Hostname") or labels.get("hostname"))):
                host = self.host  # an engine's own /metrics names no host: the user says which
            why = bad_name(host, "the Hostname label", MAX_HOST_BYTES)
            if why:
                self.rejected += 1
                self.first_rejection = self.first_rejection or f"{name}: {why}"
                return
            self.engine_points[(host, labels.get("instance", ""), ts)].append((name, labels, value))

    def _name_mig_series(self) -> None:
        """DCGM series without ``modelName`` (NVIDIA's own MIG example): a MIG instance takes its GPU's
        name from the parent's series in the same data, else from its profile where that names one model;
        a parent without a name takes its instances'. Otherwise the name stays null (priced by [host])."""
        by_uuid: dict[str, str] = {}
        for (host, uuid), ident in self.ident.items():
            if ident.get("name") and not ident.get("parent_uuid"):
                by_uuid[uuid] = ident["name"]
        for (host, uuid), ident in self.ident.items():
            if ident.get("parent_uuid") and not ident.get("name"):
                ident["name"] = by_uuid.get(ident["parent_uuid"]) or name_from_profile(ident.get("mig_profile"))
                if ident["name"]:
                    by_uuid.setdefault(ident["parent_uuid"], ident["name"])
        for (host, uuid), ident in self.ident.items():
            if not ident.get("parent_uuid") and not ident.get("name"):
                ident["name"] = by_uuid.get(uuid)

    def write(self, out: str, interval_s: float | None,
              ledger: tuple[ImportLedger, list[tuple[str, str, int, str]]] | None = None) -> PromImport:
        """Write everything, one writer per host so that each row lands under its own host= folder;
        with ``ledger``, the files read are recorded (their content is not imported again)."""
        from gpu_audit.collect.engines import aggregate

        writers: dict[str, StoreWriter] = {}

        def w(host: str) -> StoreWriter:
            if host not in writers:
                writers[host] = StoreWriter(out, host)
            return writers[host]

        import numpy as np

        check_interval(interval_s)
        res = PromImport()
        res.tally.duplicate_instants, res.tally.rejected, res.tally.first_rejection = self.duplicates, self.rejected, self.first_rejection
        stored: dict[str, StoredKeys] = {}
        parents = {i["parent_uuid"] for i in self.ident.values() if i.get("parent_uuid")}
        self._name_mig_series()
        for (host, uuid), points in sorted(self.dev.items()):
            uniq, dts, _, nominal = series_times(np.array([to_us(t) for t in points], dtype=np.int64), interval_s)
            res.single_point += not nominal
            ident = self.ident[(host, uuid)]
            keys = stored.setdefault(host, StoredKeys(out, "samples", host))
            prev_t = prev_mj = None
            for t_us, dt in zip(uniq.tolist(), dts.tolist()):
                mj = points[t_us / 1e6].get("energy_mj")
                # the counter's delta where the gap is this sample's dt and the counter did not go back
                energy_j = ((mj - prev_mj) / 1000 if mj is not None and prev_mj is not None and mj >= prev_mj
                            and prev_t is not None and abs((t_us - prev_t) / 1e6 - dt) < 1e-6 else None)
                prev_t, prev_mj = t_us, mj
                t = t_us / 1e6
                when = datetime.fromtimestamp(t, tz=timezone.utc)
                if not keys.claim(uuid, when.strftime("%Y-%m-%d"), t_us):
                    res.tally.already_stored += 1
                    continue
                r = points[t]
                used, free, reserved = r.get("mem_used_bytes"), r.pop("_fb_free", None), r.pop("_fb_reserved", None)
                total = used + free + (reserved or 0) if used is not None and free is not None else None
                for c in INT_COLS:
                    if r.get(c) is not None:
                        r[c] = int(round(r[c]))
                w(host).add("samples", {**r, **ident, "ts": when, "host": host, "energy_j": energy_j,
                                       "uuid": uuid, "mem_total_bytes": total, "interval_s": dt, "source": "dcgm",
                                       "mig_mode": True if uuid in parents else None})
                res.rows += 1
            res.devices += 1
        engine_keys: dict[str, StoredKeys] = {}
        for (host, instance, t), samples in sorted(self.engine_points.items()):
            engine, rows = aggregate(samples)
            when = datetime.fromtimestamp(t, tz=timezone.utc)
            keys = engine_keys.setdefault(host, StoredKeys(out, "engine", host, ("endpoint", "model")))
            for r in rows if engine else []:
                if not keys.claim(row_key(instance or None, r.get("model")), when.strftime("%Y-%m-%d"), to_us(t)):
                    res.tally.already_stored += 1
                    continue
                w(host).add("engine", {**r, "ts": when, "host": host, "endpoint": instance or None, "source": self.engine_source})
                res.engine_rows += 1
        res.hosts = sorted({h for h, _ in self.dev})
        res.metrics_found = sorted(self.found)
        if ledger is not None:
            book, read = ledger
            for path, sha, n, source in read:
                book.record(w(book.host or (res.hosts[0] if res.hosts else "unknown")), sha, path, n, source)
        for wr in writers.values():
            wr.flush()
        res.tally.rows = res.rows + res.engine_rows
        from gpu_audit.store.layout import encode_host

        engine_hosts = {h for h, _, _ in self.engine_points}
        res.engine_hosts_without_samples = sorted(h for h in engine_hosts
                                                  if not os.path.isdir(os.path.join(out, "samples", f"host={encode_host(h)}")))
        return res


def name_from_profile(profile: str | None) -> str | None:
    """The GPU model a MIG profile belongs to where only one model has it (``1g.5gb``: an A100 40GB)."""
    from gpu_audit.catalog import MODELS

    if not profile:
        return None
    models = [m for m in MODELS if any(p.name == profile for p in m.mig_profiles)]
    return models[0].nvml_name if len(models) == 1 else None


def _get(url: str, params: dict[str, str], timeout_s: float) -> dict[str, Any]:
    full = url.rstrip("/") + "/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(full, timeout=timeout_s) as r:  # noqa: S310 - the user's Prometheus
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", e.reason)
        except (ValueError, AttributeError):
            detail = e.reason
        raise PrometheusError(f"Prometheus at {url} rejected the query {params['query']!r}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise PrometheusError(f"cannot reach Prometheus at {url}: {getattr(e, 'reason', e)}",
                              hint="check --url (e.g. http://prometheus:9090) and that it is up") from None
    except ValueError:
        raise PrometheusError(f"{url} did not answer with Prometheus JSON: is it a Prometheus server?") from None
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url} answered an error for {params['query']!r}: {body.get('error')}")
    return body


def import_prometheus(url: str, out: str, since: datetime, until: datetime, step_s: float = 60.0, match: str | None = None,
                      timeout_s: float = 60.0, progress: Callable[[int, int], None] | None = None) -> PromImport:
    from gpu_audit.collect.engines import engine_metric_names

    if until <= since:
        raise PrometheusError("--since must be before --until")
    check_writable(out)
    names = list(DCGM) + sorted(engine_metric_names())
    chunk = step_s * MAX_POINTS
    starts = [since.timestamp() + k * chunk for k in range(math.ceil((until.timestamp() - since.timestamp()) / chunk))]
    total, done = len(names) * len(starts), 0
    asm = Assembler()
    queries = 0
    for name in names:
        selector = f'{{__name__="{name}"{"," + match if match else ""}}}'
        for a in starts:
            b = min(a + chunk - step_s, until.timestamp())
            body = _get(url, {"query": selector, "start": f"{a:.3f}", "end": f"{b:.3f}", "step": f"{step_s:g}"}, timeout_s)
            queries += 1
            for series in body["data"]["result"]:
                labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
                for t, v in series.get("values", []):
                    why = time_out_of_range(float(t))
                    if why:
                        raise PrometheusError(f"{url}: {name}: {why}")
                    asm.add(name, labels, float(t), float(v))
            done += 1
            if progress:
                progress(done, total)
    if not asm.dev:
        raise PrometheusError(f"no DCGM series in Prometheus at {url} between {since.isoformat()} and {until.isoformat()}"
                              + (f" matching {match}" if match else ""),
                              hint="check --since/--until (data older than the retention is gone) and --match")
    res = asm.write(out, step_s)
    res.queries = queries
    if not res.tally.rows:
        raise res.tally.nothing_stored(url)
    return res


def import_prometheus_text(paths: list[str], out: str, at: datetime | None = None, interval_s: float | None = None,
                           host: str | None = None) -> PromImport:
    """Saved exporter scrapes: each sample's own timestamp, else ``at``, else the file's mtime. ``host``
    names the host of series whose labels name none (an engine's /metrics dump)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as prom

    check_writable(out)
    if host is not None:
        from gpu_audit.store.layout import check_host

        check_host(host)
    asm = Assembler(host=host)
    ledger = ImportLedger(out, "prometheus-text", host or "")
    read: list[tuple[str, str, int, str]] = []  # (path, sha256, samples, time source) of each file read
    skipped: list[str] = []
    times: list[str] = []
    for path in paths:
        try:
            sha, why = ledger.already(path)
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError as e:
            raise PrometheusError(f"cannot read {path}: {e.strerror}") from None
        if why:
            skipped.append(why)
            continue
        when = at.timestamp() if at else os.path.getmtime(path)
        try:
            fams = list(om(text)) if text.rstrip().endswith("# EOF") else list(prom(text))
        except (ValueError, TypeError, IndexError) as e:
            raise PrometheusError(f"{_where(path, text, str(e))}: not Prometheus text or OpenMetrics: {_printable(str(e))}") from None
        n = own = 0
        first, last = math.inf, -math.inf  # the range of times read, for the summary
        for f in fams:
            for s in f.samples:
                ts = s.timestamp
                t = float(ts) if ts is not None and not hasattr(ts, "sec") else (ts.sec + ts.nsec / 1e9 if ts is not None else when)
                own += ts is not None
                why = time_out_of_range(t)
                if why:
                    raise PrometheusError(f"{path}: sample {_printable(s.name)}: {why}",
                                          hint="give --at with the time of the scrape" if ts is None else None)
                asm.add(s.name, dict(s.labels), t, float(s.value))
                first, last = min(first, t), max(last, t)
                n += 1
        span = ""
        if n:
            lo, hi = (datetime.fromtimestamp(x, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") for x in (first, last))
            span = f", {lo}" + (f" to {hi}" if hi != lo else "") + " UTC"
        source = ("the samples' own timestamps" if own == n else
                  f"--at {at.isoformat()}" if at else
                  f"the file's modification time {datetime.fromtimestamp(when, tz=timezone.utc):%Y-%m-%d %H:%M:%S} UTC (give --at to set it)")
        times.append(f"{path}: times from {source}{span}")
        read.append((path, sha, n, source))
    if not read and skipped:
        raise NothingImported(f"nothing imported: {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""),
                              hint="the store keeps each scrape's content once; importing it again adds nothing")
    if not asm.dev and not asm.engine_points:
        raise PrometheusError(f"no DCGM or inference-engine series in {', '.join(paths)}")
    total = sum(n for _, _, n, _ in read)
    if asm.rejected and total and asm.rejected > 0.05 * total:  # mostly refused: a wrong shape, not a glitch
        raise PrometheusError(f"{asm.rejected:,} of {total:,} samples fail a check (first: {_printable(asm.first_rejection, 160)}): "
                              "nothing imported", hint="an import stores nothing when over 5 % of its samples fail")
    res = asm.write(out, interval_s, ledger=(ledger, read))
    res.tally.skipped_files = skipped
    res.time_sources = times
    if not res.tally.rows:
        raise res.tally.nothing_stored(", ".join(paths))
    return res


def _where(path: str, text: str, message: str) -> str:
    """path:line of the line the parser quoted in its message, where it can be found."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and line.strip() in message:
            return f"{path}:{n}"
    return path


def _printable(message: str, limit: int = 80) -> str:
    """A parser message fit for one terminal line: no control bytes, at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"

