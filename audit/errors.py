"""The audit log's errors."""

from __future__ import annotations

from typing import ClassVar

from contracts.errors import EnergylakeError

__all__ = ["EXIT_TAMPERED", "AuditTamperedError", "AuditWriteError"]

EXIT_TAMPERED = 5  # an audit chain does not verify: treat the host as compromised


class AuditWriteError(EnergylakeError):
    """A fail-closed audit log could not make a record durable (``folder``): the action it
    was to record is refused. Free the disk or fix the folder's permissions."""

    def __init__(self, message: str, *, folder: str) -> None:
        self.folder = folder
        super().__init__(message)


class AuditTamperedError(EnergylakeError):
    """``energylake audit verify`` found a chain that does not hold (``problems``: one line
    each, the first bad record named)."""

    exit_code: ClassVar[int] = EXIT_TAMPERED

    def __init__(self, message: str, *, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(message)
