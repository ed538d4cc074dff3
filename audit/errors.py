"""The audit log's errors: a record that cannot be made durable (fail-closed logs), a chain
that does not verify, and a retention that would delete what must be kept."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from contracts.errors import ConfigError, EnergylakeError

__all__ = ["EXIT_AUDIT_CHAIN", "AuditChainError", "AuditRetentionError", "AuditWriteError"]

EXIT_AUDIT_CHAIN = 5  # `energylake audit verify`: a chain is broken (docs/ERRORS.md)


class AuditWriteError(EnergylakeError):
    """A fail-closed audit log could not make a record durable (``folder``): the caller must
    not hand out what the record was about."""

    def __init__(self, message: str, *, folder: Path) -> None:
        self.folder = folder
        super().__init__(message)


class AuditChainError(EnergylakeError):
    """An audit chain does not verify. ``problem``: edited, missing, reordered, malformed,
    truncated, rewritten or torn (a crash mid-write, not tampering); ``file``, ``line`` and
    ``seq`` name the first bad record (``None`` where there is none to name)."""

    exit_code: ClassVar[int] = EXIT_AUDIT_CHAIN

    def __init__(
        self,
        message: str,
        *,
        folder: Path,
        problem: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.folder = folder
        self.problem = problem
        self.file = file
        self.line = line
        self.seq = seq
        super().__init__(message)


class AuditRetentionError(ConfigError):
    """A prune asked to delete audit files younger than the legal minimum."""
