"""``energylake report``: sustainability reports read through the governed access layer
(purpose ``regulatory_reporting``): BRSR Principle 6 energy and emissions, the ESG data pack,
the CAQM DG operation log; ``verify`` recomputes a report from the versions it recorded and
``explain`` breaks a figure down (docs/REPORTING.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from analytics.access import Session, connect
from cli.access import access_log
from cli.common import cli_context
from cli.sql import DataDir, TokenFile, read_token
from contracts import load_registry
from contracts.errors import ConfigError
from lake.keys import KeyStore
from lineage.emitter import LineageEmitter
from lineage.runs import uri_of
from pipelines.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="report",
    help="Sustainability reports: brsr, esg, dg-log, verify, explain.",
    no_args_is_help=True,
)

PURPOSE = "regulatory_reporting"
_FORMATS = ("json", "csv", "html", "pdf")

Principal = Annotated[str, typer.Option("--as", help="Who reports (a granted principal).")]
OutDir = Annotated[
    Path | None, typer.Option("--out", help="Folder for the report (default <data_dir>/reports).")
]


def _principal(principal: str) -> str:
    if not principal:
        raise ConfigError("a report needs --as PRINCIPAL (a granted principal)", setting="--as")
    return principal


def _formats(value: str) -> list[str]:
    wanted = [f.strip() for f in value.split(",") if f.strip()]
    bad = [f for f in wanted if f not in _FORMATS]
    if bad or not wanted:
        raise ConfigError(
            f"--format takes a comma-separated list of {', '.join(_FORMATS)}; got {value!r}",
            setting="--format",
            value=value,
        )
    return wanted


def _renderers(
    formats: list[str],
) -> list[tuple[str, Callable[[dict[str, Any], Path], list[Path]]]]:
    out: list[tuple[str, Callable[[dict[str, Any], Path], list[Path]]]] = []
    if "csv" in formats:
        out.append(("csv", _csv))
    if "html" in formats:
        out.append(("html", _html))
    if "pdf" in formats:
        out.append(("pdf", _pdf))
    return out


def _csv(doc: dict[str, Any], folder: Path) -> list[Path]:
    from reporting.render import render_csv

    return render_csv(doc, folder)


def _html(doc: dict[str, Any], folder: Path) -> list[Path]:
    from durable.files import atomic_file
    from reporting.render import render_html

    path = folder / "report.html"
    with atomic_file(path) as handle:
        handle.write(render_html(doc).encode("utf-8"))
    return [path]


def _pdf(doc: dict[str, Any], folder: Path) -> list[Path]:
    from reporting.render import render_pdf

    path = folder / "report.pdf"
    render_pdf(doc, path)
    return [path]


def _session(
    settings: Settings, principal: str, tenant: str | None, token_file: Path | None, **kw: Any
) -> tuple[Session, Any]:
    log = access_log(settings)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    try:
        session = connect(
            settings.lake_store(),
            registry,
            KeyStore(settings.keys),
            log,
            principal=_principal(principal),
            purpose=PURPOSE,
            tenant=tenant,
            token=read_token(token_file),
            **kw,
        )
    except BaseException:
        log.close()
        raise
    return session, log


def _figures_table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"BRSR Principle 6, {doc['tenant']}: EI 1 and EI 7")
    years = [doc["previous_fy"], doc["fy"]]
    table.add_column("row")
    table.add_column("concept")
    for fy in years:
        table.add_column(f"FY {fy}", justify="right")
    table.add_column("unit")
    facts = {(f["key"], f["fy"]): f for f in doc["facts"]}
    for key in dict.fromkeys(f["key"] for f in doc["facts"]):
        cells = []
        unit = ""
        for fy in years:
            f = facts.get((key, fy))
            if f is None:
                cells.append("")
                continue
            unit = f["unit"]
            value = "not given" if f["value"] is None else f"{f['value']:.{f['decimals']}f}"
            marks = ("P" if f["proxy"] else "") + ("E" if f["estimated"] else "")
            cells.append(value + (f" [{marks}]" if marks else ""))
        table.add_row(key, facts[(key, years[-1])]["concept"], *cells, unit)
    table.caption = "[P] a proxy factor (another year's) was used; [E] part of it is an estimate"
    return table


@app.command("brsr")
def brsr(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant (client) reported on.")],
    fy: Annotated[str, typer.Option("--fy", help="Financial year, e.g. 2025-26.")],
    principal: Principal = "",
    token_file: TokenFile = None,
    turnover_inr: Annotated[
        float | None, typer.Option("--turnover-inr", help="Revenue from operations of FY (INR).")
    ] = None,
    previous_turnover_inr: Annotated[
        float | None,
        typer.Option("--previous-turnover-inr", help="Revenue from operations of FY-1 (INR)."),
    ] = None,
    ppp_factor: Annotated[
        float | None,
        typer.Option("--ppp-factor", help="PPP conversion factor (INR per international $)."),
    ] = None,
    physical_output: Annotated[
        float | None, typer.Option("--physical-output", help="Physical output of FY.")
    ] = None,
    previous_physical_output: Annotated[
        float | None, typer.Option("--previous-physical-output", help="Physical output of FY-1.")
    ] = None,
    output_unit: Annotated[
        str | None, typer.Option("--output-unit", help="Unit of the physical output.")
    ] = None,
    allow_proxy_factor: Annotated[
        bool,
        typer.Option(
            "--allow-proxy-factor",
            help="Use the latest published factor when the year's own is not published"
            " (every figure it touches is marked).",
        ),
    ] = False,
    formats: Annotated[
        str, typer.Option("--format", help="json,csv,html,pdf")
    ] = "json,csv,html,pdf",
    out: OutDir = None,
    data_dir: DataDir = None,
) -> None:
    """BRSR Principle 6, Essential Indicators 1 (energy, GJ) and 7 (Scope 1 and 2, t CO2e)
    for FY and FY-1, with an access record and a lineage run of what it read."""
    from reporting.brsr import Denominators
    from reporting.document import BrsrRequest, brsr_document, previous_fy
    from reporting.record import write_report

    cli = cli_context(ctx)
    wanted = _formats(formats)
    if physical_output is not None and not output_unit:
        raise ConfigError("--physical-output needs --output-unit", setting="--output-unit")
    prev = previous_fy(fy)
    request = BrsrRequest(
        tenant=tenant,
        fy=fy,
        denominators=Denominators(
            turnover_inr={k: v for k, v in ((fy, turnover_inr), (prev, previous_turnover_inr))
                          if v is not None},
            ppp_factor=ppp_factor,
            physical_output={k: v for k, v in ((fy, physical_output),
                                               (prev, previous_physical_output)) if v is not None},
            output_unit=output_unit,
        ),
        allow_proxy=allow_proxy_factor,
    )  # fmt: skip
    for name, value in (("--turnover-inr", turnover_inr), ("--ppp-factor", ppp_factor)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be > 0", setting=name, value=value)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    session, log = _session(settings, principal, tenant, token_file)
    try:
        with session:
            doc, _ = brsr_document(session, settings.lake_store(), registry, request)
            written = write_report(
                session,
                registry,
                doc,
                out or settings.data_dir / "reports",
                [("json", lambda d, f: []), *_renderers(wanted)],
                lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
                label=f"fy{fy}",
            )
    finally:
        log.close()
    cli.console.print(_figures_table(doc))
    cli.console.print(f"report: {written.folder}")
    for name, sha in sorted(written.files.items()):
        cli.console.print(f"  {name}  sha256 {sha}")
    cli.console.print(f"lineage run {written.run_id or '(not emitted)'}")


@app.command("esg")
def esg(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant (client) reported on.")],
    since: Annotated[str, typer.Option("--from", help="First day (IST), YYYY-MM-DD.")],
    until: Annotated[str, typer.Option("--to", help="Last day (IST), YYYY-MM-DD, included.")],
    principal: Principal = "",
    token_file: TokenFile = None,
    allow_proxy_factor: Annotated[
        bool,
        typer.Option(
            "--allow-proxy-factor",
            help="Use the latest published factor for a year without its own (marked).",
        ),
    ] = False,
    out: OutDir = None,
    data_dir: DataDir = None,
) -> None:
    """The ESG data pack: monthly energy by source and emissions per branch, city, state and
    for the tenant, as CSV and Parquet, with an access record and a lineage run."""
    from reporting.esg import esg_document, write_esg_files
    from reporting.record import write_report

    cli = cli_context(ctx)
    first, last = _days(since, until)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    session, log = _session(settings, principal, tenant, token_file)
    try:
        with session:
            doc = esg_document(
                session,
                settings.lake_store(),
                registry,
                tenant,
                first,
                last + timedelta(days=1),
                allow_proxy=allow_proxy_factor,
            )
            written = write_report(
                session,
                registry,
                doc,
                out or settings.data_dir / "reports",
                [("esg", write_esg_files)],
                lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
                label=f"{first.isoformat()}_{last.isoformat()}",
            )
    finally:
        log.close()
    totals = doc["tables"]["tenant"]
    cli.console.print(
        f"ESG pack {tenant} {first} to {last}: {len(doc['tables']['branch'])} branch-months;"
        f" {sum(r['total_gj'] for r in totals):.2f} GJ,"
        f" {sum(r['scope1_t_co2e'] + r['scope2_t_co2e'] for r in totals):.3f} t CO2e"
        + (" (proxy factors used)" if any(r["proxy_factor"] for r in totals) else "")
    )
    cli.console.print(f"report: {written.folder}")
    for name, sha in sorted(written.files.items()):
        cli.console.print(f"  {name}  sha256 {sha}")


@app.command("dg-log")
def dg_log(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant (client).")],
    since: Annotated[str, typer.Option("--from", help="First day (IST), YYYY-MM-DD.")],
    until: Annotated[str, typer.Option("--to", help="Last day (IST), YYYY-MM-DD, included.")],
    branch: Annotated[str | None, typer.Option("--branch", help="Only this branch.")] = None,
    principal: Principal = "",
    token_file: TokenFile = None,
    out: OutDir = None,
    data_dir: DataDir = None,
) -> None:
    """The CAQM DG operation log: each run of each DG set (start, stop, hours, kWh, litres,
    load), the GRAP stage in force, the daily total against its class's cap, and a flag on
    each run outside the rule; appended to the tenant's hash-chained log (new runs once,
    corrections as new entries), with CSV and PDF per set and month."""
    from reporting.dglog import append_log, dg_log_document, log_folder
    from reporting.record import write_report
    from reporting.render import render_dg_files

    cli = cli_context(ctx)
    first, last = _days(since, until)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    folder = log_folder(settings.data_dir, tenant)
    session, log = _session(settings, principal, tenant, token_file)
    try:
        with session:
            doc = dg_log_document(
                session, settings.lake_store(), registry, tenant, first,
                last + timedelta(days=1), branch=branch,
            )  # fmt: skip
            appended = append_log(doc, folder, anchor_dir=settings.audit_anchor_dir)
            doc["log"] = {
                "folder": str(folder),
                "appended": appended.appended,
                "corrected": appended.corrected,
                "unchanged": appended.unchanged,
                "head_seq": appended.head_seq,
            }
            written = write_report(
                session,
                registry,
                doc,
                out or settings.data_dir / "reports",
                [("dg", render_dg_files)],
                lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
                label=f"{first.isoformat()}_{last.isoformat()}",
            )
    finally:
        log.close()
    runs = doc["runs"]
    flagged = [r for r in runs if set(r["flags"]) - {"NOT_IN_NCR"}]
    cli.console.print(
        f"DG log {tenant} {first} to {last}: {len(doc['sets'])} set(s), {len(runs)} closed"
        f" run(s), {len(flagged)} flagged; log {folder}: {appended.appended} appended,"
        f" {appended.corrected} corrected, {appended.unchanged} already logged",
        markup=False,
    )
    if runs:
        cli.console.print(_rows_table("runs", [_run_row(r) for r in runs]))
    cli.console.print(f"report: {written.folder}")


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    keep = ("device_id", "branch_id", "start", "stop", "duration_h", "kwh", "fuel_l",
            "avg_load_pct", "stage", "rule", "daily_cap_h")  # fmt: skip
    return {k: run[k] for k in keep} | {"flags": ", ".join(run["flags"])}


def _days(since: str, until: str) -> tuple[Any, Any]:
    from datetime import date

    try:
        first, last = date.fromisoformat(since), date.fromisoformat(until)
    except ValueError:
        raise ConfigError(
            f"--from {since!r} and --to {until!r} must be YYYY-MM-DD", setting="--from"
        ) from None
    if last < first:
        raise ConfigError("--to is before --from", setting="--to", value=until)
    return first, last


@app.command("verify")
def verify(
    ctx: typer.Context,
    report: Annotated[Path, typer.Argument(help="A report folder (or its report.json).")],
    principal: Principal = "",
    token_file: TokenFile = None,
    data_dir: DataDir = None,
) -> None:
    """Check a report's files against its access record, and recompute it from the table
    and factor versions it recorded (time travel): identical (exit 0) or the differences
    (exit 5)."""
    from reporting.errors import EXIT_DIFFERS
    from reporting.record import load_document
    from reporting.verify import verify_report

    cli = cli_context(ctx)
    doc, folder = load_document(report)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    log = access_log(settings)
    try:
        verdict = verify_report(
            doc,
            folder,
            settings.lake_store(),
            registry,
            KeyStore(settings.keys),
            log,
            settings.data_dir / "audit" / "access",
            principal=_principal(principal),
            token=read_token(token_file),
            anchor_dir=settings.audit_anchor_dir,
        )
    finally:
        log.close()
    for line in verdict.integrity + verdict.differences:
        cli.console.print(f"  {line}", markup=False, highlight=False)
    cli.console.print(f"report verify {folder.name}: {verdict.summary()}")
    if not verdict.identical:
        raise typer.Exit(EXIT_DIFFERS)


@app.command("explain")
def explain_command(
    ctx: typer.Context,
    report: Annotated[Path, typer.Argument(help="A report folder (or its report.json).")],
    figure: Annotated[str, typer.Option("--figure", help="A, D, E, total, S1, S2, ...")],
    fy: Annotated[
        str | None, typer.Option("--fy", help="The report's FY or previous FY (default: FY).")
    ] = None,
    branch: Annotated[
        str | None, typer.Option("--branch", help="Down to this branch's devices.")
    ] = None,
    day: Annotated[
        str | None, typer.Option("--day", help="Down to the readings of this IST day.")
    ] = None,
    principal: Principal = "",
    token_file: TokenFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Break a report's figure down to branches, then (--branch) devices and months, then
    (--day) readings and the landing segments that carried them; read at the versions the
    report recorded."""
    from datetime import date

    import orjson

    from lineage.config import LineageConfig
    from lineage.store import LineageStore
    from reporting.explain import explain
    from reporting.record import load_document

    cli = cli_context(ctx)
    doc, _ = load_document(report)
    when = None
    if day is not None:
        try:
            when = date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"--day {day!r} is not YYYY-MM-DD", setting="--day") from None
        if branch is None:
            raise ConfigError("--day needs --branch", setting="--branch")
    settings = cli.settings(data_dir=data_dir)
    versions = {str(i["table"]): i["version"] for i in doc.get("inputs") or []}
    session, log = _session(settings, principal, str(doc["tenant"]), token_file, versions=versions)
    try:
        with session:
            found = explain(
                doc,
                session,
                figure,
                fy=fy,
                branch=branch,
                day=when,
                lineage=LineageStore(LineageConfig.from_settings(settings).directory),
            )
    finally:
        log.close()
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "figure": found.figure,
                    "factors": found.factors,
                    "branches": found.branches,
                    "devices": found.devices,
                    "readings": found.readings,
                    "segments": found.segments,
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC,
                default=str,
            ).decode()
        )
        return
    f = found.figure
    cli.console.print(
        f"{f['key']} ({f['concept']}), FY {f['fy']}: {f['value']} {f['unit']}"
        f" = {f['formula']}"
        + (" [proxy factor]" if f["proxy"] else "")
        + (f" [estimated part {f['estimated']}]" if f["estimated"] else ""),
        markup=False,
    )
    for u in found.factors:
        cli.console.print(
            f"  factor {u['factor']} = {u['value']} {u['unit']} ({u['version']}, {u['variant']})"
            + (" PROXY" if u["proxy"] else ""),
            markup=False,
        )
    for title, rows in (
        ("branches", found.branches),
        ("devices by month", found.devices),
        ("readings", found.readings),
    ):
        if rows:
            cli.console.print(_rows_table(title, rows))
    for run, segments in sorted(found.segments.items()):
        cli.console.print(f"pipeline run {run} read: {', '.join(segments)}", markup=False)


def _rows_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    columns = list(rows[0])
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
