"""The one user-facing error type.

Every layer translates the errors of the libraries it uses into a ``GpuAuditError`` (or a subclass
defined next to its code) at its own edge. The CLI catches only this type: it prints one red
``Error:`` line, an optional yellow ``Hint:`` line, and exits with code 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class GpuAuditError(Exception):
    """A mistake in what the user gave us (a file, a flag, the machine), said in one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
