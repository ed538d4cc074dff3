"""``energylake reference``: load reference data into its Delta tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import render
from cli.common import cli_context, error
from contracts import CONTRACTS_DIR, load_registry

__all__ = ["app"]

app = typer.Typer(
    name="reference",
    help="Reference data: clients, branches, devices, contacts, work orders.",
    no_args_is_help=True,
)


@app.command("load")
def reference_load(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Folder of <dataset>.parquet files.")],
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Load reference data into its Delta tables under its contracts (idempotent)."""
    from cli.lineage import emit_reference_lineage
    from lake.reference import load_reference

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri)
    if not directory.is_dir():
        error(f"no such folder: {directory}")
        raise typer.Exit(2)
    loads = load_reference(
        settings.lake_store(), directory, load_registry(settings.contracts_dir or CONTRACTS_DIR)
    )
    emit_reference_lineage(settings, directory, loads)
    cli.console.print(render.reference_table(loads))


@app.command("load-platform")
def reference_load_platform(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Argument(help="A platform-wide dataset (emission_factors, grap_calendar, ...).")
    ],
    file: Annotated[
        Path | None,
        typer.Argument(help="CSV (header row) or Parquet; default: the file energylake ships."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Load platform-wide reference data (one table for all tenants) under its contract
    (idempotent: an unchanged file makes no new version)."""
    from lake.reference import load_platform_reference
    from reporting.shipped import shipped_file

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri)
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    if dataset not in registry.datasets or not registry.get(dataset).platform_wide:
        platform = sorted(d for d in registry.datasets if registry.get(d).platform_wide)
        error(f"{dataset!r} is not a platform-wide dataset; these are: {', '.join(platform)}")
        raise typer.Exit(2)
    source = file if file is not None else shipped_file(dataset)
    if source is None:
        error(f"energylake ships no {dataset} file: give one (CSV or Parquet)")
        raise typer.Exit(2)
    load = load_platform_reference(settings.lake_store(), source, registry.get(dataset))
    state = "loaded" if load.changed else "unchanged"
    cli.console.print(
        f"{load.rel}: {load.rows} rows from {source}, {state} (version {load.version})"
    )
