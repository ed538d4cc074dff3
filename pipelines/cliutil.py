"""What every command module shares: the console, error lines, and settings with flags.

Command modules (``pipelines/cli_*.py``) each define a ``register(app)`` function; the
root ``pipelines/cli.py`` calls them. Keep the work in the packages, not here.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pipelines.settings import Settings, load_settings

__all__ = ["STATE", "console", "error", "settings_from"]

console = Console()

# Set by the root callback: the --config file, if given.
STATE: dict[str, Path | None] = {"config": None}


def error(message: str) -> None:
    """Errors go to stderr as one plain line: readable in logs, never wrapped."""
    typer.echo(f"error: {message}", err=True)


def settings_from(**flags: object) -> Settings:
    """Settings with the given flags on top; a bad config file exits 2 with one line."""
    try:
        return load_settings(STATE["config"], **flags)
    except (FileNotFoundError, ValueError) as exc:
        error(f"{exc}")
        raise typer.Exit(2) from exc
