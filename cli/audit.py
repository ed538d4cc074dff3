"""``energylake audit``: verify the audit chains, read their records, prune past a year."""

from __future__ import annotations

import heapq
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from audit.retention import RETENTION_DAYS
from cli.common import cli_context, when
from pipelines.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="audit",
    help="The tamper-evident audit log: verify (chains), log (records), prune (past a year).",
    no_args_is_help=True,
)


class _Component(StrEnum):
    all = "all"
    gateway = "gateway"
    pipeline = "pipeline"
    access = "access"


class _Format(StrEnum):
    table = "table"
    json = "json"


ComponentOption = Annotated[
    _Component,
    typer.Option(help="Which chain: <data_dir>/audit/<component>, or all of them."),
]
DataDir = Annotated[Path | None, typer.Option(help="Override data_dir.")]
_DETAIL_CHARS = 80


def _folders(settings: Settings, component: _Component) -> list[Path]:
    names = [c.value for c in _Component if c != _Component.all]
    chosen = names if component == _Component.all else [component.value]
    return [settings.data_dir / "audit" / name for name in chosen]


@app.command("verify")
def verify(
    ctx: typer.Context,
    component: ComponentOption = _Component.all,
    data_dir: DataDir = None,
) -> None:
    """Check each chain against itself and its anchors; one verdict line per chain with its
    head (seq, SHA-256) to note elsewhere. Exit 5 names the first bad record."""
    from audit.chain import anchor_path
    from audit.verify import verify_chain

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    first_bad = None
    for folder in _folders(settings, component):
        if not folder.exists() and not anchor_path(folder, settings.audit_anchor_dir).exists():
            typer.echo(f"{folder.name}: no records yet ({folder})")
            continue
        verdict = verify_chain(folder, settings.audit_anchor_dir)
        typer.echo(verdict.summary())
        if not verdict.ok and first_bad is None:
            first_bad = verdict
    if first_bad is not None:
        raise first_bad.error()


def _who(record: dict[str, Any]) -> str:
    for key in ("principal", "actor", "device_id", "client_id"):
        if record.get(key):
            return str(record[key])
    return ""


def _datasets(record: dict[str, Any]) -> str:
    items = record.get("datasets") or []
    names = [str(i.get("dataset")) if isinstance(i, dict) else str(i) for i in items]
    return ", ".join(names) or str(record.get("dataset") or "")


def _table(records: list[dict[str, Any]]) -> Table:
    table = Table(title=f"audit records ({len(records)})")
    table.add_column("ts (UTC)", no_wrap=True)
    table.add_column("chain:seq", no_wrap=True)
    for column in ("event", "who", "purpose", "datasets", "outcome", "detail"):
        table.add_column(column, overflow="fold")
    for r in records:
        detail = str(r.get("detail") or r.get("sql_redacted") or "")
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 1] + "…"
        table.add_row(
            str(r.get("ts", ""))[:19].replace("T", " "),
            f"{r.get('component', '')}:{r.get('seq', '')}",
            str(r.get("event", "")),
            _who(r),
            str(r.get("purpose") or ""),
            _datasets(r),
            str(r.get("outcome") or ""),
            detail,
        )
    return table


@app.command("log")
def log(
    ctx: typer.Context,
    component: ComponentOption = _Component.all,
    principal: Annotated[
        str | None, typer.Option(help="Only this principal (or operator, `actor`).")
    ] = None,
    purpose: Annotated[str | None, typer.Option(help="Only accesses under this purpose.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only records naming this dataset.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this event, e.g. query.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date or ISO time (UTC if no offset).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this date or ISO time.")] = None,
    output: Annotated[
        _Format, typer.Option("--format", help="table, or json (one record per line).")
    ] = _Format.table,
    data_dir: DataDir = None,
) -> None:
    """The records of the chains, oldest first, filtered."""
    import orjson

    from audit.query import RecordFilter, read_records

    keep = RecordFilter(
        principal=principal,
        purpose=purpose,
        dataset=dataset,
        event=event,
        since=when(since, "--since"),
        until=when(until, "--until"),
    )
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    chains = [keep.select(read_records(f)) for f in _folders(settings, component)]
    records = heapq.merge(*chains, key=lambda r: str(r.get("ts", "")))
    if output == _Format.json:
        for record in records:
            typer.echo(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode())
        return
    cli.console.print(_table(list(records)))


@app.command("prune")
def prune(
    ctx: typer.Context,
    component: ComponentOption = _Component.all,
    older_than_days: Annotated[
        int, typer.Option(help="Delete day files older than this (at least 365).")
    ] = RETENTION_DAYS,
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete; without it, only say what would go.")
    ] = False,
    actor: Annotated[
        str | None, typer.Option(help="Who prunes (written in the audit_pruned record).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Delete audit day files past the retention (a dry run unless --apply); each chain
    records what it pruned, so `audit verify` knows where it now starts."""
    from audit.retention import prune as prune_folder

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    for folder in _folders(settings, component):
        report = prune_folder(
            folder,
            older_than_days,
            dry_run=not apply,
            anchor_dir=settings.audit_anchor_dir,
            actor=actor,
        )
        verb = "would delete" if report.dry_run else "deleted"
        through = f" (through seq {report.through_seq})" if report.files else ""
        typer.echo(f"{folder.name}: {verb} {len(report.files)} file(s){through}")
