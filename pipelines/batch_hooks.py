"""What a batch does besides reading and writing rows: its lineage run (hooks that log and
carry on, never fail a batch; docs/LINEAGE.md), the plan as published when the quality
gate holds tables, the branches the gate needs, and the gate's Data Docs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import fields as dataclass_fields

import polars as pl

from batch.lineage import batch_outputs, segment_inputs, snapshot_inputs
from batch.records import GateVerdict, Manifest, Plan, StatKind, TableEntry
from contracts import ContractRegistry
from lake.delta import open_table as open_delta
from lake.delta import read_table, table_exists
from lake.layout import table_rel
from lake.layout import tenants as lake_tenants
from lake.storage import Store
from lineage import LineageEmitter, RunHandle, RunRef, jobs
from lineage.facets import Assertion
from lineage.runs import uri_of
from pipelines.settings import Settings

__all__ = [
    "BatchLineage",
    "data_docs",
    "lineage_session",
    "load_branches",
    "published_plan",
    "wait_for_data_docs",
]

log = logging.getLogger("energylake.process")


class BatchLineage:
    """One batch's run events. Entered with the lock; FAIL on an exception, then re-raised."""

    def __init__(self, settings: Settings, parent: RunRef | None) -> None:
        self.settings = settings
        self.parent = parent
        self.run: RunHandle | None = None
        self.manifest: Manifest | None = None
        self.done = False

    def __enter__(self) -> BatchLineage:
        return self

    def start(self, n: int, manifest: Manifest) -> None:
        self.manifest = manifest
        try:
            emitter = LineageEmitter.from_settings(self.settings)
            self.run = emitter.batch(self.settings.pipeline_id, n, parent=self.parent)
            self.run.start(segment_inputs(manifest, uri_of(self.settings.landing)))
        except Exception:
            log.exception("LINEAGE_HOOK_FAILED batch %s: START not emitted", n)

    def quality(self, rel: str, gate: GateVerdict) -> None:
        """The gate's verdict on ``rel``: its assertions, and the batch's outcome so far."""
        if self.run is None:
            return
        try:
            fields = {f.name for f in dataclass_fields(Assertion)}
            assertions = [
                Assertion(**{k: v for k, v in a.items() if k in fields}) for a in gate.assertions
            ]
            now = self.run.quality
            if not gate.passed or now == "held":
                outcome = "held"
            elif gate.warnings or now == "warned":
                outcome = "warned"
            else:
                outcome = "passed"
            self.run.attach_quality(rel, assertions, outcome=outcome, details={rel: gate.summary})
        except Exception:
            log.exception("LINEAGE_HOOK_FAILED: quality of %s not attached", rel)

    def complete(self, store: Store, registry: ContractRegistry, plan: Plan) -> None:
        self.done = True
        if self.run is None:
            return
        try:
            tag = f"{self.settings.pipeline_id}:{self.run.run_info.get('batch_no')}"
            versions = {rel: _batch_version(store, rel, tag) for rel in plan.tables}
            filesystem, base = store.filesystem()
            lake = uri_of(store.url())
            self.run.complete(
                batch_outputs(
                    plan, versions, lake, registry, filesystem=filesystem, base_path=base
                ),
                inputs=snapshot_inputs(self.manifest, plan, lake, registry),
            )
        except Exception:
            log.exception("LINEAGE_HOOK_FAILED run %s: COMPLETE not emitted", self.run.run_id)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self.run is not None and not self.done:
            try:
                self.run.fail(exc)
            except Exception:
                log.exception("LINEAGE_HOOK_FAILED run %s: FAIL not emitted", self.run.run_id)


def published_plan(plan: Plan) -> Plan:
    """The plan as published: held rows are not in this batch's output. The commit step
    moves them to ``held_files`` and out of the ``day`` counts; a plan from before that
    (no ``held_files``) holds a failed table whole."""
    held = {
        rel
        for rel, g in plan.gate.items()
        if not g.passed and rel in plan.tables and plan.tables[rel].held_files is None
    }
    if not held:
        return plan
    tables = {
        rel: (TableEntry(entry.dataset, [], entry.held_files) if rel in held else entry)
        for rel, entry in plan.tables.items()
    }
    stats = [
        s
        for s in plan.stats
        if not (s.kind is StatKind.DAY and f"tenants/{s.tenant}/{s.dataset}" in held)
    ]
    return Plan(tables=tables, stats=stats, gate=plan.gate)


def load_branches(store: Store) -> pl.DataFrame | None:
    """Every tenant's branches (opening hours and timezone), for the quality gate."""
    frames = []
    for tenant in lake_tenants(store):
        if table_exists(store, rel := table_rel(tenant, "branches")):
            frame = pl.from_arrow(read_table(store, rel))
            assert isinstance(frame, pl.DataFrame)
            frames.append(frame)
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


_DOCS: dict[str, threading.Thread] = {}


def data_docs(settings: Settings) -> None:
    """GE's Data Docs for the validations this process ran (best effort: a report).

    Rendering costs 0.2-0.4 s, a tenth of a 100k-row batch: it runs on a thread of its own
    (the next batch's reading and decoding go on meanwhile; the interpreter waits for it
    at exit), at most every ``quality_docs_interval_s``, one build at a time.
    ``quality_results`` holds every result regardless.
    """
    index = settings.data_dir / "quality" / "index.html"
    running = _DOCS.get("build")
    if running is not None and running.is_alive():
        return
    with contextlib.suppress(OSError):
        if time.time() - index.stat().st_mtime < settings.quality_docs_interval_s:
            return

    def build() -> None:
        try:
            from transforms.quality import build_data_docs

            build_data_docs(settings.data_dir / "quality")
        except Exception:
            log.exception("DATA_DOCS_FAILED: the quality results table still holds every result")

    _DOCS["build"] = thread = threading.Thread(target=build, name="data-docs")
    thread.start()


def wait_for_data_docs(timeout_s: float | None = None) -> None:
    """Block until a Data Docs build in progress (if any) has finished."""
    running = _DOCS.get("build")
    if running is not None:
        running.join(timeout_s)


def _batch_version(store: Store, rel: str, tag: str, depth: int = 200) -> int | None:
    """The table version whose commit carries ``energylake.batch == tag`` (None: not found)."""
    for entry in open_delta(store, rel).history(depth):
        if entry.get("energylake.batch") == tag:
            return int(entry["version"])
    return None


def lineage_session(settings: Settings) -> RunHandle | None:
    try:
        session = LineageEmitter.from_settings(settings).run(jobs.session(settings.pipeline_id))
        session.run_info["pipeline_id"] = settings.pipeline_id
        session.start()
    except Exception:
        log.exception("LINEAGE_HOOK_FAILED: session START not emitted")
        return None
    return session
