"""The Parquet store: Hive-partitioned tables written atomically, read by every later stage."""
