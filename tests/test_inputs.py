"""Every telemetry and token log a real fleet has (docs/import.md): nvidia-smi XML, epoch and
time-less CSV logs, a BOM, tables of samples from elsewhere, every usage shape, engine dumps with
--host, DCGM MIG series without a model name. Fixtures are our own (tests/assets); the real files in
../shared import where present."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ASSETS, read_table, shared_or_skip
from gpu_audit.analyze.findings import ReportRequest, build

PRICING = str(ASSETS / "pricing.toml")
T0 = datetime(2026, 11, 28, tzinfo=timezone.utc)


def imp(run_cli, store, *args):
    return run_cli("import", "nvidia-smi", *args, "--host", "n1", "--tz", "UTC", "--out", store)


# -- nvidia-smi XML -------------------------------------------------------------------------------

def test_xml_dumps_concatenated_by_a_loop(run_cli, tmp_path):
    store = str(tmp_path / "s")
    code, out, err = imp(run_cli, store, str(ASSETS / "nvsmi_loop.xml"), "--interval", "60s")
    assert code == 0, err
    assert "imported 5 rows (4 GPU series)" in out and "nvidia-smi XML <timestamp>" in out
    rows = {(r["uuid"], r["ts"].isoformat()): r for r in read_table(store, "samples").to_pylist()}
    l4 = rows[("GPU-66666666-7777-8888-9999-000000000000", "2026-11-28T00:00:00+00:00")]
    assert (l4["util_gpu_pct"], l4["mem_used_bytes"], l4["power_w"], l4["power_limit_w"], l4["temp_c"]) == (40, 1024 * 2**20, 31.25, 72, 45)
    later = rows[("GPU-66666666-7777-8888-9999-000000000000", "2026-11-28T00:01:00+00:00")]
    assert later["util_gpu_pct"] == 60 and later["power_w"] is None and later["temp_c"] is None  # missing is null, never zero
    parent = rows[("GPU-11111111-2222-3333-4444-555555555555", "2026-11-28T00:00:00+00:00")]
    assert parent["mig_mode"] is True and parent["util_gpu_pct"] is None and parent["power_w"] == 250.5
    big = rows[("GPU-11111111-2222-3333-4444-555555555555/GI-1", "2026-11-28T00:00:00+00:00")]
    small = rows[("GPU-11111111-2222-3333-4444-555555555555/GI-9", "2026-11-28T00:00:00+00:00")]
    assert (big["mig_profile"], small["mig_profile"]) == ("3g.40gb", "1g.10gb")  # 42 SMs tell 3g from 4g
    assert big["parent_uuid"] == parent["uuid"] and big["mem_used_bytes"] == 30000 * 2**20
    assert all(r["source"] == "nvidia-smi-xml" for r in rows.values())
    (p,) = read_table(store, "processes").to_pylist()
    assert (p["pid"], p["name"], p["uuid"], p["used_mem_bytes"]) == (4242, "python3", big["uuid"], 29900 * 2**20)
    # the MIG instances are visible in XML: the 3 free slices of 7 are unallocated, not unseen
    f = build(ReportRequest([store], PRICING))
    d = next(x for x in f["devices"] if x["uuid"] == parent["uuid"])
    assert d["mig_instances_visible"] is True and d["unallocated_usd"] == pytest.approx(7.0 * 3 / 7 / 60)


@pytest.mark.parametrize("name", ["netdata_a100-sxm4-40gb_mig.xml", "netdata_rtx-4090-driver-535.xml", "telegraf_rtx-4000-sff-ada-v13.xml"])
def test_the_real_xml_dumps_import(run_cli, tmp_path, name):
    real = shared_or_skip(f"data/real/nvidia_smi_xml/{name}")
    code, out, err = imp(run_cli, str(tmp_path / "s"), str(real), "--interval", "60s")
    assert code == 0 and "imported" in out, err
    rows = read_table(tmp_path / "s", "samples").to_pylist()
    assert rows and all(r["name"] for r in rows)
    if "mig" in name:
        assert sorted(r["mig_profile"] for r in rows if r["parent_uuid"]) == ["3g.20gb", "3g.20gb"]


# -- CSV times ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stamp,said", [
    (lambda t: f"{int(t.timestamp())}", "epoch seconds"),
    (lambda t: f"{int(t.timestamp() * 1000)}", "epoch milliseconds"),
    (lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), "ISO 8601"),
])
def test_epoch_and_iso_times(run_cli, tmp_path, stamp, said):
    p = tmp_path / "a.csv"
    p.write_text("".join(f"{stamp(T0 + timedelta(minutes=k))}, GPU-a, 50\n" for k in range(60)))
    store = str(tmp_path / "s")
    code, out, err = imp(run_cli, store, str(p), "--fields", "timestamp,uuid,utilization.gpu")
    assert code == 0 and "imported 60 rows" in out and said in out, err
    f = build(ReportRequest([store], PRICING))
    assert f["window"]["start"] == "2026-11-27T23:59:00Z" and f["devices"][0]["gpu_hours"] == pytest.approx(1.0)


def test_a_one_shot_query_without_a_time_column_takes_at(run_cli, tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("name, uuid, utilization.gpu [%], memory.used [MiB]\nNVIDIA H100 80GB HBM3, GPU-a, 70 %, 1000 MiB\n")
    store = str(tmp_path / "s")
    code, _, err = imp(run_cli, store, str(p))
    assert code == 2 and "no timestamp field" in err and "--at" in err
    code, out, err = imp(run_cli, store, str(p), "--at", "2026-11-28T00:00:00Z", "--interval", "60s")
    assert code == 0 and "imported 1 rows" in out, err
    (r,) = read_table(store, "samples").to_pylist()
    assert r["ts"] == T0 and r["interval_s"] == 60 and r["util_gpu_pct"] == 70


def test_a_byte_order_mark_is_not_part_of_the_header(run_cli, tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbftimestamp, uuid, utilization.gpu [%]\n2026/11/28 00:00:00.000, GPU-a, 50 %\n"
                  b"2026/11/28 00:01:00.000, GPU-a, 50 %\n")
    code, out, err = imp(run_cli, str(tmp_path / "s"), str(p))
    assert code == 0 and "imported 2 rows" in out, err


# -- tables of samples ----------------------------------------------------------------------------

def test_long_format_files_joined_on_time_and_device(run_cli, tmp_path):
    """A per-pod trace in long format: duty cycle (0-1) in one file, memory bytes in another, columns
    in different orders. Pod p1: 60 one-minute samples at 0.5 (50 %), 2 GiB."""
    duty, mem = tmp_path / "duty.csv", tmp_path / "mem.csv"
    t = [T0.timestamp() + 60 * k for k in range(60)]
    duty.write_text("value,timestamp,pod\n" + "".join(f"0.5,{x},p1\n" for x in t))
    mem.write_text("timestamp,value,pod\n" + "".join(f"{x},{2 * 2**30},p1\n" for x in t))
    store = str(tmp_path / "s")
    code, out, err = run_cli("import", "table", str(duty), str(mem), "--map", "util_gpu_pct=duty.csv:value",
                             "--map", "mem_used_bytes=mem.csv:value", "--map", "ts=timestamp", "--map", "uuid=pod",
                             "--host", "trace", "--gpu-name", "NVIDIA H100 80GB HBM3", "--util-unit", "ratio", "--out", store)
    assert code == 0 and "imported 60 rows of 1 devices" in out, err
    rows = read_table(store, "samples").to_pylist()
    assert {(r["util_gpu_pct"], r["mem_used_bytes"], r["source"], r["host"]) for r in rows} == {(50.0, 2 * 2**30, "table", "trace")}
    f = build(ReportRequest([store], PRICING))
    (d,) = f["devices"]
    assert d["spend_usd"] == pytest.approx(3.0) and d["waste_usd"] == pytest.approx(1.5)
    code, _, err = run_cli("import", "table", str(duty), str(mem), "--map", "util_gpu_pct=duty.csv:value",
                           "--map", "mem_used_bytes=mem.csv:value", "--map", "ts=timestamp", "--map", "uuid=pod",
                           "--host", "trace", "--util-unit", "ratio", "--out", store)
    assert code == 2 and "the same content as" in err and "skipped" in err  # idempotent like every import


def test_table_mapping_mistakes_are_one_line(run_cli, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time,gpu,util\n1764288000,g,50\n")
    for args, msg in ((["--map", "util_gpu_pct=util"], "no column mapped to ts and uuid"),
                      (["--map", "bogus=util", "--map", "ts=time", "--map", "uuid=gpu"], "not a samples column"),
                      (["--map", "util_gpu_pct=util", "--map", "ts=time", "--map", "uuid=gpu"], "no host"),
                      (["--map", "ts=time", "--map", "uuid=gpu", "--host", "h", "--tz", "Mars/Base"], "unknown time zone")):
        code, _, err = run_cli("import", "table", str(p), *args, "--out", str(tmp_path / "s"))
        assert code == 2 and msg in err and "Traceback" not in err


def test_the_real_alibaba_trace_imports(run_cli, tmp_path):
    duty = shared_or_skip("data/real/traces/alibaba_v2026genai_pod_gpu_duty_cycle_first2k.csv")
    mem = shared_or_skip("data/real/traces/alibaba_v2026genai_pod_gpu_memory_used_bytes_first2k.csv")
    code, out, err = run_cli("import", "table", str(duty), str(mem), "--map", f"util_gpu_pct={duty.name}:value",
                             "--map", f"mem_used_bytes={mem.name}:value", "--map", "ts=timestamp_anon", "--map", "uuid=container_ip",
                             "--host", "alibaba", "--out", str(tmp_path / "s"))
    assert code == 0 and "imported" in out, err


# -- token usage shapes ---------------------------------------------------------------------------

def _store(tmp_path):
    from storefix import series, write_samples

    store = str(tmp_path / "s")
    write_samples(store, series("h", "GPU-a", "NVIDIA H100 80GB HBM3", 0, 600, [50] * 6))
    return store


def test_every_usage_shape_with_cached_and_reasoning_tokens(tmp_path):
    t = T0.timestamp()
    recs = [
        {"created": t + 1, "model": "o3", "host": "h", "usage": {"prompt_tokens": 5000, "completion_tokens": 300,
         "prompt_tokens_details": {"cached_tokens": 4012}, "completion_tokens_details": {"reasoning_tokens": 256}}},
        {"created": t + 2, "model": "o3", "host": "h", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}}]},
        {"created": t + 3, "model": "o3", "host": "h", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
        {"created": t + 4, "model": "deepseek", "host": "h", "usage": {"prompt_tokens": 100, "completion_tokens": 10,
         "prompt_cache_hit_tokens": 80, "prompt_cache_miss_tokens": 20}},
        {"timestamp": t + 5, "model": "claude", "host": "h", "usage": {"input_tokens": 10, "output_tokens": 20,
         "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0}},
        {"timestamp": t + 6, "host": "h", "attributes": {"gen_ai.request.model": "otel", "gen_ai.usage.input_tokens": 7,
                                                         "gen_ai.usage.output_tokens": 3}},
    ]
    log = tmp_path / "t.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    f = build(ReportRequest([_store(tmp_path)], PRICING, [str(log)]))
    m = {x["model"]: x for x in f["models"]}
    assert (m["o3"]["prompt_tokens"], m["o3"]["completion_tokens"], m["o3"]["cached_tokens"], m["o3"]["reasoning_tokens"]) == (6000, 400, 4012, 256)
    assert (m["deepseek"]["cached_tokens"], m["claude"]["prompt_tokens"], m["claude"]["cached_tokens"]) == (80, 100, 90)
    assert m["claude"]["cache_hit_pct"] == pytest.approx(90.0)
    assert (m["otel"]["prompt_tokens"], m["otel"]["completion_tokens"], m["otel"]["cached_tokens"]) == (7, 3, None)
    assert f["data_quality"]["streamed_chunks_without_usage"] == 1 and f["data_quality"]["rejected_token_records"]["count"] == 0
    # shown per model in the terminal and the HTML
    import io

    from rich.console import Console

    from gpu_audit.report.html import render_html
    from gpu_audit.report.terminal import render

    buf = io.StringIO()
    render(f, Console(file=buf, width=200))
    assert "4,012" in buf.getvalue() and "256" in buf.getvalue()
    html = render_html(f)
    assert ">4,012<" in html and ">256<" in html


def test_measured_cache_hits_silence_the_prefix_caching_advice():
    from findfix import device, findings, served_model
    from gpu_audit.recommend.base import RecommendSettings
    from gpu_audit.recommend.serving import token_economics

    d = device("inf", "GPU-h", "NVIDIA H100 80GB HBM3", 3.0, [20] * 24, 70)
    long = dict(prompt_p50=5000.0, completion_p50=100.0, completion_p99=300.0)
    hit = served_model("rag", ["inf"], cache_hit_pct=80.2, **long)
    miss = served_model("rag2", ["inf"], cache_hit_pct=5.0, **long)
    recs = token_economics(findings([d], 24, [hit, miss]), RecommendSettings())
    levers = {(r.targets[0]["model"], r.targets[0].get("lever")): r for r in recs}
    assert ("rag", "prefix_cache") not in levers
    r = levers[("rag2", "prefix_cache")]
    assert r.evidence["prefix_cache_hit_pct"] == 5.0 and "5% of prompt tokens hit the cache now" in r.action


def test_the_real_openai_usage_shapes_read(tmp_path):
    import yaml

    src = shared_or_skip("data/real/openai_usage/pydanticai_openai_prompt_cache_multi.yaml")
    doc = yaml.safe_load(src.read_text())
    bodies = []

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("usage"), dict) and "prompt_tokens" in x["usage"]:
                bodies.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str) and x.lstrip().startswith("{"):
            try:
                walk(json.loads(x))
            except ValueError:
                pass

    walk(doc)
    assert bodies
    log = tmp_path / "t.jsonl"
    log.write_text("".join(json.dumps({**b, "created": T0.timestamp() + 60 + i, "host": "h"}) + "\n" for i, b in enumerate(bodies)))
    f = build(ReportRequest([_store(tmp_path)], PRICING, [str(log)]))
    assert any((m["cached_tokens"] or 0) > 0 for m in f["models"])


# -- engine dumps and DCGM names ------------------------------------------------------------------

def test_an_engine_dump_with_host_joins_the_gpu_samples(run_cli, tmp_path):
    store = _store(tmp_path)
    dump = tmp_path / "vllm.prom"
    dump.write_text((ASSETS / "vllm_metrics.tmpl").read_text().replace("{running}", "4").replace("{prompt}", "1000")
                    .replace("{gen}", "500"))
    code, out, err = run_cli("import", "prometheus-text", str(dump), "--out", store, "--at", "2026-11-28T00:10:00Z", "--host", "h")
    assert code == 0 and "1 engine rows" in out and "match no GPU samples" not in err, err
    rows = read_table(store, "engine").to_pylist()
    assert {r["host"] for r in rows} == {"h"} and {r["source"] for r in rows} == {"import"}
    code, _, err = run_cli("import", "prometheus-text", str(dump), "--out", store, "--at", "2026-11-28T00:20:00Z", "--host", "elsewhere")
    assert code == 0 and "match no GPU samples" in err


MIG_NO_NAME = '''DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-p",Hostname="k8s-1"} 0.5
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-p",GPU_I_PROFILE="1g.5gb",GPU_I_ID="3",Hostname="k8s-1"} 0.9
'''


def test_dcgm_mig_series_without_a_model_name_are_named_from_the_profile(run_cli, tmp_path):
    p = tmp_path / "m.prom"
    p.write_text(MIG_NO_NAME)
    store = str(tmp_path / "s")
    assert run_cli("import", "prometheus-text", str(p), "--out", store, "--at", "2026-11-28T00:00:00Z", "--interval", "30s")[0] == 0
    names = {r["uuid"]: r["name"] for r in read_table(store, "samples").to_pylist()}
    assert names == {"GPU-p": "NVIDIA A100-SXM4-40GB", "GPU-p/GI-3": "NVIDIA A100-SXM4-40GB"}  # 1g.5gb: only the A100 40GB


def test_a_made_up_device_id_is_labelled_by_what_it_names():
    from gpu_audit.fmt import short_id

    assert short_id("nvidia-smi:index:0") == "index 0" and short_id("GPU-1234567890ab") == "7890ab"
    assert short_id("GPU-1234567890ab/GI-3") == "7890ab/GI-3"


def test_an_api_comparison_prices_measured_cache_hits_at_the_cached_rate():
    from findfix import device, findings, served_model
    from gpu_audit.recommend.base import RecommendSettings
    from gpu_audit.recommend.serving import token_economics

    d = device("inf", "GPU-h", "NVIDIA H100 80GB HBM3", 3.0, [20] * 24, 70)
    api = [{"model": "x", "input_per_1m": 1.0, "output_per_1m": 4.0, "cached_input_per_1m": 0.1, "as_of": None, "source": None, "serves": ["rag"]}]
    m = served_model("rag", ["inf"], cost=100.0, prompt=10_000_000, completion=1_000_000, cached_tokens=8_000_000)
    (r,) = [r for r in token_economics(findings([d], 24, [m], api), RecommendSettings()) if r.evidence.get("api")]
    # 2M uncached x $1 + 8M cached x $0.10 + 1M output x $4 = $6.80 (not $14 at the full input price)
    assert r.evidence["api_cost_usd"] == pytest.approx(6.8)
