"""Object-store stores: ``s3://bucket/prefix``, ``gs://...`` or any pyarrow filesystem URI.

Writers never write into the bucket directly. Complete files are written into a local spool folder
(the same atomic write as a local store), then uploaded one by one; an S3 object becomes visible
only when its upload completes, so nothing half-written is ever in the bucket. When the store is
unreachable the collector keeps sampling and spooling; the spool is bounded (``--spool-max``), the
oldest files dropped first with a counted warning, and everything left is uploaded when the store is
back (or by the next run). Reports mirror the partitions they need into a local cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from gpu_audit.errors import GpuAuditError
from gpu_audit.store.layout import is_data_file


class RemoteError(GpuAuditError):
    pass


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(uri: str, s3_endpoint: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and base path for a store URI."""
    endpoint = s3_endpoint or os.environ.get("GPU_AUDIT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        if uri.startswith("s3://") and endpoint:
            scheme = "https" if endpoint.startswith("https://") else "http"
            fs = pafs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[-1], scheme=scheme,
                                   region=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
                                   connect_timeout=3, request_timeout=10, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
            return fs, uri[len("s3://"):].rstrip("/")
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    except (pa.ArrowException, ValueError, OSError) as e:
        raise RemoteError(f"cannot open store {uri}: {e}") from None


def cache_dir(kind: str, uri: str) -> str:
    """``$XDG_CACHE_HOME/gpu-audit/<kind>/<hash of the URI>``: the spool or the report mirror of a store."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpu-audit", kind, hashlib.sha1(uri.encode()).hexdigest()[:16])


def spool_dir(uri: str) -> str:
    return cache_dir("spool", uri)


@dataclass
class Uploader:
    spool: str
    fs: pafs.FileSystem
    base: str
    spool_max_bytes: int = 1 << 30
    uploaded: int = 0
    dropped: int = 0
    failures: int = 0
    last_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def pending(self) -> list[str]:
        out = []
        for d, _, names in os.walk(self.spool):
            out.extend(os.path.join(d, n) for n in names if is_data_file(n))
        return sorted(out, key=lambda p: (os.path.getmtime(p), p))

    def _bound(self) -> None:
        files = self.pending()
        total = sum(os.path.getsize(f) for f in files)
        while files and total > self.spool_max_bytes:
            oldest = files.pop(0)
            total -= os.path.getsize(oldest)
            os.unlink(oldest)
            self.dropped += 1
        if self.dropped and not any(w.startswith("spool") for w in self.warnings):
            self.warnings.append("spool over --spool-max while the store was unreachable: the oldest files were dropped")

    def upload(self) -> bool:
        """Upload every spooled file, oldest first; stop at the first failure. True when all went."""
        for path in self.pending():
            rel = os.path.relpath(path, self.spool).replace(os.sep, "/")
            try:
                with open(path, "rb") as src, self.fs.open_output_stream(f"{self.base}/{rel}") as dst:
                    dst.write(src.read())
            except Exception as e:  # noqa: BLE001 - any transport error: keep the file, retry later
                self.failures += 1
                self.last_error = str(e).splitlines()[0][:200]
                self._bound()
                return False
            os.unlink(path)
            self.uploaded += 1
        return True


class SpoolingWriter:
    """A StoreWriter into the spool whose every flush is followed by an upload attempt."""

    def __init__(self, writer: Any, uploader: Uploader, lease: Any = None) -> None:
        self._w = writer
        self.uploader = uploader
        self.lease = lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)

    def flush(self) -> list[str]:
        written = self._w.flush()
        if self.uploader.upload() and self.lease is not None:
            self.lease.renew()
        return written


def mirror(uri: str, tables: tuple[str, ...], since: Any = None, until: Any = None, s3_endpoint: str | None = None) -> str:
    """Copy a remote store's data files (of the window's days, for ``tables``) into a local cache;
    files already there with the same size are kept. Returns the local root."""
    from datetime import timedelta

    fs, base = filesystem(uri, s3_endpoint)
    local = cache_dir("mirror", uri)
    lo = (since - timedelta(days=1)).strftime("%Y-%m-%d") if since else None
    hi = until.strftime("%Y-%m-%d") if until else None
    found = False
    for table in tables:
        try:
            infos = fs.get_file_info(pafs.FileSelector(f"{base}/{table}", recursive=True, allow_not_found=True))
        except OSError as e:
            raise RemoteError(f"cannot list {uri}: {str(e).splitlines()[0]}",
                              hint="check the URI, credentials and --s3-endpoint") from None
        for info in infos:
            if info.type != pafs.FileType.File or not is_data_file(info.base_name):
                continue
            rel = info.path[len(base) + 1:]
            date = next((p[5:] for p in rel.split("/") if p.startswith("date=")), None)
            if date and ((lo and date < lo) or (hi and date > hi)):
                continue
            found = True
            dst = os.path.join(local, rel)
            if os.path.exists(dst) and os.path.getsize(dst) == info.size:
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            tmp = os.path.join(os.path.dirname(dst), "." + os.path.basename(dst) + ".tmp")
            with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
                out.write(src.read())
            os.replace(tmp, dst)
    if not found:
        os.makedirs(local, exist_ok=True)
    return local


def upload_spool(uri: str, s3_endpoint: str | None = None, spool: str | None = None) -> Uploader:
    """Upload what an import left in the spool of ``uri``; raises when the store is unreachable."""
    fs, base = filesystem(uri, s3_endpoint)
    up = Uploader(spool or spool_dir(uri), fs, base)
    if not up.upload():
        left = len(up.pending())
        raise RemoteError(f"cannot upload to {uri}: {up.last_error}; {left} file(s) kept in {up.spool} for the next run")
    return up
