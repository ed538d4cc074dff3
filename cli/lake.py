"""``energylake lake``: maintenance of the lake's Delta tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import render
from cli.common import cli_context

__all__ = ["app"]

app = typer.Typer(name="lake", help="The lake's Delta tables: compact them.", no_args_is_help=True)


@app.command("compact")
def lake_compact(
    ctx: typer.Context,
    min_files: Annotated[
        int, typer.Option(help="Compact partitions holding at least this many files.")
    ] = 2,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Compact the hot partitions of every table (one commit per table; readers unaffected)."""
    from pipelines.compaction import compact_all

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri)
    cli.console.print(render.compact_table(compact_all(settings, min_files=min_files)))
