"""Arrow schemas of the store's tables, versioned.

SCHEMA_VERSION goes into every file's key-value metadata (``gpu_audit.schema_version``). Readers
accept every earlier version: a column that an older file lacks reads as null. Each column's meaning,
unit and NVML source are documented in docs/store.md; a test checks that every column here appears
there.

History:
- 1: first version.
- 2: rollups keep k8s_namespace (older files read it as null).
- 5: processes keep the Unix user and the pod's namespace and name (older files read them as null).
- 4: samples keep the energy counter (energy_mj) and the energy each sample stands for (energy_j);
  rollups keep energy_j and idle_energy_j (older files read them as null: energy from power x dt).
- 6: the imports table (content hashes of imported files); rollups keep stranded_dt_s; compact and
  rollup carry unknown columns.
- 3: rollups keep blind_dt_s, the time of a GPU in MIG mode whose source showed no instances (older
  files read it as null: none).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 6
TS = pa.timestamp("us", tz="UTC")

SAMPLES = pa.schema(
    [
        ("ts", TS),
        ("host", pa.string()),
        ("uuid", pa.string()),
        ("parent_uuid", pa.string()),
        ("index", pa.int32()),
        ("name", pa.string()),
        ("mig_profile", pa.string()),
        ("mig_mode", pa.bool_()),
        ("util_gpu_pct", pa.float32()),
        ("util_mem_pct", pa.float32()),
        ("mem_used_bytes", pa.int64()),
        ("mem_total_bytes", pa.int64()),
        ("power_w", pa.float32()),
        ("energy_mj", pa.int64()),  # the GPU's total energy counter (mJ since driver load), as read
        ("energy_j", pa.float64()),  # the energy this sample stands for: the counter's delta since the previous sample
        ("power_limit_w", pa.float32()),
        ("sm_clock_mhz", pa.int32()),
        ("sm_clock_max_mhz", pa.int32()),
        ("temp_c", pa.int32()),
        ("throttle_reasons", pa.int64()),
        ("sm_active_pct", pa.float32()),
        ("sm_occupancy_pct", pa.float32()),
        ("tensor_active_pct", pa.float32()),
        ("dram_active_pct", pa.float32()),
        ("gr_engine_active_pct", pa.float32()),
        ("source", pa.string()),
        ("interval_s", pa.float32()),
        ("error", pa.string()),
        ("k8s_pod", pa.string()),
        ("k8s_namespace", pa.string()),
        ("k8s_container", pa.string()),
    ]
)

PROCESSES = pa.schema(
    [
        ("ts", TS),
        ("host", pa.string()),
        ("uuid", pa.string()),
        ("pid", pa.int64()),
        ("name", pa.string()),
        ("type", pa.string()),
        ("used_mem_bytes", pa.int64()),
        ("sm_util_pct", pa.float32()),
        ("container_id", pa.string()),
        ("k8s_pod_uid", pa.string()),
        ("slurm_job_id", pa.string()),
        ("user", pa.string()),  # the process's Unix user (uid -> name on the host), schema version 5
        ("k8s_namespace", pa.string()),  # the pod's namespace and name, resolved on the node (/var/log/pods)
        ("k8s_pod", pa.string()),
    ]
)

ENGINE = pa.schema(
    [
        ("ts", TS),
        ("host", pa.string()),
        ("endpoint", pa.string()),
        ("engine", pa.string()),
        ("model", pa.string()),
        ("source", pa.string()),
        ("prompt_tokens_total", pa.float64()),
        ("generation_tokens_total", pa.float64()),
        ("preemptions_total", pa.float64()),
        ("prefix_cache_queries_total", pa.float64()),
        ("prefix_cache_hits_total", pa.float64()),
        ("requests_total", pa.float64()),
        ("requests_running", pa.float64()),
        ("requests_waiting", pa.float64()),
        ("kv_cache_usage_pct", pa.float64()),
        ("kv_capacity_tokens", pa.float64()),
        ("prefix_cache_hit_pct", pa.float64()),
        ("error", pa.string()),
    ]
)

DEVICES = pa.schema(
    [
        ("ts", TS),
        ("host", pa.string()),
        ("uuid", pa.string()),
        ("parent_uuid", pa.string()),
        ("index", pa.int32()),
        ("name", pa.string()),
        ("mig_profile", pa.string()),
        ("mig_mode", pa.bool_()),
        ("mig_slices", pa.int32()),
        ("mig_total_slices", pa.int32()),
        ("pci_bus_id", pa.string()),
        ("mem_total_bytes", pa.int64()),
        ("power_limit_w", pa.float32()),
        ("driver_version", pa.string()),
        ("nvml_version", pa.string()),
        ("cuda_driver_version", pa.string()),
        ("gpm_supported", pa.bool_()),
        ("source", pa.string()),
        ("run_id", pa.string()),
        ("first_seen", TS),
        ("last_seen", TS),
    ]
)

# Raw samples older than a cut-off, per device and minute: the dt-weighted sums every finding needs
# (gpu_audit.store.rollup). ts is the start of the minute; the sums are over the samples in it.
ROLLUPS = pa.schema(
    [
        ("ts", TS),
        ("host", pa.string()),
        ("uuid", pa.string()),
        ("parent_uuid", pa.string()),
        ("index", pa.int32()),
        ("name", pa.string()),
        ("mig_profile", pa.string()),
        ("mig_mode", pa.bool_()),
        ("k8s_namespace", pa.string()),  # a minute's rows split by namespace where samples carry one (DCGM imports)
        ("resolution_s", pa.float32()),
        ("idle_below_pct", pa.float32()),
        ("n", pa.int64()),
        ("dt_s", pa.float64()),
        ("ev_dt_s", pa.float64()),
        ("u_dt", pa.float64()),
        ("idle_dt_s", pa.float64()),
        ("sm_dt_s", pa.float64()),
        ("sm_u_dt", pa.float64()),
        ("error_dt_s", pa.float64()),
        ("util_gpu_dt_s", pa.float64()),
        ("gr_engine_dt_s", pa.float64()),
        ("sm_active_dt_s", pa.float64()),
        ("free_dt_s", pa.float64()),
        ("blind_dt_s", pa.float64()),  # MIG-mode GPU time with no instances visible: billed, no evidence
        ("stranded_dt_s", pa.float64()),  # MIG slices no instance holds and none could (every memory slice taken): billed, not idle
        ("energy_j", pa.float64()),  # Σ energy of a physical GPU's samples (counter deltas, else power x dt)
        ("idle_energy_j", pa.float64()),  # the same over idle samples
        ("energy_counter_dt_s", pa.float64()),  # Σ dt of the samples whose energy came from the counter
        ("mem_max_bytes", pa.int64()),
        ("mem_total_bytes", pa.int64()),
        ("first_ts", TS),
        ("end_ts", TS),
    ]
)

# One row per file an import read (schema version 6): the same content given again is skipped.
IMPORTS = pa.schema(
    [
        ("ts", TS),  # when it was imported
        ("host", pa.string()),  # the host it was imported for (--host), or "" where the rows name their hosts
        ("kind", pa.string()),  # nvidia-smi, nvidia-smi-xml, prometheus-text, table
        ("sha256", pa.string()),  # of the file's bytes
        ("path", pa.string()),  # as given on the command line
        ("rows", pa.int64()),  # rows it stored
        ("time_source", pa.string()),  # where its times came from: in-file, --at, file modification time
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "processes": PROCESSES,
    "engine": ENGINE,
    "devices": DEVICES,
    "rollups": ROLLUPS,
    "imports": IMPORTS,
}


def with_version(schema: pa.Schema) -> pa.Schema:
    """The schema with the store's version in its metadata, as written to every file."""
    return schema.with_metadata({b"gpu_audit.schema_version": str(SCHEMA_VERSION).encode()})


VERSION_KEY = b"gpu_audit.schema_version"


def merge_tables(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Files of one table merged into one, for compact and rollup: the columns this version knows
    take its types (an older file's missing column reads as null), and every other column (a newer
    collector's) is carried through unchanged, after the known ones. The merged table records the
    newest schema version among the files (never lower than this one)."""
    known = [f.name for f in schema]
    extra: list[pa.Field] = []
    for p in parts:
        extra.extend(f for f in p.schema if f.name not in known and f.name not in {e.name for e in extra})
    out = []
    for p in parts:
        cols = [p[f.name].cast(f.type) if f.name in p.column_names else pa.nulls(p.num_rows, f.type) for f in schema]
        cols += [p[f.name] if f.name in p.column_names else pa.nulls(p.num_rows, f.type) for f in extra]
        out.append(pa.table(cols, schema=pa.schema(list(schema) + extra)))
    merged = pa.concat_tables(out, promote_options="permissive") if out else pa.schema(list(schema) + extra).empty_table()
    versions = [SCHEMA_VERSION] + [int(p.schema.metadata[VERSION_KEY]) for p in parts
                                   if p.schema.metadata and p.schema.metadata.get(VERSION_KEY, b"").isdigit()]
    return merged.replace_schema_metadata({VERSION_KEY: str(max(versions)).encode()})
