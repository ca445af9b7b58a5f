"""Scrapes that never die (issue 20): whatever an endpoint answers, each scrape is a row (an error row
when it fails), counted in the summary; no endpoint stops the collector or its scrape thread."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from conftest import fixed_start, read_table
from gpu_audit.collect.engines import Scraper, scrape_guarded

ANSWERS = {
    "garbage-status": b"HELLO THERE\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "binary": b"\x00\xff\x13\x37" * 1000,
}


class RawServer(threading.Thread):
    """A TCP server on 127.0.0.1 that answers every connection with fixed bytes, or trickles a header
    line one byte every 0.1 s (``trickle``), until stopped. Bounded: it stops itself after 60 s."""

    def __init__(self, answer: bytes | None = None, trickle: bool = False) -> None:
        super().__init__(daemon=True)
        self.answer, self.trickle = answer, trickle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"
        self.stopped = threading.Event()
        self.until = time.monotonic() + 60

    def run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.until:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.trickle:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stopped.is_set() and time.monotonic() < self.until:
                    conn.sendall(b"X")  # a header that never ends
                    time.sleep(0.1)
            else:
                conn.sendall(self.answer or b"")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(**kw):
        s = RawServer(**kw)
        s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("kind", sorted(ANSWERS))
def test_any_answer_is_an_error_row(server, kind):
    srv = server(answer=ANSWERS[kind])
    (row,) = scrape_guarded(srv.url, 1.0)
    assert row["error"].startswith("scrape failed") or "metrics" in row["error"]


def test_a_header_trickling_endpoint_times_out_within_the_deadline(server):
    srv = server(trickle=True)
    t0 = time.monotonic()
    (row,) = scrape_guarded(srv.url, 0.5)
    assert time.monotonic() - t0 < 1.5 and "no complete answer within 0.5 s" in row["error"]


def test_the_scrape_thread_survives_every_answer_and_counts_each_failure(server):
    srv = server(answer=ANSWERS["garbage-status"])
    sc = Scraper([srv.url], 0.3, virtual=False)
    sc.start(time.time)
    time.sleep(1.6)
    rows = sc.take(time.time())
    sc.stop()
    assert len(rows) >= 3 and all("error" in r for _, r in rows)
    assert sc.endpoints[0].errors == sc.endpoints[0].scrapes >= 3


def test_a_garbage_endpoint_never_stops_a_simulated_collector(server, tmp_path):
    """--simulate with a garbage endpoint: the collector finishes, every GPU row is stored, and each
    tick's failed scrape is an error row, counted."""
    from gpu_audit.collect.run import collect

    srv = server(answer=ANSWERS["bad-chunk-size"])
    _, stats = collect(str(tmp_path / "s"), interval_s=60, duration_s=600, simulate=fixed_start("h100-inference.toml", tmp_path),
                    handle_signals=False, scrape=(srv.url,))
    assert stats.scrape_errors >= 10
    eng = read_table(tmp_path / "s", "engine").to_pylist()
    assert len(eng) >= 10 and all(r["error"] for r in eng)
    assert read_table(tmp_path / "s", "samples").num_rows > 0


def test_a_large_metrics_page_gives_the_same_rows_parsed_from_its_engine_families_only():
    """A vLLM page padded with 300 kB of other families: the same engine rows as the page alone (only the
    engine families are parsed above 256 KiB; benchmarks: a 5 MiB page 2.6 s -> 0.17 s of CPU)."""
    import glob as _glob

    from gpu_audit.collect.engines import PREFILTER_BYTES, parse_engine

    pages = sorted(_glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real", "engine_metrics", "*vllm*.prom")))
    page = open(pages[0]).read() if pages else (
        '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 3\n'
        '# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{model_name="m"} 1000\n'
        '# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name="m"} 5000\n')
    pad = "".join(f'# HELP other_{i} x\n# TYPE other_{i} gauge\nother_{i}{{a="{"z" * 40}"}} {i}\n' for i in range(5000))
    assert len(pad + page) > PREFILTER_BYTES
    assert parse_engine(pad + page) == parse_engine(page)
