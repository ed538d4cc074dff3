"""The reports' errors: a factor a report needs and the factor table does not have, a report
that cannot be reproduced, a report file that is not one of ours."""

from __future__ import annotations

from typing import ClassVar

from contracts.errors import EXIT_CONFIG, ConfigError, EnergylakeError

__all__ = [
    "EXIT_DIFFERS",
    "MissingFactorError",
    "ReportError",
    "ReportFileError",
]

EXIT_DIFFERS = 5  # `report verify`: the recomputation differs from the report (or it was changed)


class ReportError(EnergylakeError):
    """A report cannot be made or checked: the message names what and the next step."""


class MissingFactorError(ReportError):
    """The factor table has no value of ``factor`` for financial year ``fy`` (``available``:
    the years it has). Exit 2: load the year's factor, or ask for a proxy explicitly."""

    exit_code: ClassVar[int] = EXIT_CONFIG

    def __init__(self, factor: str, fy: str, available: list[str]) -> None:
        self.factor = factor
        self.fy = fy
        self.available = available
        have = ", ".join(available) if available else "none"
        super().__init__(
            f"no {factor} factor for FY {fy} in the factor table (years it has: {have}); load"
            f" the year's published value (energylake reference load-platform emission_factors"
            f" FILE) or run with --allow-proxy-factor to use the latest published one, marked"
            f" as a proxy on every figure it affects"
        )


class ReportFileError(ConfigError):
    """A file given as a report is missing, not a report of ours, or unreadable."""
