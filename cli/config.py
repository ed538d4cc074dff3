"""``energylake config``: the effective settings and where they come from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import cli_context

__all__ = ["app"]

app = typer.Typer(
    name="config", help="Settings: what energylake will use, and from where.", no_args_is_help=True
)


@app.command("show")
def config_show(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Print the effective settings (flag > ENERGYLAKE_* env > energylake.toml > defaults)."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    table = Table("setting", "value", title="effective settings")
    for name, value in settings.model_dump().items():
        table.add_row(name, str(value))
    table.add_row("lake (resolved)", settings.lake)
    table.add_row("keys (resolved)", str(settings.keys))
    cli.console.print(table)
