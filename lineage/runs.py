"""Runs of the lake's maintenance and loading jobs: compaction and reference loads.

Callers (``pipelines``) pass plain records; every function here logs and carries on when
emission fails (``LINEAGE_HOOK_FAILED``), so a job never fails because of its lineage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contracts import Contract
from lineage.emitter import LineageEmitter, RunRef, SegmentInput, TableDataset, jobs

__all__ = ["CompactedTable", "LoadedTable", "emit_compaction", "emit_reference_load", "uri_of"]

log = logging.getLogger("energylake.lineage")


def uri_of(location: str | Path) -> str:
    """A namespace for a lake or landing root: URIs as they are, paths as absolute file URIs."""
    text = str(location)
    return text.rstrip("/") if "://" in text else Path(text).resolve().as_uri()


@dataclass(frozen=True, slots=True)
class CompactedTable:
    rel: str
    contract: Contract
    versions: Sequence[int]
    files_added: int
    files_removed: int


@dataclass(frozen=True, slots=True)
class LoadedTable:
    rel: str
    contract: Contract
    source: str  # the file it was loaded from
    version: int
    rows: int
    changed: bool
    tenant: str | None = None


def emit_compaction(
    emitter: LineageEmitter,
    lake_uri: str,
    tables: Sequence[CompactedTable],
    *,
    parent: RunRef | None = None,
) -> str | None:
    """One compaction run: each table in at the version before, out at its last new version.

    Returns the run id (None when nothing was compacted or the run could not be built).
    """
    done = [t for t in tables if t.versions]
    if not done:
        return None
    try:
        run = emitter.run(jobs.compaction(), parent=parent)
        inputs = [TableDataset(lake_uri, t.rel, min(t.versions) - 1, t.contract) for t in done]
        outputs = [
            TableDataset(lake_uri, t.rel, max(t.versions), t.contract, files=t.files_added)
            for t in done
        ]
        run.details["compacted"] = {
            t.rel: {"files_removed": t.files_removed, "files_added": t.files_added} for t in done
        }
        run.start(inputs)
        run.complete(outputs)
    except Exception:
        log.exception("LINEAGE_HOOK_FAILED: compaction run not emitted")
        return None
    return run.run_id


def emit_reference_load(
    emitter: LineageEmitter,
    lake_uri: str,
    source_dir: Path,
    tables: Sequence[LoadedTable],
) -> str | None:
    """One reference-load run: the source files in, the tables that changed out."""
    try:
        run = emitter.run(jobs.reference_load())
        source = uri_of(source_dir)
        inputs = [SegmentInput(source, Path(s).name) for s in sorted({t.source for t in tables})]
        outputs = [
            TableDataset(lake_uri, t.rel, t.version, t.contract, t.tenant, rows=t.rows)
            for t in tables
            if t.changed
        ]
        run.details["unchanged"] = sorted(t.rel for t in tables if not t.changed)
        run.start(inputs)
        run.complete(outputs)
    except Exception:
        log.exception("LINEAGE_HOOK_FAILED: reference load run not emitted")
        return None
    return run.run_id
