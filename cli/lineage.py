"""``energylake lineage``: recent runs, trace a table version, where a branch-day went.

Also the glue that turns a reference load into a lineage run (called by ``reference load``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import cli_context, error
from pipelines.settings import Settings

__all__ = ["app", "emit_reference_lineage"]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

app = typer.Typer(
    name="lineage",
    help="Lineage: the OpenLineage runs every job emitted, queried with DuckDB.",
    no_args_is_help=True,
)


def _valid_day(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return bool(_DAY.match(text))


def _store(settings: Settings) -> Any:
    from lineage.config import LineageConfig
    from lineage.store import LineageStore

    return LineageStore(LineageConfig.from_settings(settings).directory)


def emit_reference_lineage(settings: Settings, directory: Path, loads: dict[str, Any]) -> None:
    """The reference load's lineage run (logged and skipped if it cannot be emitted)."""
    from contracts import load_registry
    from lineage import LineageEmitter
    from lineage.runs import LoadedTable, emit_reference_load, uri_of

    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    tables = [
        LoadedTable(t.rel, registry.get(name), load.source, t.version, t.rows, t.changed, t.tenant)
        for name, load in loads.items()
        for t in load.tables
    ]
    emit_reference_load(
        LineageEmitter.from_settings(settings), uri_of(settings.lake), directory, tables
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


@app.command("runs")
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    job: Annotated[str | None, typer.Option(help="Only this job, e.g. process.main.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Recent runs: job, run id, state, start and end, outputs with their versions."""
    cli = cli_context(ctx)
    if limit < 1:
        error("--limit must be at least 1")
        raise typer.Exit(2)
    found = _store(cli.settings(data_dir=data_dir)).runs(limit=limit, job=job)
    table = Table("job", "run id", "state", "started", "ended", "outputs", title="runs")
    for r in found:
        state = r["state"] + (f" ({r['error']})" if r.get("error") else "")
        table.add_row(
            r["job"],
            r["run_id"],
            state,
            _text(r["started"]),
            _text(r["ended"]),
            _text(r["outputs"]),
        )
    cli.console.print(table if found else "no lineage events yet")


@app.command("trace")
def trace(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Table path in the lake, optionally @VERSION.")],
    show: Annotated[int, typer.Option(help="Producer runs and segments to list.")] = 10,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Upstream (runs and segments that produced DATASET[@VERSION]) and downstream."""
    from lineage.store import parse_dataset_ref

    cli = cli_context(ctx)

    name, version = parse_dataset_ref(dataset)
    result = _store(cli.settings(data_dir=data_dir)).trace(name, version)
    if not result.producers and not result.downstream:
        error(f"no lineage for {dataset} (no run wrote or read it)")
        raise typer.Exit(1)
    at = "" if version is None else f"@{version}"
    cli.console.print(
        f"[bold]{name}{at}[/bold]: {len(result.producers)} producing run(s), "
        f"{len(result.segments)} segment(s) upstream, {len(result.downstream)} derived"
    )
    up = Table("level", "job", "run id", "dataset", "version", "rows", "at", title="upstream")
    for p in result.producers[:show]:
        up.add_row(
            str(p["level"]),
            p["job"],
            p["run_id"],
            p["dataset"],
            _text(p["version"]),
            _text(p["rows"]),
            _text(p["at"]),
        )
    cli.console.print(up)
    if result.segments:
        more = len(result.segments) - show
        tail = f" ... and {more} more" if more > 0 else ""
        cli.console.print("segments: " + ", ".join(result.segments[:show]) + tail)
    if result.downstream:
        down = Table("level", "job", "run id", "from", "dataset", "version", title="downstream")
        for d in result.downstream[:show]:
            down.add_row(
                str(d["level"]),
                d["job"],
                d["run_id"],
                d["from"],
                d["dataset"],
                _text(d["version"]),
            )
        cli.console.print(down)


@app.command("where")
def where(
    ctx: typer.Context,
    branch: Annotated[str, typer.Option("--branch", help="Branch id.")],
    date: Annotated[str, typer.Option("--date", help="UTC day, YYYY-MM-DD.")],
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Which runs wrote that branch and day into which table versions."""
    cli = cli_context(ctx)
    if not _valid_day(date):
        error(f"--date {date!r}: expected YYYY-MM-DD")
        raise typer.Exit(2)
    found = _store(cli.settings(data_dir=data_dir)).where(branch, date)
    table = Table("dataset", "version", "rows", "run id", "at", title=f"{branch} on {date}")
    for r in found:
        table.add_row(
            r["dataset"], _text(r["version"]), str(r["rows"]), r["run_id"], _text(r["at"])
        )
    cli.console.print(table if found else f"no run wrote {branch} on {date}")
