"""One collector per (store, host): an flock on ``<store>/.locks/<host>.lock``.

flock belongs to the open file: when the holder dies (even by kill -9) the kernel releases it, so
a stale lock is taken over by the next collector without any clean-up. The file records the
holder's pid and start time for the message a second collector prints.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import IO

from gpu_audit.store.layout import encode_host


class AlreadyRunning(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class CollectorLock:
    def __init__(self, root: str, host: str) -> None:
        self.path = os.path.join(root, ".locks", f"{encode_host(host)}.lock")
        self._f: IO[str] | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another collector"
            f.close()
            raise AlreadyRunning(holder) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        f.flush()
        self._f = f

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()
            self._f = None
