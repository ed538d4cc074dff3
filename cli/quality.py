"""``energylake quality``: the quality gate's results (``quality_results`` tables).

``quality report`` shows the recent batches per tenant and dataset: how many rules ran,
which failed (blocking or warning), and whether the batch was held, released or discarded;
then the failed rules with their observed values and reasons.

``quality release BATCH`` is wired by the batch protocol (pipelines/process.py): it must
publish the held rows, then call ``transforms.quality_results.record_decision``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.common import cli_context

if TYPE_CHECKING:
    import polars as pl

__all__ = ["app", "report_tables"]

app = typer.Typer(
    name="quality",
    help="The quality gate: results per batch, dataset and tenant.",
    no_args_is_help=True,
)


def report_tables(rows: pl.DataFrame, batches: int) -> tuple[Table, Table]:
    """The summary (per batch, tenant, dataset) and the failed rules of the newest batches."""
    import polars as pl

    results = rows.filter(pl.col("record_kind") == "result")
    recent = results.select("batch_no").unique().sort("batch_no", descending=True).head(batches)
    results = results.join(recent, on="batch_no", how="semi")
    decisions = rows.filter(pl.col("record_kind") == "decision").select(
        "batch_id", "client_id", "dataset", "decision", "decided_by"
    )
    keys = ["batch_id", "client_id", "dataset"]
    summary = (
        results.group_by([*keys, "batch_no", "contract"])
        .agg(
            pl.len().alias("rules"),
            (~pl.col("success") & (pl.col("severity") == "error")).sum().alias("blocking"),
            (~pl.col("success") & (pl.col("severity") == "warning")).sum().alias("warnings"),
            pl.col("held").any().alias("held"),
        )
        .join(decisions, on=keys, how="left")
        .sort(["batch_no", "client_id", "dataset"], descending=[True, False, False])
    )
    table = Table(
        "batch", "tenant", "dataset", "contract", "rules", "blocking", "warnings", "state",
        title="quality gate: recent batches",
    )  # fmt: skip
    for row in summary.iter_rows(named=True):
        if row["decision"]:
            state = f"{row['decision']}d by {row['decided_by']}"
        else:
            state = "HELD" if row["held"] else "passed"
        table.add_row(
            row["batch_id"],
            row["client_id"],
            row["dataset"],
            row["contract"],
            str(row["rules"]),
            str(row["blocking"]),
            str(row["warnings"]),
            state,
        )
    failed = Table(
        "batch", "tenant", "dataset", "rule", "severity", "observed", "reason",
        title="failed rules",
    )  # fmt: skip
    for row in (
        results.filter(~pl.col("success"))
        .sort(
            ["batch_no", "client_id", "dataset", "severity", "rule"],
            descending=[True, False, False, False, False],
        )
        .iter_rows(named=True)
    ):
        failed.add_row(
            row["batch_id"],
            row["client_id"],
            row["dataset"],
            row["rule"],
            row["severity"],
            row["observed"] or "",
            row["reason"] or "",
        )
    return table, failed


# The options `quality release` and `quality discard` share.
def _some(devices: list[str], shown: int = 5) -> str:
    more = len(devices) - shown
    return ", ".join(devices[:shown]) + (f" and {more} more" if more > 0 else "")


_Batch = Annotated[str, typer.Argument(help="The held batch: N or PIPELINE:N.")]
_By = Annotated[str, typer.Option("--by", help="Who decides (recorded).")]
_Why = Annotated[str, typer.Option("--reason", help="Why (recorded).")]
_HeldTables = Annotated[list[str] | None, typer.Option(help="Only this held table (repeatable).")]
_DataDir = Annotated[Path | None, typer.Option(help="Override data_dir.")]


@app.command("report")
def report(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    batches: Annotated[int, typer.Option(min=1, help="How many recent batches.")] = 5,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri.")] = None,
) -> None:
    """Recent gate results per dataset and tenant, and the rules that failed."""
    from lake.layout import check_dataset, check_tenant
    from lake.storage import Store
    from transforms.quality_results import read_results

    cli = cli_context(ctx)
    console = cli.console
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri)
    if tenant is not None:
        check_tenant(tenant)
    if dataset is not None:
        check_dataset(dataset)
    rows = read_results(Store.from_uri(settings.lake), tenant=tenant, dataset=dataset)
    if rows.height == 0:
        console.print("no quality results yet (the gate records them per batch)")
        return
    summary, failed = report_tables(rows, batches)
    console.print(summary)
    if failed.row_count:
        console.print(failed)


def _decide(
    ctx: typer.Context,
    decision: str,
    batch: str,
    by: str,
    reason: str,
    table: list[str] | None,
    apply: bool,
    data_dir: Path | None,
) -> None:
    from pipelines.release import release_batch

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    report = release_batch(
        settings,
        batch,
        decided_by=by,
        reason=reason,
        decision=decision,
        tables=table,
        apply=apply,
    )
    verb = {"release": "publish", "discard": "keep out"}[decision]
    out = Table(
        "table",
        "held",
        "rows held",
        "already in table",
        f"rows to {verb}",
        "version",
        "note",
        title=f"{decision} {report.batch_id}" + ("" if apply else " (dry run: add --apply)"),
    )
    for t in report.tables:
        note = t.skipped or ("decision recorded" if t.decided else ("" if apply else "-"))
        held = "whole table" if t.devices is None else _some(t.devices)
        out.add_row(
            t.rel,
            held,
            f"{t.rows_held:,}",
            f"{t.already_in_table:,}",
            f"{t.rows_published:,}" if decision == "release" else f"{t.rows_held:,}",
            "" if t.version is None else str(t.version),
            note,
        )
    cli.console.print(out)


@app.command("release")
def release(
    ctx: typer.Context,
    batch: _Batch,
    by: _By,
    reason: _Why,
    table: _HeldTables = None,
    apply: Annotated[bool, typer.Option("--apply", help="Publish (default: dry run).")] = False,
    data_dir: _DataDir = None,
) -> None:
    """Publish a held batch after a fix or a decision: once, without rows the table holds
    by now; the decision goes to quality_results and lineage."""
    _decide(ctx, "release", batch, by, reason, table, apply, data_dir)


@app.command("discard")
def discard(
    ctx: typer.Context,
    batch: _Batch,
    by: _By,
    reason: _Why,
    table: _HeldTables = None,
    apply: Annotated[bool, typer.Option("--apply", help="Record it (default: dry run).")] = False,
    data_dir: _DataDir = None,
) -> None:
    """Record that a held batch stays out of the lake (its rows are never published)."""
    _decide(ctx, "discard", batch, by, reason, table, apply, data_dir)
