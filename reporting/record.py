"""A report on disk and on record: its folder of files, the access record that names every
file's SHA-256 (hash-chained, ``audit/access``) and the OpenLineage run (inputs: the lake
tables and the factor table at their versions; outputs: the files and their hashes).

A report folder ``<out>/<kind>-<tenant>-<period>-<UTC stamp>/`` holds ``report.json`` (the
document) and what it was rendered to. ``report.json`` names the lineage run and the access
session, so ``report verify`` finds both.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from analytics.access import Session
from audit.query import read_records
from contracts import ContractRegistry
from durable.files import atomic_file
from lineage.emitter import FileOutput, LineageEmitter, TableDataset, jobs
from lineage.runs import uri_of
from reporting.errors import ReportFileError

__all__ = [
    "REPORT_EVENT",
    "ReportFiles",
    "file_sha256",
    "header",
    "load_document",
    "recorded_files",
    "write_report",
]

log = logging.getLogger("energylake.report")

REPORT_EVENT = "report"
DOCUMENT = "report.json"
_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


@dataclass(slots=True)
class ReportFiles:
    folder: Path
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    run_id: str | None = None

    @property
    def document(self) -> Path:
        return self.folder / DOCUMENT


def header(session: Session, kind: str, tenant: str, start: date, end: date) -> dict[str, Any]:
    """The fields every report document starts with: its format and kind, the tenant, the
    IST days ``[start, end)`` it covers, when, by whom, for which purpose, in which session."""
    return {
        "format": f"energylake.report.{kind}/1",
        "kind": kind,
        "tenant": tenant,
        "period": {
            "from": start.isoformat(),
            "to": (end - timedelta(days=1)).isoformat(),
            "tz": "Asia/Kolkata",
        },
        "generated_at": datetime.now(UTC).isoformat(),
        "principal": session.principal,
        "purpose": session.purpose,
        "session": session.id,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_report(
    session: Session,
    registry: ContractRegistry,
    doc: dict[str, Any],
    out_dir: Path,
    renderers: Sequence[tuple[str, Callable[[dict[str, Any], Path], list[Path]]]],
    *,
    lake_uri: str,
    emitter: LineageEmitter | None,
    label: str,
) -> ReportFiles:
    """Write ``doc`` and its renderings (``(format, render(doc, folder) -> files)``) to a
    new folder under ``out_dir``; then the lineage run and the access record (fail-closed:
    the command fails if the record cannot be made durable)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (out_dir / f"{doc['kind']}-{doc['tenant']}-{label}-{stamp}").resolve()
    folder.mkdir(parents=True, exist_ok=False)
    run_id = str(uuid.uuid4()) if emitter is not None and not emitter.disabled else None
    doc["lineage_run"] = run_id
    written = ReportFiles(folder, run_id=run_id)
    try:
        with atomic_file(folder / DOCUMENT) as handle:
            handle.write(orjson.dumps(doc, option=_OPTIONS) + b"\n")
        paths = [folder / DOCUMENT]
        for _fmt, render in renderers:
            paths += render(doc, folder)
        for path in paths:
            written.files[path.name] = file_sha256(path)
    except BaseException:  # no half report left behind: a folder is a recorded report
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if emitter is not None and run_id is not None:
        _lineage(emitter, registry, doc, written, lake_uri, run_id)
    session.record(
        REPORT_EVENT,
        {
            "outcome": "ok",
            "kind": doc["kind"],
            "tenant": doc["tenant"],
            "period": label,
            "folder": str(folder),
            "files": [{"file": n, "sha256": h} for n, h in sorted(written.files.items())],
            "tables": doc["inputs"],
            "factor_table": doc.get("factor_table"),
            "reference": doc.get("reference"),
            "lineage_run": run_id,
        },
    )
    return written


def _lineage(
    emitter: LineageEmitter,
    registry: ContractRegistry,
    doc: dict[str, Any],
    written: ReportFiles,
    lake_uri: str,
    run_id: str,
) -> None:
    try:
        run = emitter.run(jobs.generic(f"report.{doc['kind']}", "REPORT"), run_id=run_id)
        # no principal here (a person's account name): the session id leads to it through
        # the access log, which is where who-read-what belongs
        run.details["report"] = {
            "purpose": doc["purpose"],
            "tenant": doc["tenant"],
            "session": doc["session"],
        }
        inputs = [
            TableDataset(lake_uri, i["table"], i["version"], _contract(registry, i["table"]))
            for i in doc["inputs"]
            if i["version"] is not None
        ]
        # the platform reference read: the factor table, the DG rules and GRAP calendar
        reference = [doc.get("factor_table"), *(doc.get("reference") or [])]
        for ref in reference:
            if ref and ref.get("version") is not None:
                inputs.append(
                    TableDataset(
                        lake_uri, ref["table"], ref["version"], _contract(registry, ref["table"])
                    )
                )
        outputs = [
            FileOutput(
                uri_of(written.folder),
                name,
                sha,
                0,
                (written.folder / name).stat().st_size,
                file_format=Path(name).suffix.lstrip(".") or "file",
            )
            for name, sha in sorted(written.files.items())
        ]
        run.start(inputs)
        run.complete(outputs)
    except Exception:
        log.exception("LINEAGE_HOOK_FAILED: report run not emitted")


def _contract(registry: ContractRegistry, rel: str) -> Any:
    dataset = rel.rstrip("/").split("/")[-1]
    return registry.get(dataset) if dataset in registry.datasets else None


def load_document(path: Path) -> tuple[dict[str, Any], Path]:
    """A report's document and its folder, from the folder or its ``report.json``."""
    file = path / DOCUMENT if path.is_dir() else path
    if not file.is_file():
        raise ReportFileError(
            f"{path}: no {DOCUMENT} (give a report folder or its {DOCUMENT})",
            setting="REPORT",
            value=str(path),
        )
    try:
        doc = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ReportFileError(
            f"{file}: not JSON ({exc}); was it changed?", setting="REPORT", value=str(file)
        ) from None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("energylake.report."):
        raise ReportFileError(
            f"{file}: not an energylake report document", setting="REPORT", value=str(file)
        )
    return doc, file.parent


def recorded_files(access_dir: Path, session_id: str) -> dict[str, str] | None:
    """The files and hashes the access record of the report made by session ``session_id``
    names (None: no such record)."""
    found: dict[str, str] | None = None
    for record in read_records(access_dir):
        if record.get("event") == REPORT_EVENT and record.get("session") == session_id:
            found = {str(f["file"]): str(f["sha256"]) for f in record.get("files") or []}
    return found
