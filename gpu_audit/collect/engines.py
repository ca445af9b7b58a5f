"""Scrape inference engines' Prometheus ``/metrics`` into the ``engine`` table.

The text is parsed by ``prometheus_client`` (Prometheus text format and OpenMetrics: ``# EOF``,
``_created``, scientific notation, escaped label values, histograms and summaries), never by hand.
The engine is detected from metric names (vLLM V1 and V0, SGLang, TGI, TensorRT-LLM ``trtllm-serve``,
NIM) and each canonical field is read from that engine's name for it (shared/reference engines.md,
section 1.8). Series are grouped by model (``model_name`` or ``model``) and aggregated:

- counters and request gauges are summed over the other labels (vLLM's ``engine`` label is one
  data-parallel engine core each: summing is right);
- SGLang repeats every series per tensor/pipeline/expert rank: only rank 0 is kept, so nothing is
  counted twice;
- ratios (KV-cache use, hit rates) are averaged, capacities summed.

Counters are stored as scraped; resets (a restarted server) are handled in the analysis.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

RANK_LABELS = ("tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank")

# engine -> canonical field -> (sample names in order of preference, scale, how to aggregate)
SUM, MEAN = "sum", "mean"
MAP: dict[str, dict[str, tuple[tuple[str, ...], float, str]]] = {
    "vllm": {
        "prompt_tokens_total": (("vllm:prompt_tokens_total",), 1, SUM),
        "generation_tokens_total": (("vllm:generation_tokens_total",), 1, SUM),
        "preemptions_total": (("vllm:num_preemptions_total",), 1, SUM),
        "prefix_cache_queries_total": (("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"), 1, SUM),
        "prefix_cache_hits_total": (("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"), 1, SUM),
        "requests_total": (("vllm:request_success_total",), 1, SUM),
        "requests_running": (("vllm:num_requests_running",), 1, SUM),
        "requests_waiting": (("vllm:num_requests_waiting",), 1, SUM),
        "kv_cache_usage_pct": (("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), 100, MEAN),
        "prefix_cache_hit_pct": (("vllm:gpu_prefix_cache_hit_rate",), 100, MEAN),
    },
    "sglang": {
        "prompt_tokens_total": (("sglang:prompt_tokens_total",), 1, SUM),
        "generation_tokens_total": (("sglang:generation_tokens_total",), 1, SUM),
        "preemptions_total": (("sglang:num_retracted_reqs_total",), 1, SUM),
        "requests_running": (("sglang:num_running_reqs",), 1, SUM),
        "requests_waiting": (("sglang:num_queue_reqs",), 1, SUM),
        "kv_cache_usage_pct": (("sglang:token_usage",), 100, MEAN),
        "kv_capacity_tokens": (("sglang:max_total_num_tokens",), 1, SUM),
        "prefix_cache_hit_pct": (("sglang:cache_hit_rate",), 100, MEAN),
    },
    "tgi": {
        "prompt_tokens_total": (("tgi_request_input_length_sum",), 1, SUM),
        "generation_tokens_total": (("tgi_request_generated_tokens_sum",), 1, SUM),
        "requests_total": (("tgi_request_success", "tgi_request_success_total", "tgi_request_count", "tgi_request_count_total"), 1, SUM),
        "requests_running": (("tgi_batch_current_size",), 1, SUM),
        "requests_waiting": (("tgi_queue_size",), 1, SUM),
        "kv_capacity_tokens": (("tgi_batch_max_total_tokens",), 1, SUM),
    },
    "trtllm": {
        "prompt_tokens_total": (("trtllm_prompt_tokens_total",), 1, SUM),
        "generation_tokens_total": (("trtllm_generation_tokens_total",), 1, SUM),
        "requests_total": (("trtllm_request_success_total",), 1, SUM),
        "requests_running": (("trtllm_num_requests_running",), 1, SUM),
        "requests_waiting": (("trtllm_num_requests_waiting",), 1, SUM),
        "kv_cache_usage_pct": (("trtllm_kv_cache_utilization",), 100, MEAN),
        "prefix_cache_hit_pct": (("trtllm_kv_cache_hit_rate",), 100, MEAN),
    },
    "nim": {
        "prompt_tokens_total": (("prompt_tokens_total",), 1, SUM),
        "generation_tokens_total": (("generation_tokens_total",), 1, SUM),
        "requests_total": (("request_finish_total", "request_success_total"), 1, SUM),
        "requests_running": (("num_requests_running",), 1, SUM),
        "requests_waiting": (("num_requests_waiting",), 1, SUM),
        "kv_cache_usage_pct": (("gpu_cache_usage_perc",), 100, MEAN),
    },
}
FIELDS = ("prompt_tokens_total", "generation_tokens_total", "preemptions_total", "prefix_cache_queries_total",
          "prefix_cache_hits_total", "requests_total", "requests_running", "requests_waiting", "kv_cache_usage_pct",
          "kv_capacity_tokens", "prefix_cache_hit_pct")


class ParseError(Exception):
    pass


PREFILTER_BYTES = 256 * 1024  # above this, lines of families no engine mapping reads are dropped before parsing


def _engine_lines(text: str) -> str:
    """The lines of a large exposition that can matter: samples and comments of families an engine
    mapping reads (a big /metrics full of other families, 5 MB: parsed in 2.6 s of CPU before,
    every scrape). Comments of other families and their samples go unparsed."""
    names = _ENGINE_NAMES or _engine_names()
    keep = []
    for line in text.splitlines():
        if not line or line.startswith("# EOF"):
            keep.append(line)
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[2] in names:
                keep.append(line)
            continue
        cut = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
        if line[:cut] in names:
            keep.append(line)
    return "\n".join(keep) + "\n"


_ENGINE_NAMES: set[str] = set()


def _engine_names() -> set[str]:
    """Every family an engine mapping reads, with the suffixes its samples carry."""
    base = engine_metric_names()
    fams = base | {n[: -len("_total")] for n in base if n.endswith("_total")}
    _ENGINE_NAMES.update(fams | {f + sfx for f in fams for sfx in ("_total", "_sum", "_count", "_bucket", "_created", "_info")})
    return _ENGINE_NAMES


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text or OpenMetrics exposition (of the engine families only, for
    a large one)."""
    from prometheus_client.parser import text_string_to_metric_families

    if len(text) > PREFILTER_BYTES:
        text = _engine_lines(text)

    try:
        if text.rstrip().endswith("# EOF"):
            from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

            fams = list(om(text))
        else:
            fams = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as e:
        raise ParseError(f"not Prometheus text: {e}") from None
    return [(s.name, dict(s.labels), float(s.value)) for f in fams for s in f.samples]


def detect(names: set[str]) -> str | None:
    if any(n.startswith("vllm:") for n in names):
        return "vllm"
    if any(n.startswith("sglang:") for n in names):
        return "sglang"
    if any(n.startswith("trtllm_") for n in names):
        return "trtllm"
    if any(n.startswith("tgi_") for n in names):
        return "tgi"
    if "generation_tokens_total" in names or "num_requests_running" in names:
        return "nim"
    return None


def parse_engine(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(engine, one row per model with the canonical fields) from a /metrics text."""
    return aggregate(_samples(text))


def engine_metric_names() -> set[str]:
    """Every metric name any engine mapping reads (what a Prometheus import asks for)."""
    return {n for m in MAP.values() for names, _, _ in m.values() for n in names} | {"vllm:cache_config_info"}


def aggregate(samples: list[tuple[str, dict[str, str], float]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(engine, one row per model) from the samples of one endpoint at one time."""
    samples = [s for s in samples if not s[0].endswith("_created")]
    engine = detect({n for n, _, _ in samples})
    if engine is None:
        return None, []
    samples = [s for s in samples if all(s[1].get(r, "0") == "0" for r in RANK_LABELS)]
    mapped = {n for names, _, _ in MAP[engine].values() for n in names}
    models: dict[str | None, dict[str, Any]] = {}
    for name, labels, value in samples:
        if name in mapped:
            models.setdefault(labels.get("model_name") or labels.get("model"), {})
    if not models:
        models[None] = {}
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    rows = []
    for model in models:
        row: dict[str, Any] = {"engine": engine, "model": model}
        for fld, (names, scale, how) in MAP[engine].items():
            for n in names:
                vals = [v for lab, v in by_name.get(n, []) if (lab.get("model_name") or lab.get("model")) == model
                        and v == v and abs(v) != float("inf")]
                if vals:
                    agg = sum(vals) if how == SUM else sum(vals) / len(vals)
                    row[fld] = agg * scale
                    break
        if engine == "vllm":  # KV capacity in tokens: block_size x num_gpu_blocks from cache_config_info
            for lab, _ in by_name.get("vllm:cache_config_info", []):
                try:
                    row["kv_capacity_tokens"] = float(lab["block_size"]) * float(lab["num_gpu_blocks"])
                except (KeyError, ValueError):
                    pass
        rows.append(row)
    return engine, rows


@dataclass
class Endpoint:
    url: str
    timeout_s: float
    errors: int = 0
    scrapes: int = 0


MAX_BODY = 8 * 2**20


def fetch(url: str, timeout_s: float) -> str:
    """The body of ``url`` within a total deadline of ``timeout_s``: the socket timeout alone restarts
    with every byte, so an endpoint that trickles one byte every 0.2 s would never time out."""
    import time

    deadline = time.monotonic() + timeout_s
    req = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - the user's own endpoint
        chunks, size = [], 0
        while size < MAX_BODY:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {timeout_s:g} s")
            chunk = r.read1(min(65536, MAX_BODY - size)) if hasattr(r, "read1") else r.read(min(65536, MAX_BODY - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")


def scrape_once(url: str, timeout_s: float) -> list[dict[str, Any]]:
    """Rows for the engine table from one scrape; a failed scrape is one row with ``error``, whatever
    the endpoint answers (a garbage status line, a bad chunk size, a 100 kB header: http.client raises
    HTTPException and ValueError for those, not OSError)."""
    try:
        engine, rows = parse_engine(fetch(url, timeout_s))
    except urllib.error.HTTPError as e:
        return [{"endpoint": url, "error": f"scrape failed: HTTP {e.code} {_short(e.reason)}"}]
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return [{"endpoint": url, "error": f"scrape failed: {_short(getattr(e, 'reason', e))}"}]
    except ParseError as e:
        return [{"endpoint": url, "error": _short(e)}]
    except Exception as e:  # noqa: BLE001 - any answer of a user's endpoint is an error row, never a dead thread
        return [{"endpoint": url, "error": f"scrape failed: {type(e).__name__}: {_short(e)}"}]
    if engine is None:
        return [{"endpoint": url, "error": "no inference-engine metrics recognised (vLLM, SGLang, TGI, TensorRT-LLM, NIM)"}]
    return [{**r, "endpoint": url} for r in rows]


def _short(e: object, limit: int = 200) -> str:
    text = "".join(c if c.isprintable() else "?" for c in str(e))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrape_guarded(url: str, timeout_s: float) -> list[dict[str, Any]]:
    """scrape_once with a total deadline that holds even while the answer's headers trickle in (the
    socket timeout restarts with every byte, and urlopen reads the headers itself): the scrape runs in
    a worker thread, and past the deadline it is an error row; the worker is left to end on its own."""
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(rows=scrape_once(url, timeout_s)), daemon=True, name=f"fetch {url}")
    worker.start()
    worker.join(timeout_s + 0.5)
    if "rows" in box:
        return box["rows"]
    return [{"endpoint": url, "error": f"scrape failed: no complete answer within {timeout_s:g} s"}]


class Scraper:
    """Scrapes endpoints without ever delaying the GPU samples.

    On the wall clock each endpoint has a thread that scrapes once per interval with its own short
    timeout; the sampler takes whatever finished since the last tick. On a virtual clock (simulated
    days in seconds) the scrape runs inline at each tick instead, stamped with the tick's time.
    """

    def __init__(self, urls: list[str], interval_s: float, virtual: bool) -> None:
        self.timeout_s = max(0.2, min(2.0, interval_s / 2))
        self.endpoints = [Endpoint(u, self.timeout_s) for u in urls]
        self.interval_s = interval_s
        self.virtual = virtual
        self._lock = threading.Lock()
        self._ready: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, now: Callable[[], float]) -> None:
        if self.virtual:
            return
        for ep in self.endpoints:
            t = threading.Thread(target=self._loop, args=(ep, now), daemon=True, name=f"scrape {ep.url}")
            t.start()
            self._threads.append(t)

    def _loop(self, ep: Endpoint, now: Callable[[], float]) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                rows = scrape_guarded(ep.url, ep.timeout_s)
            except Exception as e:  # noqa: BLE001 - the thread outlives any endpoint
                rows = [{"endpoint": ep.url, "error": f"scrape failed: {type(e).__name__}: {_short(e)}"}]
            ts = now()
            with self._lock:
                ep.scrapes += 1
                ep.errors += any("error" in r for r in rows)
                self._ready.extend((ts, r) for r in rows)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))

    def take(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        """Rows scraped since the last call (on a virtual clock: scraped now)."""
        if self.virtual:
            out = []
            for ep in self.endpoints:
                rows = scrape_guarded(ep.url, ep.timeout_s)
                ep.scrapes += 1
                ep.errors += any("error" in r for r in rows)
                out.extend((now, r) for r in rows)
            return out
        with self._lock:
            out, self._ready = self._ready, []
        return out

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 1)
