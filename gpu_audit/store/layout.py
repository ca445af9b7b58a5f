"""Where files live in a store: ``<root>/<table>/host=<host>/date=<YYYY-MM-DD>/<file>.parquet``."""

from __future__ import annotations

from urllib.parse import quote, unquote

SAFE = "-_."


def encode_host(host: str) -> str:
    """The host name as a folder name: characters unsafe in a path are percent-encoded.

    ``.`` and ``..`` alone would be path navigation, so their dots are encoded too.
    """
    enc = quote(host, safe=SAFE)
    if enc in {".", ".."} or not enc:
        enc = enc.replace(".", "%2E") or "%00"
    return enc


def decode_host(folder: str) -> str:
    return unquote(folder)


def partition_dir(root: str, table: str, host: str, date: str) -> str:
    return f"{root.rstrip('/')}/{table}/host={encode_host(host)}/date={date}"


def is_data_file(name: str) -> bool:
    """Complete data files only: temp files start with a dot and are never read."""
    return name.endswith(".parquet") and not name.startswith(".")
