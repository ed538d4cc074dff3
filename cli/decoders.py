"""``energylake decoders``: lint the decoder catalogue, list its formats and topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import cli_context, lint_targets
from contracts import CONTRACTS_DIR, load_registry
from pipelines.settings import Settings
from transforms.catalogue import DECODERS_DIR, lint_catalogue, load_catalogue

__all__ = ["app", "decoders_folder"]

app = typer.Typer(
    name="decoders",
    help="Payload formats as data: lint the decoder files, list the formats and their topics.",
    no_args_is_help=True,
)


def decoders_folder(settings: Settings) -> Path:
    """The catalogue the pipeline uses: the configured folder, else the packaged one."""
    return settings.decoders_dir or DECODERS_DIR


@app.command("lint")
def decoders_lint(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Decoder files or folders (default: the configured catalogue)."),
    ] = None,
) -> None:
    """Check decoder files against the contracts: each problem on one line with the file,
    the YAML path, the reason and a code (D0xx). Exits 1 when there is any."""
    cli = cli_context(ctx)
    settings = cli.settings()
    files = lint_targets(paths or [decoders_folder(settings)], "*.yaml", "decoders")
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    issues = lint_catalogue(files, registry)
    for issue in issues:
        typer.echo(str(issue), err=True)
    if issues:
        typer.echo(
            f"{len(issues)} issue(s) in {len({i.file for i in issues})} decoder(s)", err=True
        )
        raise typer.Exit(1)
    cli.console.print(f"{len(files)} decoder(s) OK")


@app.command("list")
def decoders_list(ctx: typer.Context) -> None:
    """The formats of the catalogue: each stream's topic, profile and time source."""
    cli = cli_context(ctx)
    settings = cli.settings()
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    catalogue = load_catalogue((decoders_folder(settings),), registry)
    table = Table(title="decoders")
    for column in ("decoder", "stream", "topic", "profile", "time", "seq"):
        table.add_column(column)
    for decoder in catalogue.decoders.values():
        for stream in decoder.streams:
            time = (
                "envelope ts"
                if stream.layout == "envelope"
                else f"{stream.time_format}"
                + (f" ({stream.time_zone})" if stream.time_format == "local" else "")
            )
            seq = "envelope seq" if stream.layout == "envelope" else stream.seq_from
            table.add_row(decoder.name, stream.name, stream.topic, stream.profile or "", time, seq)
    cli.console.print(table)
