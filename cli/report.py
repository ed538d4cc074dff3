"""``energylake report``: sustainability reports read through the governed access layer
(purpose ``regulatory_reporting``): BRSR Principle 6 energy and emissions, the ESG data pack,
the CAQM DG operation log; ``verify`` recomputes a report from the versions it recorded and
``explain`` breaks a figure down (docs/REPORTING.md)."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(
    name="report",
    help="Sustainability reports: BRSR, ESG data pack, CAQM DG operation log; verify, explain.",
    no_args_is_help=True,
)
