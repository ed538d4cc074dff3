"""``energylake extract``: a dataset, shaped for one purpose, written to a Parquet file.

The rows are the governed session's (``analytics.access``: the principal's tenants and
branches, the purpose's columns, objections honoured); the file is written atomically;
then an access record (fail-closed) and an OpenLineage run (inputs: the tables at their
versions; output: the file, its size and SHA-256) say where the copy went, so retention
and erasure can find every copy later.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from analytics.access import Session
from analytics.errors import AccessDeniedError
from contracts import Contract
from durable.files import atomic_file
from lineage.emitter import FileOutput, LineageEmitter, TableDataset, jobs
from lineage.runs import uri_of

__all__ = ["ExtractReport", "extract"]

log = logging.getLogger("energylake.extract")


@dataclass(slots=True)
class ExtractReport:
    dataset: str
    path: Path
    rows: int
    size_bytes: int
    sha256: str
    tables: dict[str, int | None] = field(default_factory=dict)  # table path -> version
    run_id: str | None = None  # the lineage run (None: not emitted)


def extract(
    session: Session,
    dataset: str,
    out: Path,
    *,
    lake_uri: str,
    emitter: LineageEmitter | None,
) -> ExtractReport:
    """Write ``dataset`` as ``session`` sees it to ``out`` (Parquet, replaced atomically)."""
    if dataset not in session.views:
        session.record(
            "access_denied",
            {"outcome": "denied", "reason": "dataset_not_for_purpose", "dataset": dataset},
        )
        raise AccessDeniedError(
            f"purpose {session.purpose!r} uses no field of {dataset!r}; the session offers"
            f" {', '.join(sorted(session.views))}",
            principal=session.principal,
            purpose=session.purpose,
            reason="dataset_not_for_purpose",
        )
    sources = session.sources(dataset)
    table = session.sql(f'SELECT * FROM "{dataset}"')  # noqa: S608 - a view name of ours
    out = out.resolve()
    with atomic_file(out) as handle:
        pq.write_table(table, handle)
    data = out.read_bytes()
    report = ExtractReport(
        dataset=dataset,
        path=out,
        rows=table.num_rows,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        tables={rel: version for rel, version, _ in sources},
    )
    if emitter is not None:
        report.run_id = _lineage(emitter, session, report, lake_uri, sources)
    session.record(
        "extract",
        {
            "outcome": "ok",
            "dataset": dataset,
            "file": str(out),
            "sha256": report.sha256,
            "size_bytes": report.size_bytes,
            "rows": report.rows,
            "tables": [{"table": r, "version": v} for r, v in report.tables.items()],
            "lineage_run": report.run_id,
        },
    )
    return report


def _lineage(
    emitter: LineageEmitter,
    session: Session,
    report: ExtractReport,
    lake_uri: str,
    sources: list[tuple[str, int | None, Contract]],
) -> str | None:
    try:
        run = emitter.run(jobs.generic(f"extract.{report.dataset}", "EXTRACT"))
        # no principal here (a person's account name; lineage is read more widely than the
        # access log): the session id leads to it through the access log
        run.details["extract"] = {
            "purpose": session.purpose,
            "tenants": session.tenants,
            "session": session.id,
        }
        inputs = [
            TableDataset(lake_uri, rel, version, contract)
            for rel, version, contract in sources
            if version is not None
        ]
        output = FileOutput(
            uri_of(report.path.parent),
            report.path.name,
            report.sha256,
            report.rows,
            report.size_bytes,
        )
        run.start(inputs)
        if not run.complete([output]):
            return None
    except Exception:
        log.exception("LINEAGE_HOOK_FAILED: extract run not emitted")
        return None
    return run.run_id
