"""``energylake subject``: a data subject's rights -- find, export, rectify, erase
(``retention.find``, ``retention.export``, ``retention.rectify``, ``retention.erase``).

Every command leaves a record in the ``subjects`` audit log under the keyed subject digest
(never an identifier); erase also leaves a lineage run (job ``erasure``) and a receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from analytics.grants import GrantBook, os_user
from audit.log import AuditLog
from cli.common import cli_context
from contracts import ContractRegistry, load_registry
from contracts.errors import ConfigError
from durable.files import atomic_write
from lake.delta import latest_version
from lake.keys import KeyStore
from lineage.emitter import LineageEmitter, TableDataset, jobs
from pipelines.settings import Settings
from retention.erase import ErasureReceipt, erase_subject, resume
from retention.export import ExportReport, export_subject
from retention.find import Findings, Places, find_subject, start_subject
from retention.rectify import rectify_subject
from retention.subject import ID_OPTIONS, Subject

__all__ = ["app", "erase_request", "export_request", "find_request", "show_findings"]

app = typer.Typer(
    name="subject",
    help="A data subject's rights: find, export, rectify, erase (dry run unless --apply).",
    no_args_is_help=True,
)

Email = Annotated[str | None, typer.Option("--email", help="The person's e-mail.")]
Mobile = Annotated[str | None, typer.Option("--mobile", help="The person's mobile (E.164).")]
Name = Annotated[str | None, typer.Option("--name", help="The person's full name.")]
ContactId = Annotated[str | None, typer.Option("--contact-id", help="A contact's id.")]
TechnicianId = Annotated[str | None, typer.Option("--technician-id", help="A technician's id.")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override data_dir.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _registry(settings: Settings) -> ContractRegistry:
    return load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()


def _places(settings: Settings) -> Places:
    return Places(
        data_dir=settings.data_dir,
        landing_dir=settings.landing,
        lineage_dir=settings.lineage_dir or settings.data_dir / "lineage",
        keys_dir=settings.keys,
        text_dirs=(settings.data_dir / "quality", settings.data_dir / "logs"),
    )


def _subject(options: dict[str, str | None]) -> Subject:
    return start_subject(options, ["contact", "technician"])


def _options(
    email: str | None, mobile: str | None, name: str | None, contact: str | None, tech: str | None
) -> dict[str, str | None]:
    # subject kinds (vocabulary ``subjects``) are the keys for ids
    return {"email": email, "mobile": mobile, "name": name, "contact": contact, "technician": tech}


def digest_key(settings: Settings) -> bytes:
    """The platform's key for subject digests (``keys/platform/subjects.key``)."""
    return KeyStore(settings.keys / "platform").get("subjects").secret


def subjects_log(settings: Settings) -> AuditLog:
    """The audit log of subject requests: fail-closed."""
    return AuditLog(
        settings.data_dir / "audit" / "subjects",
        component="subjects",
        fail_closed=True,
        anchor_dir=settings.audit_anchor_dir,
        anchor_every_records=settings.audit_anchor_every_records,
        anchor_interval_s=settings.audit_anchor_interval_s,
    )


def find_request(settings: Settings, options: dict[str, str | None]) -> tuple[Findings, str]:
    """Find the person a request names (the digest names them in records)."""
    start = _subject(options)
    kind = next(k for k, v in options.items() if v)
    digest = start.digest(digest_key(settings))  # of what the request names: stable
    findings = find_subject(settings.lake_store(), _registry(settings), _places(settings), start)
    return findings, f"{kind}:{digest}"


def _summary(findings: Findings) -> dict[str, Any]:
    return {
        "tables": len(findings.tables),
        "rows_naming": sum(len(t.named) for t in findings.tables),
        "rows_mentioning": sum(len(t.mentioned) for t in findings.tables),
        "segments": len(findings.segments),
        "files": len(findings.files),
        "ambiguous": findings.subject.ambiguous(),
    }


def show_findings(console: Any, findings: Findings, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("place")
    table.add_column("where", overflow="fold")
    table.add_column("version")
    table.add_column("rows / records")
    for place in findings.places():
        if place["place"] == "table":
            count = f"{place['rows_naming']} naming, {place['rows_mentioning']} mentioning"
            table.add_row(f"table {place['dataset']}", place["table"], str(place["version"]), count)
        else:
            count = str(place.get("records") or place.get("occurrences"))
            if place.get("as_pseudonym"):
                count += " (pseudonyms)"
            table.add_row(str(place["place"]), str(place["path"]), "", count)
    console.print(table)
    ambiguous = findings.subject.ambiguous()
    if ambiguous:
        console.print(
            f"[yellow]several ids of kind {', '.join(ambiguous)} matched: the identifier may "
            "name more than one person[/yellow]"
        )


@app.command("find")
def subject_find(
    ctx: typer.Context,
    email: Email = None,
    mobile: Mobile = None,
    name: Name = None,
    contact_id: ContactId = None,
    technician_id: TechnicianId = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Every place the person appears: tables (dataset, tenant, version, rows), raw
    segments, quarantine excerpts, extracts and reference files found through lineage,
    Data Docs and logs, pseudonyms. Changes nothing; audited."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    findings, who = find_request(settings, _options(email, mobile, name, contact_id, technician_id))
    subjects_log(settings).append(
        "SUBJECT_FIND", {"subject": who, "actor": os_user(), **_summary(findings)}
    )
    if as_json:
        typer.echo(orjson.dumps({"places": findings.places()}, option=orjson.OPT_INDENT_2))
        return
    show_findings(cli.console, findings, f"where {who.split(':')[0]} {who.split(':')[1]} appears")


@app.command("export")
def subject_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the package (created).")],
    email: Email = None,
    mobile: Mobile = None,
    name: Name = None,
    contact_id: ContactId = None,
    technician_id: TechnicianId = None,
    data_dir: DataDir = None,
) -> None:
    """Write the person's portability package: per dataset JSON and Parquet, and a
    manifest (purposes, categories, recipients, retention, source). Audited."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    options = _options(email, mobile, name, contact_id, technician_id)
    report = export_request(settings, options, out)
    cli.console.print(
        f"exported {sum(report.rows.values())} rows of {len(report.rows)} datasets to {out} "
        f"({len(report.files)} files, manifest.json)"
    )


def export_request(settings: Settings, options: dict[str, str | None], out: Path) -> ExportReport:
    """``subject export`` without its printing: the package, and its audit record."""
    findings, who = find_request(settings, options)
    registry = _registry(settings)
    grants = GrantBook(settings.lake_store(), registry).load()

    def recipients(tenant: str | None, purposes: frozenset[str]) -> list[str]:
        return sorted(
            g.principal
            for g in grants.grants.values()
            if (g.all_tenants or tenant in g.tenants) and g.purposes & purposes
        )

    report = export_subject(
        settings.lake_store(), registry, findings, out, digest=who, recipients=recipients
    )
    subjects_log(settings).append(
        "SUBJECT_EXPORT",
        {"subject": who, "actor": os_user(), "rows": report.rows, "files": report.files},
    )
    return report


@app.command("rectify")
def subject_rectify(
    ctx: typer.Context,
    set_: Annotated[str, typer.Option("--set", help="KIND=VALUE (email, mobile, name).")],
    email: Email = None,
    mobile: Mobile = None,
    name: Name = None,
    contact_id: ContactId = None,
    technician_id: TechnicianId = None,
    data_dir: DataDir = None,
) -> None:
    """Correct one of the person's values in every table, and remove the old value from
    the tables' history (purge). Audited."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    kind, sep, value = set_.partition("=")
    if not sep or kind not in ID_OPTIONS or not value:
        raise ConfigError(f"--set takes KIND=VALUE with KIND one of {ID_OPTIONS}", setting="--set")
    findings, who = find_request(settings, _options(email, mobile, name, contact_id, technician_id))
    report = rectify_subject(settings.lake_store(), _registry(settings), findings, kind, value)
    subjects_log(settings).append(
        "SUBJECT_RECTIFY",
        {"subject": who, "actor": os_user(), "field_kind": kind, "tables": report.tables},
    )
    cli.console.print(
        f"{kind} corrected in {sum(report.tables.values())} rows of {len(report.tables)} "
        "tables; the old value's history purged"
    )


@app.command("erase")
def subject_erase(
    ctx: typer.Context,
    email: Email = None,
    mobile: Mobile = None,
    name: Name = None,
    contact_id: ContactId = None,
    technician_id: TechnicianId = None,
    apply: Annotated[bool, typer.Option("--apply", help="Erase (default: a dry run).")] = False,
    all_matches: Annotated[
        bool, typer.Option("--all-matches", help="Erase even when several people match.")
    ] = False,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Erase the person everywhere they appear, remove the bytes, and prove it: a receipt
    lists each place and its check, and a byte scan of the data folder (and the bucket)
    gives the verdict. A dry run unless --apply; exits 1 when the proof finds a residue."""
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    options = _options(email, mobile, name, contact_id, technician_id)
    findings, receipt, who = erase_request(settings, options, apply=apply, all_matches=all_matches)
    if as_json:
        typer.echo(orjson.dumps(receipt.to_json(), option=orjson.OPT_INDENT_2))
    else:
        show_findings(cli.console, findings, f"erasure of {who}" + ("" if apply else " (dry run)"))
        if apply:
            verdict = (
                "[green]zero bytes left[/green]" if receipt.verified else "[red]residues[/red]"
            )
            cli.console.print(
                f"byte scan: {receipt.scanned_files:,} files, {receipt.scanned_bytes:,} bytes: "
                f"{verdict}"
            )
    if apply and not receipt.verified:
        raise typer.Exit(1)


def erase_request(
    settings: Settings, options: dict[str, str | None], *, apply: bool, all_matches: bool = False
) -> tuple[Findings, ErasureReceipt, str]:
    """``subject erase`` without its printing (the demo runs it too): find, erase with
    ``apply``, then the receipt, the audit record and the lineage run."""
    store = settings.lake_store()
    registry = _registry(settings)
    start, digest = resume(_places(settings), _subject(options), digest_key(settings))
    preview = find_subject(store, registry, _places(settings), start)
    if apply and preview.subject.ambiguous() and not all_matches:
        raise ConfigError(
            "several people match (" + ", ".join(preview.subject.ambiguous()) + " ids): name "
            "one by id, or pass --all-matches",
            setting="--all-matches",
        )
    emitter = LineageEmitter.from_settings(settings)
    run = emitter.run(jobs.generic("erasure", "ERASURE")) if apply else None
    versions = {h.rel: h.version for h in preview.tables}
    if run is not None:
        run.start([TableDataset(store.url(""), rel, v) for rel, v in sorted(versions.items())])
    findings, receipt = erase_subject(
        store,
        registry,
        _places(settings),
        start,
        digest=digest,
        apply=apply,
        scan_roots=(settings.data_dir,) if apply else (),
        scan_lake=apply and store.is_s3,
        reader_grace_s=settings.erasure_reader_grace_s,
        findings=preview,
    )
    kind = next(k for k, v in options.items() if v)
    who = f"{kind}:{receipt.subject}"
    if apply:
        _finish(settings, run, receipt, who, versions)
    return findings, receipt, who


def _finish(
    settings: Settings, run: Any, receipt: ErasureReceipt, who: str, versions: dict[str, int]
) -> None:
    folder = settings.data_dir / "erasure" / "receipts"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}-{receipt.subject}.json"
    atomic_write(path, orjson.dumps(receipt.to_json(), option=orjson.OPT_INDENT_2), mode=0o600)
    subjects_log(settings).append(
        "SUBJECT_ERASE",
        {
            "subject": who,
            "actor": os_user(),
            "places": len(receipt.places),
            "verified": receipt.verified,
            "residues": len(receipt.residues),
            "receipt": path.name,
        },
    )
    if run is not None:
        store = settings.lake_store()
        run.details["erasure"] = {
            "subject": who,
            "receipt": path.name,
            "places": len(receipt.places),
        }
        outputs = []
        for rel in sorted(versions):
            after = latest_version(store, rel)
            outputs.append(TableDataset(store.url(""), rel, after))
        run.complete(outputs)
