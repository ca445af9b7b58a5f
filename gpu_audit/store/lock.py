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


class RemoteLease:
    """A lease object for object-store stores: ``<prefix>/.locks/<host>.lease`` holding the holder
    and an expiry. A collector takes it when it is absent, expired or its own, renews it at every
    flush and deletes it at the end; a collector on another machine finding a live lease exits 0.
    Object stores offer pyarrow no compare-and-swap, so two starts in the same instant can both win:
    the lease guards the common case (a restarted or duplicated collector), not a race.
    """

    def __init__(self, fs: object, base: str, host: str, ttl_s: float) -> None:
        import json
        import socket

        self.fs, self.ttl_s = fs, ttl_s
        self.path = f"{base}/.locks/{encode_host(host)}.lease"
        self.me = f"{socket.gethostname()} pid {os.getpid()}"
        self._json = json

    def _read(self) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path) as f:  # type: ignore[attr-defined]
                return self._json.loads(f.read())
        except (OSError, ValueError):
            return None

    def _write(self) -> None:
        body = self._json.dumps({"holder": self.me, "expires": time.time() + self.ttl_s}).encode()
        with self.fs.open_output_stream(self.path) as f:  # type: ignore[attr-defined]
            f.write(body)

    def acquire(self) -> None:
        cur = self._read()
        if cur and cur.get("holder") != self.me and cur.get("expires", 0) > time.time():
            raise AlreadyRunning(f"lease held by {cur.get('holder')} until "
                                 f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(cur['expires']))}")
        try:
            self._write()
        except OSError:
            pass  # the store is unreachable: the spool's local lock still holds; renewed when it is back

    def renew(self) -> None:
        try:
            self._write()
        except OSError:
            pass

    def release(self) -> None:
        cur = self._read()
        if cur and cur.get("holder") == self.me:
            try:
                self.fs.delete_file(self.path)  # type: ignore[attr-defined]
            except OSError:
                pass
