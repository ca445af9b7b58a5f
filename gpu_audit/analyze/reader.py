"""Finding a store's files: one or more roots, each with Hive-partitioned tables.

Partition folders are pruned here by date against --since/--until, so DuckDB opens only the files
that can hold rows of the window. Files of every schema version are read together
(``union_by_name``): a column an older file lacks reads as null.
"""

from __future__ import annotations

import glob
import os
from datetime import datetime, timedelta

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import is_data_file


class StoreNotFound(GpuAuditError):
    pass


def table_files(roots: list[str], table: str, since: datetime | None = None, until: datetime | None = None) -> list[str]:
    files: list[str] = []
    lo = (since - timedelta(days=1)).strftime("%Y-%m-%d") if since else None
    hi = until.strftime("%Y-%m-%d") if until else None
    seen: set[str] = set()
    for root in roots:
        real = os.path.realpath(root)
        if real in seen:
            continue  # the same store given twice is read once (a copy elsewhere is counted once by the scan)
        seen.add(real)
        if not os.path.isdir(root):
            raise StoreNotFound(f"store not found: {root}", hint="give the folder that `gpu-audit collect --out` wrote")
        for d in glob.glob(os.path.join(glob.escape(root), table, "host=*", "date=*")):
            date = os.path.basename(d)[5:]
            if (lo and date < lo) or (hi and date > hi):
                continue
            files.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if is_data_file(n))
    return sorted(files)
