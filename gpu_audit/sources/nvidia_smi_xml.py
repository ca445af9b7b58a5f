"""Import ``nvidia-smi -q -x`` XML dumps (DTD v10 to v13): one document per point in time, or many
concatenated (what ``nvidia-smi -q -x -l 5 >> log.xml`` appends).

Per GPU: utilization (``gpu_util``, ``memory_util``), frame-buffer memory, power (``power_draw``
before v12, ``instant_power_draw``/``average_power_draw`` in ``gpu_power_readings`` after), power
limit, SM clocks, temperature, MIG mode. XML is the one nvidia-smi format that lists MIG devices:
each becomes a row of its own (``<GPU UUID>/GI-<id>``, as for DCGM) with its memory, its profile
(from its memory and SM count, against the GPU model's MIG profiles), and no utilization (nvidia-smi
gives none per instance). Processes go to the ``processes`` table. Time from ``<timestamp>``, read in
``--tz``. Missing elements and ``N/A`` are null, never zero.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone, tzinfo
from typing import Any

from gpu_audit.errors import GpuAuditError

NA = {"", "N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown Error", "Requested functionality has been deprecated"}
_NUM = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(%|MiB|GiB|KiB|W|MHz|C)?\s*$")
_MIB = {"MiB": 2**20, "GiB": 2**30, "KiB": 2**10, None: 2**20}
# SMs per MIG profile where two profiles share a memory size (3g and 4g): the SM count tells them apart.
_SMS = {"A100": {3: 42, 4: 56}, "A30": {1: 14, 2: 28, 4: 56}, "H100": {3: 60, 4: 64}, "H200": {3: 60, 4: 64}, "H20": {3: 60, 4: 64}}


class XmlError(GpuAuditError):
    pass


def is_xml(path: str) -> bool:
    """Whether the file is an nvidia-smi XML dump, by its content (not its name)."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"<?xml") or head.startswith(b"<nvidia_smi_log") or head.startswith(b"<!DOCTYPE nvidia_smi_log")


def documents(text: str) -> list[str]:
    """The ``<nvidia_smi_log>`` documents in a file (one dump, or many appended by a loop), found in
    one pass (a lazy regex rescans to the end from every unclosed start tag: quadratic)."""
    out, pos, start, end = [], 0, "<nvidia_smi_log", "</nvidia_smi_log>"
    while True:
        s = text.find(start, pos)
        while s >= 0 and s + len(start) < len(text) and (text[s + len(start)].isalnum() or text[s + len(start)] == "_"):
            s = text.find(start, s + 1)  # <nvidia_smi_logger>: not ours
        if s < 0:
            return out
        e = text.find(end, s)
        if e < 0:
            return out
        out.append(text[s:e + len(end)])
        pos = e + len(end)


def _text(el: ET.Element | None, path: str) -> str | None:
    x = el.find(path) if el is not None else None
    v = x.text.strip() if x is not None and x.text is not None else None
    return None if v is None or v in NA else v


def _num(el: ET.Element | None, path: str, kind: str = "float") -> Any:
    v = _text(el, path)
    m = _NUM.match(v) if v is not None else None
    if not m:
        return None
    x = float(m.group(1))
    if kind == "mem":
        return int(x * _MIB[m.group(2)])
    return int(x) if kind == "int" else x


def _when(doc: ET.Element, zone: tzinfo, where: str) -> float | None:
    raw = _text(doc, "timestamp")
    if raw is None:
        return None
    raw = re.sub(r"\s+", " ", raw)
    for fmt in ("%a %b %d %H:%M:%S %Y", "%Y/%m/%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=zone).timestamp()
        except ValueError:
            continue
    raise ValueError(f"{where}: cannot read <timestamp> {raw!r}")


def mig_profile(gpu_name: str, memory_bytes: int | None, sm_count: int | None) -> str | None:
    """The MIG profile of an instance, from its memory (and SM count where two profiles share it),
    against the GPU model's profiles in the catalog; None where it cannot be told."""
    from gpu_audit.catalog import find_model

    model = find_model(gpu_name or "")
    if model is None or not model.mig_profiles or not memory_bytes:
        return None
    mib = memory_bytes / 2**20
    close = [p for p in model.mig_profiles if abs(p.memory_mb - mib) <= 0.06 * p.memory_mb]
    if len(close) <= 1:
        return close[0].name if close else None
    sms = next((v for k, v in _SMS.items() if k in model.key), None)
    if sms and sm_count:
        return min(close, key=lambda p: abs(sms.get(p.slices, 1e9) - sm_count)).name
    return None


def parse(text: str, path: str, zone: tzinfo, at: float | None = None,
          step: float | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample rows (with ``ts`` as epoch seconds) and process rows of every document in ``text``. A
    document without ``<timestamp>`` takes ``at`` (``--at``), the k-th such one ``at`` + k x ``step``."""
    docs = documents(text)
    if not docs:
        raise XmlError(f"{path}: no <nvidia_smi_log> document", hint="save it with nvidia-smi -q -x")
    undated = 0
    samples, procs = [], []
    for k, raw in enumerate(docs, 1):
        where = f"{path} (document {k})"
        try:
            doc = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", raw))
        except ET.ParseError as e:
            raise XmlError(f"{where}: not well-formed XML: {e}") from None
        t = _when(doc, zone, where)
        if t is None:
            if at is None:
                raise XmlError(f"{where}: no <timestamp>", hint="give --at with the time the dump was taken")
            if undated and not step:
                raise XmlError(f"{where}: a second dump without <timestamp>", hint="give --interval with --at (the loop's interval)")
            t = at + undated * (step or 0.0)
            undated += 1
        for gpu in doc.findall("gpu"):
            uuid = _text(gpu, "uuid") or f"nvidia-smi:pci:{gpu.get('id')}"
            name = _text(gpu, "product_name")
            power = next((v for v in (_num(gpu, "gpu_power_readings/instant_power_draw"), _num(gpu, "gpu_power_readings/power_draw"),
                                      _num(gpu, "power_readings/power_draw"), _num(gpu, "gpu_power_readings/average_power_draw"))
                          if v is not None), None)
            limit = next((v for v in (_num(gpu, "gpu_power_readings/current_power_limit"), _num(gpu, "power_readings/power_limit"),
                                      _num(gpu, "power_readings/enforced_power_limit")) if v is not None), None)
            mig_on = (_text(gpu, "mig_mode/current_mig") or "").lower() == "enabled"
            util = _num(gpu, "utilization/gpu_util")
            samples.append({"ts": t, "uuid": uuid, "name": name, "index": _num(gpu, "minor_number", "int"),
                            "util_gpu_pct": util if util is not None and 0 <= util <= 100 else None,
                            "util_mem_pct": _num(gpu, "utilization/memory_util"),
                            "mem_used_bytes": _num(gpu, "fb_memory_usage/used", "mem"),
                            "mem_total_bytes": _num(gpu, "fb_memory_usage/total", "mem"),
                            "power_w": power, "power_limit_w": limit,
                            "sm_clock_mhz": _num(gpu, "clocks/sm_clock", "int"), "sm_clock_max_mhz": _num(gpu, "max_clocks/sm_clock", "int"),
                            "temp_c": _num(gpu, "temperature/gpu_temp", "int"), "mig_mode": mig_on if mig_on else None})
            gi_uuid = {}
            for mig in gpu.findall("mig_devices/mig_device") if mig_on else []:
                gi = _text(mig, "gpu_instance_id")
                if gi is None:
                    continue
                total = _num(mig, "fb_memory_usage/total", "mem")
                sms = _num(mig, "device_attributes/shared/multiprocessor_count", "int")
                gi_uuid[gi] = f"{uuid}/GI-{gi}"
                samples.append({"ts": t, "uuid": gi_uuid[gi], "parent_uuid": uuid, "name": name, "mig_profile": mig_profile(name, total, sms),
                                "mem_used_bytes": _num(mig, "fb_memory_usage/used", "mem"), "mem_total_bytes": total})
            for p in gpu.findall("processes/process_info"):
                pid = _num(p, "pid", "int")
                if pid is None:
                    continue
                gi = _text(p, "gpu_instance_id")
                procs.append({"ts": t, "uuid": gi_uuid.get(gi, uuid) if gi else uuid, "pid": pid, "name": _text(p, "process_name"),
                              "type": _text(p, "type"), "used_mem_bytes": _num(p, "used_memory", "mem")})
    return samples, procs


def ts_utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)
