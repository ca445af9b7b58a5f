"""Reading a user's TOML file (pricing, settings, a scenario): one line for every way it can fail."""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gpu_audit.errors import GpuAuditError


def read_toml(path: str, what: str, error: type[GpuAuditError] = GpuAuditError) -> tuple[dict[str, Any], str]:
    """The file's tables and its text (for naming the line of a later mistake). ``what`` names the
    file in messages: "pricing file not found: PATH", "PATH: not valid TOML: ...". """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML: nested too deeply") from None
