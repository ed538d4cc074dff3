"""``energylake sql`` and ``energylake extract``: an analyst's governed DuckDB session
(``analytics.access``), and a purpose-shaped extract of one dataset (``analytics.extract``).

``energylake sql --as PRINCIPAL --purpose P [--tenant T] [-c SQL | FILE]``; with neither,
an interactive shell (line editing and history, statements end with ``;``, ``.tables``,
``.schema NAME``, ``.mode FORMAT``, ``.quit``). Results as a table, CSV, JSON lines or
Parquet (``--out FILE``). Every session and statement leaves an access record first.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from analytics.access import AccessRecorder, Session, connect
from analytics.errors import QueryError
from analytics.extract import extract
from cli.access import access_log
from cli.common import cli_context, error, when
from contracts import load_registry
from contracts.errors import ConfigError
from lake.keys import KeyStore
from lineage.emitter import LineageEmitter
from lineage.runs import uri_of
from pipelines.settings import Settings

__all__ = ["DataDir", "TokenFile", "app", "read_token", "write_result"]

app = typer.Typer()

_HISTORY = "~/.energylake_sql_history"
_TABLE_ROWS = 200  # rows a table on the console shows; --out writes them all


# The options `sql` and `extract` share.
Tenant = Annotated[
    str | None, typer.Option("--tenant", help="Only this one of the principal's tenants.")
]
TokenFile = Annotated[
    Path | None, typer.Option("--token-file", help="A service principal's token file.")
]
Since = Annotated[
    str | None, typer.Option("--from", help="Readings from this time on (ISO; UTC if bare).")
]
Until = Annotated[
    str | None, typer.Option("--to", help="Readings before this time (ISO; UTC if bare).")
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")]


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


def read_token(path: Path | None) -> str | None:
    """A service principal's token from ``--token-file`` (None: no file given)."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror}", setting="--token-file") from exc


@app.command("sql")
def sql(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="A file of SQL statements to run (else -c or a shell).")
    ] = None,
    principal: Annotated[str, typer.Option("--as", help="Who reads (a granted principal).")] = "",
    purpose: Annotated[
        str, typer.Option("--purpose", help="The one purpose of this session (required).")
    ] = "",
    tenant: Tenant = None,
    command: Annotated[
        str | None, typer.Option("-c", "--command", help="Run these statements and exit.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.TABLE,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the result to this file.")
    ] = None,
    token_file: TokenFile = None,
    since: Since = None,
    until: Until = None,
    data_dir: DataDir = None,
) -> None:
    """Query the lake as PRINCIPAL for PURPOSE: only its tenants' rows, each column as the
    purpose may see it; every statement is recorded in the access log."""
    cli = cli_context(ctx)
    if not principal or not purpose:
        raise ConfigError(
            "a session needs --as PRINCIPAL and --purpose PURPOSE (there is no default purpose)",
            setting="--as" if not principal else "--purpose",
        )
    if command is not None and file is not None:
        raise ConfigError("give -c SQL or a FILE, not both", setting="-c")
    if fmt is Format.PARQUET and out is None:
        raise ConfigError("--format parquet needs --out FILE", setting="--out")
    settings = cli.settings(data_dir=data_dir)
    log = access_log(settings)
    try:
        with _open(settings, log, principal, purpose, tenant, token_file, since, until) as session:
            if command is not None or file is not None:
                text = command if command is not None else _read(file)
                result = session.sql(text)
                write_result(result, fmt, out, cli.console)
            else:
                _shell(session, fmt, cli.console)
    finally:
        log.close()


@app.command("extract")
def extract_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset (a view of the session).")],
    principal: Annotated[
        str, typer.Option("--as", help="Who extracts (a granted principal).")
    ] = "",
    purpose: Annotated[
        str, typer.Option("--purpose", help="The one purpose the extract serves (required).")
    ] = "",
    out: Annotated[Path | None, typer.Option("--out", help="The Parquet file to write.")] = None,
    tenant: Tenant = None,
    token_file: TokenFile = None,
    since: Since = None,
    until: Until = None,
    data_dir: DataDir = None,
) -> None:
    """Write DATASET, shaped for PURPOSE, to a Parquet file; an access record and a lineage
    run (the tables' versions in, the file and its SHA-256 out) record the copy."""
    cli = cli_context(ctx)
    if not principal or not purpose:
        raise ConfigError(
            "an extract needs --as PRINCIPAL and --purpose PURPOSE (there is no default purpose)",
            setting="--as" if not principal else "--purpose",
        )
    if out is None or out.suffix != ".parquet":
        raise ConfigError("--out FILE.parquet is required", setting="--out", value=out)
    settings = cli.settings(data_dir=data_dir)
    log = access_log(settings)
    try:
        with _open(settings, log, principal, purpose, tenant, token_file, since, until) as session:
            report = extract(
                session,
                dataset,
                out,
                lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
            )
    finally:
        log.close()
    cli.console.print(
        f"{report.rows} rows of {dataset} for {purpose} written to {report.path}"
        f" ({report.size_bytes} bytes, sha256 {report.sha256});"
        f" lineage run {report.run_id or '(not emitted)'}"
    )


def _open(
    settings: Settings,
    log: AccessRecorder,
    principal: str,
    purpose: str,
    tenant: str | None,
    token_file: Path | None,
    since: str | None,
    until: str | None,
) -> Session:
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    return connect(
        settings.lake_store(),
        registry,
        KeyStore(settings.keys),
        log,
        principal=principal,
        purpose=purpose,
        tenant=tenant,
        token=read_token(token_file),
        since=when(since, "--from"),
        until=when(until, "--to"),
    )


def _read(file: Path | None) -> str:
    assert file is not None
    try:
        return file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: {exc.strerror}", setting="FILE", value=str(file)) from exc


def write_result(result: pa.Table, fmt: Format, out: Path | None, console: Console) -> None:
    """A result in ``fmt``, to ``out`` or to the console (a table shows its first rows)."""
    if fmt is Format.PARQUET:
        assert out is not None
        pq.write_table(result, out)
        console.print(f"{result.num_rows} rows written to {out}")
        return
    if fmt is Format.CSV:
        buffer = io.BytesIO()
        pacsv.write_csv(result, buffer)
        data = buffer.getvalue()
    elif fmt is Format.JSON:
        data = b"".join(
            orjson.dumps(row, option=orjson.OPT_NAIVE_UTC, default=_json_value) + b"\n"
            for row in result.to_pylist()
        )
    else:
        if out is None:
            console.print(_table(result))
            return
        data = _table_text(result).encode()
    if out is not None:
        out.write_bytes(data)
        console.print(f"{result.num_rows} rows written to {out}")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _json_value(value: object) -> object:
    """What JSON has no type for: decimals as numbers, bytes as hex, intervals as their
    parts (months, days, nanoseconds), anything else as its text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    return str(value)


def _table(result: pa.Table) -> Table:
    table = Table(*result.column_names, caption=_caption(result))
    for row in result.slice(0, _TABLE_ROWS).to_pylist():
        table.add_row(*("NULL" if v is None else str(v) for v in row.values()))
    return table


def _caption(result: pa.Table) -> str:
    shown = min(result.num_rows, _TABLE_ROWS)
    more = f" (first {shown} shown)" if shown < result.num_rows else ""
    return f"{result.num_rows} row{'s' if result.num_rows != 1 else ''}{more}"


def _table_text(result: pa.Table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(_table(result))
    return buffer.getvalue()


# --- the interactive shell -------------------------------------------------------------------


def _shell(session: Session, fmt: Format, console: Console) -> None:
    readline = _readline()
    console.print(
        f"energylake sql: {session.principal}, purpose {session.purpose}, tenants "
        f"{', '.join(session.tenants)}; views: {', '.join(sorted(session.views))}\n"
        "End statements with ';'. .tables, .schema NAME, .mode table|csv|json, .quit"
    )
    pending: list[str] = []
    while True:
        try:
            line = input("...> " if pending else "energylake> ")
        except EOFError:
            console.print()
            break
        except KeyboardInterrupt:
            console.print()
            pending = []
            continue
        if not pending and line.strip().startswith("."):
            fmt, done = _dot(session, line.strip(), fmt, console)
            if done:
                break
            continue
        pending.append(line)
        if not line.rstrip().endswith(";"):
            continue
        text, pending = "\n".join(pending), []
        try:
            write_result(session.sql(text), fmt, None, console)
        except QueryError as exc:
            error(str(exc))
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.write_history_file(str(Path(_HISTORY).expanduser()))
            os.chmod(Path(_HISTORY).expanduser(), 0o600)


def _dot(session: Session, line: str, fmt: Format, console: Console) -> tuple[Format, bool]:
    word, _, arg = line.partition(" ")
    arg = arg.strip()
    if word in (".quit", ".exit", ".q"):
        return fmt, True
    if word == ".tables":
        console.print("  ".join(sorted(session.views)))
    elif word == ".schema" and arg in session.views:
        for column in session.schema(arg):
            action = (column.metadata or {}).get(b"energylake.action", b"").decode()
            console.print(f"  {column.name} {column.type} ({action})")
    elif word == ".mode" and arg in {f.value for f in Format} - {Format.PARQUET.value}:
        return Format(arg), False
    else:
        error(f"unknown: {line}; .tables, .schema NAME, .mode table|csv|json, .quit")
    return fmt, False


def _readline() -> ModuleType | None:
    try:
        readline = importlib.import_module("readline")
    except ImportError:  # pragma: no cover - every Linux Python has it
        return None
    with contextlib.suppress(OSError):
        readline.read_history_file(str(Path(_HISTORY).expanduser()))
    return readline
