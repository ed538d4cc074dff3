"""Errors of lineage: each names the file or setting it is about."""

from __future__ import annotations

from pathlib import Path

from contracts.errors import EnergylakeError

__all__ = ["LineageWriteError"]


class LineageWriteError(EnergylakeError, RuntimeError):
    """A lineage file cannot be written (``path``; the cause is chained).

    Also a ``RuntimeError``, as it was before the hierarchy: callers that caught that still do.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        super().__init__(
            f"lineage file {path} is not writeable: {cause}; free space or fix the permissions "
            "of the lineage directory (ENERGYLAKE_LINEAGE_DIR)"
        )
