"""The governed access layer's errors (``analytics.grants``, ``analytics.access``)."""

from __future__ import annotations

from typing import ClassVar

from contracts.errors import ConfigError, EnergylakeError

__all__ = ["EXIT_DENIED", "AccessDeniedError", "GrantError", "QueryError"]

EXIT_DENIED = 6  # the principal may not do this: ask for a grant (`energylake access grant`)


class GrantError(ConfigError):
    """A grant names something that does not exist (a tenant, a purpose, a branch, a
    principal) or is malformed: exit 2, fix the command."""


class AccessDeniedError(EnergylakeError):
    """The principal may not open this session or run this statement (``principal``,
    ``purpose``, ``reason``); an access record says so before this is raised."""

    exit_code: ClassVar[int] = EXIT_DENIED

    def __init__(self, message: str, *, principal: str, purpose: str, reason: str) -> None:
        self.principal = principal
        self.purpose = purpose
        self.reason = reason
        super().__init__(message)


class QueryError(EnergylakeError):
    """A statement of a governed session failed in DuckDB (the message is DuckDB's: it can
    hold only shaped values or the analyst's own text)."""
