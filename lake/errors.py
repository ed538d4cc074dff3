"""Errors of the lake: each names the table or path it is about."""

from __future__ import annotations

from contracts.errors import ConfigError, EnergylakeError

__all__ = [
    "CommitError",
    "LakeError",
    "LayoutError",
    "ReferenceDataError",
    "SchemaMismatchError",
    "StorageConfigError",
    "StorageError",
]


class LakeError(EnergylakeError):
    """Base of the lake's errors."""


class LayoutError(LakeError, ValueError):
    """An id or a path component that the lake layout does not accept."""


class StorageError(LakeError):
    """A storage operation failed (the path and the cause are in the message)."""


class StorageConfigError(StorageError, ConfigError):
    """A store's setting is wrong (``setting``: the lake URI, S3 encryption, AWS keys): exit 2."""


class SchemaMismatchError(LakeError):
    """A table exists with a schema other than its contract's."""

    def __init__(self, table: str, contract: str, differences: list[str]) -> None:
        self.table = table
        self.contract = contract
        self.differences = differences
        lines = "\n".join(f"  {d}" for d in differences)
        super().__init__(
            f"table {table} does not match contract {contract} "
            f"({len(differences)} difference(s)); migrate the table or fix the contract:\n{lines}"
        )


class CommitError(LakeError):
    """A Delta commit could not be made (after retrying concurrent conflicts)."""


class ReferenceDataError(LakeError):
    """A reference-data file does not fit its contract (file, column and reason)."""

    def __init__(self, file: str, reason: str, column: str | None = None) -> None:
        self.file = file
        self.column = column
        self.reason = reason
        where = f"{file}: column {column!r}" if column else file
        super().__init__(f"{where}: {reason}")
