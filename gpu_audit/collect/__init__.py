"""The collector: NVML (real or virtual) sampled into the store. Imports no pandas/duckdb/plotly."""
