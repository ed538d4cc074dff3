"""What every command module shares: the invocation's context (settings, console), error
lines, logging, and the simulator's options.

There is no module-level mutable state here: the root callback (``cli/app.py``) builds one
``CliContext`` per invocation and typer hands it to every command as ``ctx.obj``; a command
reads it with ``cli_context(ctx)``. Keep the work in the packages, not here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from audit.query import parse_time
from contracts.errors import ConfigError
from pipelines.settings import Settings, load_settings

if TYPE_CHECKING:
    from simulator.config import SimConfig

__all__ = [
    "Cadence",
    "CliContext",
    "Clients",
    "Days",
    "ExitPlan",
    "FaultOverrides",
    "Faults",
    "PerClient",
    "Seed",
    "Start",
    "cli_context",
    "configure_logging",
    "error",
    "lint_targets",
    "sim_config",
    "when",
]


@dataclass(slots=True)
class ExitPlan:
    """How this invocation's process ends. ``fast``: a command has made everything it wrote
    durable, so ``main()`` may skip the interpreter's teardown (see ``cli.app._exit_now``)."""

    fast: bool = False


@dataclass(frozen=True, slots=True)
class CliContext:
    """One invocation's context, built by the root callback and passed as ``ctx.obj``."""

    config: Path | None = None  # the --config file, if given
    console: Console = field(default_factory=Console)
    exit_plan: ExitPlan = field(default_factory=ExitPlan)

    def settings(self, **flags: object) -> Settings:
        """Settings with the given flags on top; a bad config file exits 2 with one line."""
        try:
            return load_settings(self.config, **flags)
        except (FileNotFoundError, ValueError) as exc:
            error(f"{exc}")
            raise typer.Exit(2) from exc


def cli_context(ctx: typer.Context) -> CliContext:
    """The invocation's ``CliContext`` (set by the root callback; a default one when a command
    group is invoked without the root, which only tests do)."""
    found = ctx.find_object(CliContext)
    if found is None:
        found = CliContext()
        ctx.find_root().obj = found
    return found


# Libraries that speak at INFO about their own workings (Beam: every string type hint it
# cannot resolve; Great Expectations: ~200 lines per import); heard at DEBUG only.
_CHATTY = ("apache_beam", "great_expectations")


def configure_logging(level: str) -> None:
    """The process's logging at ``level`` (the ``log_level`` setting), whatever a library
    imported earlier set up; the chatty libraries above speak at WARNING unless DEBUG."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def when(text: str | None, option: str) -> datetime | None:
    """An option's ISO date or time (no offset: UTC; ``audit.query.parse_time``), None
    when not given; a ConfigError naming the option when it is not one."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO date or time (2026-11-01 or 2026-11-01T06:00)",
            setting=option,
            value=text,
        ) from None


def lint_targets(targets: list[Path], pattern: str, what: str) -> list[Path]:
    """The files a lint command checks: the files given, and each folder's ``pattern``;
    exits 2 naming a path that does not exist, or when there is nothing to check."""
    missing = [p for p in targets if not p.exists()]
    if missing:
        error(f"no such file or folder: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    files = [f for p in targets for f in (sorted(p.glob(pattern)) if p.is_dir() else [p])]
    if not files:
        error(f"no {pattern} {what} under {', '.join(map(str, targets))}")
        raise typer.Exit(2)
    return files


def error(message: str) -> None:
    """Errors go to stderr as one plain line: readable in logs, never wrapped."""
    typer.echo(f"error: {message}", err=True)


# --- the simulator's options, shared by `simulate` and `simulate-publish` ------------------
Clients = Annotated[int, typer.Option("--clients", help="Number of clients (tenants).")]
PerClient = Annotated[int, typer.Option("--branches", help="Branches per client.")]
Days = Annotated[int, typer.Option("--days", help="Days to simulate.")]
Start = Annotated[str, typer.Option("--start", help="First local day (YYYY-MM-DD, Asia/Kolkata).")]
Seed = Annotated[
    int, typer.Option("--seed", help="Seed: the same seed gives the same fleet and bytes.")
]
Cadence = Annotated[int, typer.Option("--cadence", help="Seconds between readings of a device.")]
Faults = Annotated[str, typer.Option("--faults", help="Fault profile: default or none.")]
FaultOverrides = Annotated[
    list[str] | None,
    typer.Option("--fault", help="Override one fault rate, NAME=RATE (repeatable)."),
]


def _parse_faults(values: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values or []:
        name, sep, rate = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(rate)
        except ValueError:
            raise typer.BadParameter(f"expected NAME=RATE, got {item!r}") from None
    return out


def sim_config(
    *,
    clients: int,
    branches: int,
    days: int,
    start: str,
    seed: int,
    cadence: int,
    faults: str,
    fault: list[str] | None,
) -> SimConfig:
    """The simulation the options describe; a bad value exits 2 with one line."""
    from simulator.config import FaultRates, SimConfig

    try:
        rates = {"default": FaultRates(), "none": FaultRates.none()}[faults]
    except KeyError:
        raise typer.BadParameter("faults must be 'default' or 'none'") from None
    try:
        return SimConfig(
            clients=clients,
            branches=branches,
            days=days,
            start=date.fromisoformat(start),
            seed=seed,
            cadence_s=cadence,
            faults=rates.with_overrides(_parse_faults(fault)),
        )
    except ValueError as exc:
        error(f"{exc}")
        raise typer.Exit(2) from exc
