"""Where files live in a store: ``<root>/<table>/host=<host>/date=<YYYY-MM-DD>/<file>.parquet``."""

from __future__ import annotations

from urllib.parse import quote, unquote

from gpu_audit.errors import GpuAuditError

SAFE = "-_."


MAX_HOST_BYTES = 253  # a DNS name's limit: longer host names are refused where they enter
_FOLDER_BYTES = 200  # an encoded host longer than this is shortened in folder and file names (limit 255)


class BadHostName(GpuAuditError):
    pass


def check_host(host: str, what: str = "--host") -> str:
    """A host name as it enters (collect, import): non-empty, at most 253 bytes (DNS), no control
    characters. Refused in one line at the start, before a single row is buffered."""
    if not host or not host.strip():
        raise BadHostName(f"{what}: the host name is empty")
    n = len(host.encode("utf-8"))
    if n > MAX_HOST_BYTES:
        raise BadHostName(f"{what}: the host name is {n:,} bytes; at most {MAX_HOST_BYTES} (as DNS allows)")
    if not host.isprintable():
        raise BadHostName(f"{what}: the host name holds control characters")
    return host


def encode_host(host: str) -> str:
    """The host name as a folder name: characters unsafe in a path are percent-encoded.

    ``.`` and ``..`` alone would be path navigation, so their dots are encoded too. An encoding longer
    than 200 bytes (a long name with many encoded characters) is cut and given a hash of the whole
    name, so folder and file names stay under the file system's 255 bytes; the rows keep the real
    name in their ``host`` column.
    """
    enc = quote(host, safe=SAFE)
    if enc in {".", ".."} or not enc:
        enc = enc.replace(".", "%2E") or "%00"
    if len(enc) > _FOLDER_BYTES:
        import hashlib

        cut = enc[:180]
        cut = cut[: cut.rfind("%")] if "%" in cut[-2:] else cut  # never half a %XX
        enc = f"{cut}~{hashlib.sha1(host.encode()).hexdigest()[:12]}"
    return enc


def decode_host(folder: str) -> str:
    return unquote(folder)


def partition_dir(root: str, table: str, host: str, date: str) -> str:
    return f"{root.rstrip('/')}/{table}/host={encode_host(host)}/date={date}"


def is_data_file(name: str) -> bool:
    """Complete data files only: temp files start with a dot and are never read."""
    return name.endswith(".parquet") and not name.startswith(".")
