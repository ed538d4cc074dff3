"""``energylake retention``: what the contracts' retention says is due (``retention.plan``),
and acting on it (``retention.apply``; a dry run unless ``--apply``)."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from cli.common import cli_context, when
from contracts import load_registry
from retention.apply import ApplyReport, apply_and_record, apply_retention
from retention.areas import AreaReport, declared_areas, describe, expire_areas, uncovered
from retention.find import lineage_files
from retention.plan import plan_retention

__all__ = ["app"]

app = typer.Typer(
    name="retention",
    help="Retention tiers: plan (what is due; changes nothing) and apply (dry run unless --apply).",
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


@app.command("apply")
def retention_apply(
    ctx: typer.Context,
    apply: Annotated[
        bool, typer.Option("--apply", help="Act (without it: a dry run that changes nothing).")
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="Apply as of this time (ISO; default now).")
    ] = None,
    every_s: Annotated[
        float | None,
        typer.Option(
            "--every-s",
            help="Run again every this many seconds (with --apply; what `energylake run` "
            "starts). The first pass after --first-delay-s.",
        ),
    ] = None,
    first_delay_s: Annotated[
        float, typer.Option("--first-delay-s", help="With --every-s: seconds to the first pass.")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Every table, as JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")] = None,
) -> None:
    """Move rows past their hot days to the archive tier and delete (then purge the bytes
    of) rows past their archive days, as each contract's retention says. Prints, per
    dataset and tenant, what the plan says and what was done: rows moved and deleted,
    files and bytes written and removed, seconds. A dry run unless --apply."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    stop = threading.Event()
    if every_s is not None:
        if not apply:
            raise typer.BadParameter("--every-s runs passes that act: give --apply too")
        for sig in (signal.SIGTERM, signal.SIGINT):  # a pass under way finishes; then exit 0
            signal.signal(sig, lambda signum, frame: stop.set())
        if stop.wait(first_delay_s):
            return
    while True:
        now = when(at, "--at") or datetime.now(UTC)
        store = settings.lake_store()
        extracts = [path for kind, path, _run, _ds in lineage_files(_lineage_dir(settings))
                    if kind == "extract"]  # fmt: skip
        if apply:
            from audit.log import AuditLog
            from lineage.emitter import LineageEmitter

            audit = AuditLog(
                settings.data_dir / "audit" / "retention",
                component="retention",
                fail_closed=True,
                anchor_dir=settings.audit_anchor_dir,
                anchor_every_records=settings.audit_anchor_every_records,
                anchor_interval_s=settings.audit_anchor_interval_s,
            )
            report = apply_and_record(
                store,
                registry,
                now,
                audit=audit,
                emitter=LineageEmitter.from_settings(settings),
                storage_class=settings.archive_storage_class,
                target_file_bytes=settings.archive_target_file_bytes,
            )
            areas = expire_areas(settings, store, now, apply=True, lineage_files=extracts)
            audit.append("RETENTION_AREAS", {"deleted": areas.deleted, "bytes": areas.bytes})
        else:
            report = apply_retention(store, registry, now, apply=False)
            areas = expire_areas(settings, store, now, apply=False, lineage_files=extracts)
        _print_report(cli, report, areas, as_json=as_json)
        if every_s is None or stop.wait(every_s):
            return


def _lineage_dir(settings: Any) -> Path:
    return Path(settings.lineage_dir or settings.data_dir / "lineage")


def _print_report(cli: Any, report: ApplyReport, areas: AreaReport, *, as_json: bool) -> None:
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "now": report.now.isoformat(),
                    "applied": report.applied,
                    "seconds": report.seconds,
                    "totals": report.totals(),
                    "tables": [t.to_json() for t in report.tables],
                    "areas": {"deleted": areas.deleted, "bytes": areas.bytes},
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    what = "done" if report.applied else "dry run: nothing changed"
    table = Table(
        "dataset", "tenant", "rows moved", "rows deleted", "files written", "bytes written",
        "files removed", "bytes removed", "seconds",
        title=f"retention at {report.now.isoformat(timespec='seconds')} ({what})",
        title_justify="left",
    )  # fmt: skip
    for t in report.tables:
        if not (t.rows_archived or t.rows_deleted or t.redone or t.purged):
            continue
        table.add_row(
            t.dataset, t.tenant or "-", f"{t.rows_archived:,}", f"{t.rows_deleted:,}",
            f"{t.files_written:,}", f"{t.bytes_written:,}", f"{t.files_removed:,}",
            f"{t.bytes_removed:,}", f"{t.seconds:.2f}",
        )  # fmt: skip
    cli.console.print(table)
    totals = report.totals()
    cli.console.print(
        f"total: {totals['rows_archived']:,} rows moved to the archive, "
        f"{totals['rows_deleted']:,} deleted, in {report.seconds:.2f} s"
    )
    verb = "deleted" if areas.applied else "due"
    for name, count in sorted(areas.deleted.items()):
        cli.console.print(f"{name}: {count:,} files ({areas.bytes[name]:,} bytes) {verb}")


@app.command("areas")
def retention_areas(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 listing every file no area covers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The areas, as JSON.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")] = None,
) -> None:
    """Everything the platform keeps: each storage area, where it lives, its owner, its
    retention, where that comes from and what enforces it. With --check, every file of
    the data folder and the lake must belong to one."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    rows = describe(declared_areas(settings, registry))
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        table = Table("area", "where", "owner", "retention", "source", "enforced by",
                      title="storage areas", title_justify="left")  # fmt: skip
        for row in rows:
            table.add_row(*row.values())
        cli.console.print(table)
    if check:
        missing = uncovered(settings, registry, settings.lake_store())
        for rel in missing:
            typer.echo(f"not in any storage area: {rel}", err=True)
        if missing:
            raise typer.Exit(1)
        cli.console.print("every file belongs to a storage area")
