"""``energylake contracts``: lint the contracts, list them, show what a purpose sees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli import render
from cli.common import cli_context, lint_targets
from cli.decoders import decoders_folder
from contracts import CONTRACTS_DIR, lint_paths, load_registry, load_vocabulary, plan_for
from pipelines.settings import Settings
from transforms.catalogue import lint_catalogue

__all__ = ["app"]

app = typer.Typer(
    name="contracts",
    help="Data contracts: lint them, list them, show what a purpose sees.",
    no_args_is_help=True,
)


def _contracts_dir(settings: Settings) -> Path:
    return settings.contracts_dir or CONTRACTS_DIR


@app.command("lint")
def contracts_lint(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Contract files or folders (default: the configured contracts)."),
    ] = None,
) -> None:
    """Validate contracts: the ODCS v3 JSON Schema, then energylake's governance rules.

    Exits 1 when any contract has an issue; each line names the file, the property path,
    what is wrong, and a stable code.
    """
    cli = cli_context(ctx)
    targets = paths or [_contracts_dir(cli.settings())]
    files = lint_targets(targets, "*.odcs.yaml", "contracts")
    issues = lint_paths(files)
    decoders = 0
    if not paths and not issues:
        # The decoder catalogue maps payloads to these contracts' fields: a contract change
        # that breaks a decoder (a field renamed, a unit changed) fails here too.
        registry = load_registry(targets[0])
        folder = decoders_folder(cli.settings())
        found = sorted(folder.glob("*.yaml"))
        decoders = len(found)
        issues = lint_catalogue(found, registry)
    for issue in issues:  # one plain line each: grep-able, never wrapped
        typer.echo(str(issue), err=True)
    if issues:
        typer.echo(
            f"{len(issues)} issue(s) in {len({i.file for i in issues})} "
            f"of {len(files)} contract(s)" + (f" and {decoders} decoder(s)" if decoders else ""),
            err=True,
        )
        raise typer.Exit(1)
    cli.console.print(
        f"{len(files)} contract(s) OK" + (f", {decoders} decoder(s) OK" if decoders else "")
    )


@app.command("list")
def contracts_list(ctx: typer.Context) -> None:
    """List the datasets with their contract version, retention and field counts."""
    cli = cli_context(ctx)
    registry = load_registry(_contracts_dir(cli.settings()))
    cli.console.print(render.contracts_table(registry))


@app.command("purposes")
def contracts_purposes(ctx: typer.Context) -> None:
    """The purposes of the privacy policy, the only ones a field may be granted to."""
    vocab = load_vocabulary()
    table = Table("purpose", "title", "privacy policy, section 3", title="purposes")
    for pid, spec in vocab.purposes.items():
        table.add_row(pid, spec["title"], spec["policy"])
    cli_context(ctx).console.print(table)


@app.command("show")
def contracts_show(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. meter_readings.")],
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", "-p", help="Show the plan for this purpose (field by field)."),
    ] = None,
) -> None:
    """Show a contract's fields, or with --purpose what that purpose sees of each field."""
    cli = cli_context(ctx)
    registry = load_registry(_contracts_dir(cli.settings()))
    contract = registry.get(dataset)
    if purpose is None:
        cli.console.print(render.fields_table(contract))
        return
    plan = plan_for(contract, purpose, registry.vocabulary)
    cli.console.print(render.plan_table(contract, plan))
