"""``energylake retention``: what the contracts' retention says is due (``retention.plan``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from cli.common import cli_context, when
from contracts import load_registry
from retention.plan import plan_retention

__all__ = ["app"]

app = typer.Typer(
    name="retention",
    help="Retention tiers: plan (what is due to archive or delete; changes nothing).",
    no_args_is_help=True,
)


@app.command("plan")
def retention_plan(
    ctx: typer.Context,
    at: Annotated[
        str | None, typer.Option("--at", help="Plan as of this time (ISO; default now).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every partition, as JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")] = None,
) -> None:
    """Per dataset (and, with --json, per tenant and partition): the rows and bytes due to
    move to the archive tier and to be deleted, from each contract's retention. A dry run:
    nothing is changed."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    now = when(at, "--at") or datetime.now(UTC)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    plan = plan_retention(settings.lake_store(), registry, now)
    if as_json:
        typer.echo(
            orjson.dumps(
                {"now": now.isoformat(), "partitions": [p.to_json() for p in plan.partitions]},
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    table = Table(
        "dataset", "hot days", "archive days", "basis", "rows", "to archive", "to delete",
        "bytes to archive", "bytes to delete",
        title=f"retention due at {now.isoformat(timespec='seconds')} (dry run)",
        title_justify="left",
    )  # fmt: skip
    totals = plan.totals()
    for contract in registry:
        t = totals.get(contract.dataset)
        if t is None:
            continue
        r = contract.retention
        table.add_row(
            contract.dataset, str(r.hot_days), str(r.archive_days), r.basis,
            f"{t['rows']:,}", f"{t['archive_rows']:,}", f"{t['delete_rows']:,}",
            f"{t['archive_bytes']:,}", f"{t['delete_bytes']:,}",
        )  # fmt: skip
    cli.console.print(table)
