"""``energylake process``: closed landing segments -> Delta tables, exactly once.

One batch is one pass of this protocol; its records (typed, ``batch.records``) live under
``_state/<pipeline_id>/`` in the lake, where ``batch.state`` alone knows their paths:

1. **Claim.** The closed segments present now become batch *n* = last done + 1; its
   manifest (segment names, and the version of every table: the pinned snapshot that
   deduplication reads) is written before anything else. A restart finds the manifest and
   resumes batch *n* with the same segments and the same snapshot. Then each segment is
   *staged* in the lake, at its archive place ``raw/YYYY/MM/DD/<name>`` (a hard link on a
   local lake, an upload on S3; a staged copy is never rewritten): Beam's workers read the
   lake's copies, never the landing folder of the machine that claimed the batch, so the
   same pipeline runs on workers that share nothing with it but the lake.
2. **Transform and write** (Beam computes): decode -> normalise -> enforce -> dedupe ->
   quality gate -> Parquet files under deterministic names (tables, quarantine, and the
   gate's quality_results), none committed; the last step (``batch.plan.write_plan``)
   writes the batch's *plan* (files per table, counts, gate verdicts, results files). A
   crash here redoes the step: same inputs, same snapshot, same names.
3. **Commit** (the runner commits). The gate's holds, then one Delta commit per table
   (readings and quarantine), then one per quality_results file, each carrying an app
   transaction (``(pipeline_id, n)``; ``(<pipeline_id>.quality.<dataset>, n)``). Each
   commit is atomic on its own; the batch as a whole is not one transaction: it is
   exactly-once by replay, since a commit whose table already holds the transaction is
   skipped, so a replay adds only the commits a crash left out.
4. **Audit, archive.** The batch's security quarantines are audited (once, a marker), and
   the landing folder lets the segments go: each local file is deleted once the lake's
   copy under ``raw/YYYY/MM/DD/`` is there with the same size (staged at the claim, or
   copied now when a crash came between the claim and the staging).
5. **Done.** ``done.json`` and the ``last_done`` pointer: the batch is finished.

A lock file next to the landing log keeps a second ``process`` from running at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import apache_beam as beam
import polars as pl
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.transforms.environments import Environment

from batch.plan import write_plan
from batch.records import Done, Manifest, Plan, StatKind
from batch.state import BatchState
from contracts import ContractRegistry, EnergylakeError, load_registry
from contracts.errors import BusyError, ConfigError
from durable.files import fsync_dir
from lake.delta import (
    CompactReport,
    DataFile,
    compact,
    files_per_partition,
    latest_version,
    read_table,
    table_exists,
)
from lake.layout import UNASSIGNED_TENANT, raw_archive_rel, table_rel
from lake.layout import tenants as lake_tenants
from lake.reference import load_device_registry
from lake.storage import S3Encryption, Store
from landing.chunks import group_segments
from landing.reader import closed_segments
from lineage import LineageEmitter, RunRef
from lineage.runs import CompactedTable, emit_compaction, uri_of
from pipelines.audit import audit_batch
from pipelines.batch_commit import commit_tables, hold
from pipelines.batch_hooks import (
    BatchLineage,
    data_docs,
    lineage_session,
    load_branches,
    published_plan,
)
from pipelines.settings import Settings
from transforms.beam import (
    DAMAGED,
    GATE,
    QUALITY_FILES,
    QUARANTINE,
    STATS,
    BatchContext,
    DecodeToRows,
    Deduplicate,
    ReadSegments,
    TableRows,
    WriteLake,
    quarantine_keyed,
    quarantine_stats,
)
from transforms.beam_internals import quick_state_sampler
from transforms.quality_results import commit_results_files
from transforms.registry import device_frame

__all__ = [
    "BatchReport",
    "CompactionPass",
    "PipelineBusyError",
    "PipelineConfigError",
    "ProcessError",
    "compact_if_needed",
    "follow",
    "ingest_stats",
    "process_once",
]

log = logging.getLogger("energylake.process")
DEFAULT_RUNNER = "FnApiRunner"


class ProcessError(EnergylakeError):
    """The pipeline cannot run (another process holds the lock, bad runner, ...)."""


class PipelineConfigError(ProcessError, ConfigError):
    """A runner option the pipeline cannot run with (``setting``, ``value``); exit code 2."""


class PipelineBusyError(ProcessError, BusyError):
    """Another process runs this pipeline id (``what``: its lock file); exit code 4."""


BatchReport = Done  # what ``process_once`` returns: the batch's done record


@contextlib.contextmanager
def _lock(landing: Path, pipeline_id: str) -> Iterator[None]:
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f".process-{pipeline_id}.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PipelineBusyError(
                f"another energylake process holds {path}; one process per pipeline id: "
                "wait for it or stop it, then run again",
                what=str(path),
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- one batch -----------------------------------------------------------------------------


def _tables(registry: ContractRegistry, tenants: Sequence[str]) -> list[tuple[str, str]]:
    out = [(t, d) for t in tenants for d in (*registry.readings_datasets, QUARANTINE)]
    return [*out, (UNASSIGNED_TENANT, QUARANTINE)]


def _snapshot(store: Store, tables: list[tuple[str, str]]) -> dict[str, int | None]:
    snap: dict[str, int | None] = {}
    for tenant, dataset in tables:
        rel = table_rel(tenant, dataset)
        snap[rel] = latest_version(store, rel)
    return snap


def _beam_options(runner: str, beam_args: Sequence[str]) -> tuple[Any, PipelineOptions]:
    options = PipelineOptions(list(beam_args))
    if runner == DEFAULT_RUNNER:
        quick_state_sampler()  # transforms/beam_internals.py says why
        return FnApiRunner(default_environment=_sdk_environment(options)), options
    options = PipelineOptions([*beam_args, f"--runner={runner}"])
    return None, options


# What FnApiRunner can run the SDK harness in, besides this process: a worker pool's
# processes (EXTERNAL), which is how Flink and Dataflow run Python DoFns. PROCESS is
# Beam's option for a portable job server: FnApiRunner has no worker handler for it.
_FNAPI_ENVIRONMENTS = ("EMBEDDED", "EXTERNAL")


def _sdk_environment(options: PipelineOptions) -> Environment | None:
    """The SDK harness's environment that ``--environment_type`` asks for; None (Beam's
    default for FnApiRunner): in this process."""
    portable = options.view_as(PortableOptions)
    kind = (portable.environment_type or "EMBEDDED").upper()
    if kind not in _FNAPI_ENVIRONMENTS:
        raise PipelineConfigError(
            f"--environment_type={portable.environment_type}: FnApiRunner runs the SDK "
            f"harness in this process or in a worker pool; use EXTERNAL with "
            f"--environment_config=HOST:PORT (or set beam_worker_pool), or pick --runner",
            setting="--environment_type",
            value=portable.environment_type,
        )
    if kind == "EMBEDDED":
        return None
    if not portable.environment_config:
        raise PipelineConfigError(
            "--environment_type=EXTERNAL needs --environment_config=HOST:PORT of a worker "
            "pool (python -m apache_beam.runners.worker.worker_pool_main --service_port=PORT)",
            setting="--environment_config",
        )
    return Environment.from_options(portable)


def _harness_here(runner: str, beam_args: Sequence[str]) -> bool:
    """Whether the batch's DoFns run in this process (FnApiRunner, embedded harness)."""
    if runner != DEFAULT_RUNNER:
        return False
    return _sdk_environment(PipelineOptions(list(beam_args))) is None


@functools.cache
def _no_data_docs() -> None:
    # GE's Data Docs render the validations of this process's GE context; the gate ran
    # in the SDK workers, so they would show none of this lake's (or another run's).
    log.warning(
        "quality Data Docs are not built when the batch runs in SDK workers outside this "
        "process; the quality_results table holds every gate result"
    )


def _worker_args(settings: Settings, beam_args: Sequence[str]) -> list[str]:
    """``beam_args``, with the worker pool of the settings unless they name an environment."""
    args = list(beam_args)
    pool = settings.beam_worker_pool
    if pool is None or any(a.startswith("--environment_type") for a in args):
        return args
    return [*args, "--environment_type=EXTERNAL", f"--environment_config={pool}"]


def _run_beam(
    ctx: BatchContext,
    segments: list[tuple[str, int]],
    runner: str,
    beam_args: Sequence[str],
    state: BatchState,
) -> None:
    runner_obj, options = _beam_options(runner, beam_args)
    plan_rel = state.plan_rel(ctx.batch_no)
    lake_uri = ctx.lake_uri
    pipeline = (
        beam.Pipeline(runner=runner_obj, options=options)
        if runner_obj
        else beam.Pipeline(options=options)
    )
    with pipeline as p:
        chunks = (
            p
            | "Segments" >> beam.Create(group_segments(segments))
            | "ReadSegments" >> ReadSegments(ctx)
        )
        damaged = chunks[DAMAGED]
        rows = chunks.tables | "DecodeNormaliseEnforce" >> DecodeToRows(ctx)
        deduped = rows.rows | "Deduplicate" >> Deduplicate(ctx)
        quarantine = (rows[QUARANTINE], deduped[QUARANTINE]) | "AllQuarantine" >> beam.Flatten()
        written = (
            quarantine
            | "QuarantineTable" >> beam.Map(quarantine_keyed).with_output_types(TableRows)
            | "WriteQuarantine" >> WriteLake(ctx)
        )
        files = (deduped.files, written.files) | "AllFiles" >> beam.Flatten()
        stats = (
            deduped[STATS],
            written[STATS],
            damaged,
            quarantine | "QuarantineCounts" >> beam.FlatMap(quarantine_stats),
        ) | "AllStats" >> beam.Flatten()
        plan_items = (
            files | "AsFiles" >> beam.Map(lambda f: ("file", f)),
            stats | "AsStats" >> beam.Map(lambda s: ("stat", s)),
            deduped[GATE] | "AsGate" >> beam.Map(lambda g: ("gate", g)),
            deduped[QUALITY_FILES] | "AsQuality" >> beam.Map(lambda q: ("quality", q)),
        ) | "PlanItems" >> beam.Flatten()
        _ = (
            plan_items
            | "CollectPlan" >> beam.combiners.ToList()  # type: ignore[attr-defined]
            | "WritePlan" >> beam.Map(write_plan, lake_uri, ctx.encryption, plan_rel)
        )


def _report(n: int, segments: list[str], resumed: bool, plan: Plan) -> Done:
    report = Done(batch_no=n, segments=segments, resumed=resumed)
    for s in plan.stats:
        kind, count = s.kind, s.n
        if kind in (StatKind.WRITTEN, StatKind.HELD) and s.dataset != QUARANTINE:
            rel = table_rel(s.tenant, s.dataset)
            sign = 1 if kind is StatKind.WRITTEN else -1  # held rows are written, not published
            report.rows[rel] = report.rows.get(rel, 0) + sign * count
        elif kind is StatKind.QUARANTINED:
            report.quarantined[s.key] = report.quarantined.get(s.key, 0) + count
        elif kind is StatKind.DUPLICATES:
            report.duplicates += count
        elif kind is StatKind.LATE:
            report.late += count
        elif kind is StatKind.DAMAGED:
            report.damaged_bytes += count
    return report


def _staged_rels(manifest: Manifest) -> dict[str, str]:
    """Where the lake keeps each segment of the batch (its archive place): by the day in
    the segment's name; a file named otherwise, by the day the batch was claimed (so the
    place does not move when a resumed batch runs on another day)."""
    claimed = datetime.fromisoformat(manifest.created_at).astimezone(UTC).date()
    return {name: raw_archive_rel(name, _segment_day(name, claimed)) for name in manifest.segments}


def _segment_day(name: str, otherwise: date) -> date:
    try:
        return datetime.strptime(name[:8], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return otherwise


def _stage(store: Store, landing: Path, rels: dict[str, str]) -> list[tuple[str, int]]:
    """Every segment of the batch into the lake (``Store.stage_file``: idempotent); the
    lake copies with their sizes, for the read stage. A segment already gone from the
    landing folder must be in the lake (a crash after the staging, before the batch was
    done, may have let the landing folder go)."""
    closed = landing / "closed"
    sized: list[tuple[str, int]] = []
    for name, rel in rels.items():
        local = closed / name
        if local.exists():
            store.stage_file(rel, local)
            size: int | None = local.stat().st_size
        else:
            size = store.size(rel)
        if size is None:
            raise ProcessError(
                f"segment {name} is neither in {closed} nor in the lake at {store.url(rel)}"
            )
        sized.append((rel, size))
    return sized


def _archive(store: Store, landing: Path, rels: dict[str, str]) -> None:
    """Let the landing folder's copies of the batch's segments go, each only once the lake
    holds it whole (same size); a segment not staged yet is moved there first."""
    closed = landing / "closed"
    moves: list[tuple[str, Path]] = []
    released = False
    for name, rel in rels.items():
        local = closed / name
        if not local.exists():
            if not store.exists(rel):
                raise ProcessError(f"segment {name} is neither in {closed} nor archived at {rel}")
            continue
        kept = store.size(rel)
        if kept is None:
            moves.append((rel, local))
        elif kept == local.stat().st_size:
            local.unlink()
            released = True
        else:
            raise ProcessError(
                f"segment {name}: the lake's copy at {store.url(rel)} has {kept} bytes, the"
                f" landing folder's {local.stat().st_size}; both kept: compare them by hand"
            )
    store.move_files(moves)
    if released:
        fsync_dir(closed)


@functools.lru_cache(maxsize=8)
def _lake_store(uri: str, encryption: S3Encryption) -> Store:
    """One Store object per lake for the process: the Delta commit handles are kept per
    Store object (lake.delta), so a new Store per batch opened every table afresh for its
    commit (a log replay each) and left the previous batch's handles, with their
    snapshots, in memory until the LRU bound (the processor's RSS grew batch by batch)."""
    return Store.from_uri(uri, encryption=encryption)


def load_devices(store: Store) -> pl.DataFrame:
    """The device registry from the lake's reference tables, with each branch's timezone."""
    devices = load_device_registry(store)
    branches = [
        read_table(store, rel, columns=["branch_id", "timezone"])
        for tenant in lake_tenants(store)
        if table_exists(store, rel := table_rel(tenant, "branches"))
    ]
    return device_frame(devices, pa.concat_tables(branches) if branches else None)


def process_once(
    settings: Settings,
    *,
    runner: str = DEFAULT_RUNNER,
    beam_args: Sequence[str] = (),
    max_segments: int | None = None,
    lineage_parent: RunRef | None = None,
    before_commit: Callable[[], None] | None = None,
) -> BatchReport | None:
    """Run one batch (or finish the one a crash left). None when there was nothing to do.

    Lineage: START once the manifest exists, COMPLETE after the commits, FAIL on an error
    (the run id is the batch's, so a retried batch continues the same run).

    ``before_commit`` runs between the batch's transform and its commits: where another
    writer can interleave (tests use it to commit a release there).
    """
    started = time.perf_counter()
    args = _worker_args(settings, beam_args)
    harness_here = _harness_here(runner, args)  # an environment it cannot run: refused now
    store = _lake_store(settings.lake, settings.s3_encryption())
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    landing = settings.landing
    state = BatchState(store, settings.pipeline_id)
    with _lock(landing, settings.pipeline_id), BatchLineage(settings, lineage_parent) as lineage:
        n = state.last_done() + 1
        manifest = state.manifest(n)
        resumed = manifest is not None
        devices = load_devices(store)
        if manifest is None:
            found = closed_segments(landing)
            if max_segments is not None:
                found = found[:max_segments]
            if not found:
                return None
            tenants = sorted(set(devices["client_id"].to_list()))
            manifest = state.claim(
                Manifest(
                    batch_no=n,
                    pipeline_id=settings.pipeline_id,
                    segments=[p.name for p in found],
                    snapshot=_snapshot(store, _tables(registry, tenants)),
                    created_at=datetime.now(UTC).isoformat(),
                )
            )
        segments = manifest.segments
        staged = _staged_rels(manifest)
        lineage.start(n, manifest)
        plan = state.plan(n)
        if plan is None:
            sized = _stage(store, landing, staged)
            ctx = BatchContext(
                pipeline_id=settings.pipeline_id,
                batch_no=n,
                lake_uri=settings.lake,
                contracts_dir=_worker_contracts_dir(settings),
                decoders_dir=str(settings.decoders_dir.resolve())
                if settings.decoders_dir
                else None,
                devices=devices,
                payload_limit=settings.payload_limit_bytes,
                snapshot=manifest.snapshot,
                segments=staged,
                gate=settings.quality_gate,
                branches=load_branches(store) if settings.quality_gate else None,
                encryption=settings.s3_encryption(),
            )
            _run_beam(ctx, sized, runner, args, state)
            plan = state.plan(n)
            if plan is None:
                raise ProcessError(f"batch {n}: the pipeline finished without writing its plan")
        report = _report(n, segments, resumed, plan)
        gates = plan.gate
        commits: list[tuple[str, Any, list[DataFile]]] = []
        amended = False
        for rel, entry in plan.tables.items():
            contract = registry.get(entry.dataset)
            files = [DataFile.from_json(json.dumps(f)) for f in entry.files]
            gate = gates.get(rel)
            if gate is not None:
                report.gate_seconds += gate.seconds
                if gate.warnings:
                    report.warnings[rel] = list(gate.warnings)
                if not gate.passed:
                    # Held: the rows of the devices (or the table) a failed blocking rule is
                    # about go to held files that wait for a release; the rest is committed
                    # (the batch is recorded even with no file, so a replay adds nothing).
                    report.held[rel] = list(gate.blocking_failures)
                    amended = amended or entry.held_files is None  # a split made now
                    files = hold(store, plan, rel, contract, gate)
                lineage.quality(rel, gate)
            commits.append((rel, contract, files))

        if amended:
            state.put_plan(n, plan)  # the holds, before anything is committed
        if before_commit is not None:
            before_commit()
        done = commit_tables(
            store,
            commits,
            plan=plan,
            snapshot=manifest.snapshot,
            guarded=lambda dataset: dataset in registry.readings_datasets,
            save_plan=lambda amended: state.put_plan(n, amended),
            app_id=settings.pipeline_id,
            version=n,
            metadata={"energylake.batch": f"{settings.pipeline_id}:{n}"},
        )
        # The gate's results, after the tables (each file its own app transaction).
        commit_results_files(store, [q.to_dict() for q in plan.quality], registry=registry)
        # Counts as committed: held rows, and rows another writer committed first (duplicates).
        fresh = _report(n, segments, resumed, plan)
        report.rows, report.duplicates = fresh.rows, fresh.duplicates
        report.committed.extend(rel for (rel, _, _), ok in zip(commits, done, strict=True) if ok)
        audit_batch(
            store,
            plan,
            state.audited_rel(n),
            settings.data_dir / "audit" / "pipeline",
            settings.audit_anchor_dir,
        )
        _archive(store, landing, staged)
        report.seconds = time.perf_counter() - started
        state.finish(report)
        if gates and harness_here:
            data_docs(settings)
        elif gates:
            _no_data_docs()
        lineage.complete(store, registry, published_plan(plan))
        return report


def ingest_stats(settings: Settings) -> list[tuple[str, str, str, str, str, int]]:
    """Every finished batch's counts: (kind, tenant, dataset, branch, key, count) rows.

    Kinds: written, quarantined (key = reason), duplicates, late, damaged (key = segment),
    day (key = event day; published rows), held (written but held by the quality gate), and
    the decisions on held rows (``pipelines.release``): released, discarded, decided (the
    held rows that wait no longer), with their duplicates and quarantined rows. So: in the
    lake = written - held + released; still held = held - decided.
    """
    store = settings.lake_store()
    state = BatchState(store, settings.pipeline_id)
    out: list[tuple[str, str, str, str, str, int]] = []
    for n in range(1, state.last_done() + 1):
        plan = state.plan(n)
        if plan is not None:
            out.extend(s.as_tuple() for s in plan.stats)
    out.extend(s.as_tuple() for s in state.decision_stats())
    return out


def _worker_contracts_dir(settings: Settings) -> str | None:
    """The contracts folder the batch's workers load: the configured one, absolute (it
    must be there on every worker, whatever its working folder), else None: the packaged
    contracts, wherever each worker has the package installed (a worker image rarely
    installs it at the driver's path)."""
    return str(settings.contracts_dir.resolve()) if settings.contracts_dir else None


# --- follow --------------------------------------------------------------------------------


class _Stop:
    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %s: finishing the batch in hand, then stopping", signum)
        self.event.set()


def follow(
    settings: Settings,
    *,
    runner: str = DEFAULT_RUNNER,
    beam_args: Sequence[str] = (),
    on_batch: Any = None,
    max_batches: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Process batches until SIGINT/SIGTERM; compact partitions past the file bound.
    ``stop``: an event a caller's own signal handlers set (a signal that came before this
    was called is not lost: the loop does not start)."""
    stopper = _Stop(stop)
    previous = {s: signal.signal(s, stopper) for s in (signal.SIGINT, signal.SIGTERM)}
    done = 0
    session = lineage_session(settings)  # the parent run of the session's batches
    parent = session.ref if session is not None else None
    pending: list[str] = []  # tables the last compaction pass did not finish
    try:
        while not stopper.event.is_set():
            report = process_once(
                settings, runner=runner, beam_args=beam_args, lineage_parent=parent
            )
            if report is not None:
                done += 1
                if on_batch is not None:
                    on_batch(report)
                tables = sorted({*pending, *report.rows})
                pending = compact_if_needed(settings, tables, lineage_parent=parent).remaining
                if max_batches is not None and done >= max_batches:
                    break
                continue
            if pending:  # idle: carry on with what the budget left, one pass per interval
                pending = compact_if_needed(settings, pending, lineage_parent=parent).remaining
            stopper.event.wait(settings.follow_interval_s)
    except BaseException as exc:
        if session is not None:
            session.fail(exc)
        raise
    else:
        if session is not None:
            session.details["batches"] = done
            session.complete()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return done


def compact_if_needed(
    settings: Settings,
    tables: dict[str, int] | Sequence[str],
    *,
    lineage_parent: RunRef | None = None,
    budget_s: float | None = None,
) -> CompactionPass:
    """Compact the partitions of ``tables`` that hold more files than the bound, those with
    the most files first, for at most ``budget_s`` (default ``compact_budget_s``; a
    partition started is finished, the rest wait for the next call); one lineage run for
    the tables it compacted.

    Without a budget every table's partitions crossed the bound in the same batch (each
    batch adds a file to each), and that batch took 9 s longer (30 batches, 42 partitions).
    """
    store = _lake_store(settings.lake, settings.s3_encryption())
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    budget = settings.compact_budget_s if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    over: list[tuple[int, str, dict[str, str | None]]] = []
    for rel in tables:
        contract = registry.get(rel.rsplit("/", 1)[-1])
        for key, n in files_per_partition(store, rel).items():
            if n > settings.compact_max_files:
                over.append((n, rel, dict(zip(contract.partition_columns, key, strict=True))))
    over.sort(key=lambda item: (-item[0], item[1], sorted(item[2].items(), key=str)))
    done: list[str] = []
    compacted: list[tuple[str, CompactReport]] = []
    remaining: list[str] = []
    for rel in dict.fromkeys(r for _, r, _ in over):  # tables in order of their worst
        parts = [values for _, r, values in over if r == rel]
        if compacted and time.monotonic() >= deadline:
            remaining.append(rel)  # the first is always compacted: progress on any budget
            continue
        report = compact(store, rel, min_files=2, partitions=parts, deadline=deadline)
        if report.partitions:
            compacted.append((rel, report))
            done.append(rel)
        if report.deferred:
            remaining.append(rel)
    if compacted:
        emit_compaction(
            LineageEmitter.from_settings(settings),
            uri_of(store.url()),
            [
                CompactedTable(
                    r,
                    registry.get(r.rsplit("/", 1)[-1]),
                    c.versions,
                    c.files_added,
                    c.files_removed,
                )
                for r, c in compacted
            ],
            parent=lineage_parent,
        )
    return CompactionPass(compacted=done, remaining=remaining)


@dataclass(frozen=True, slots=True)
class CompactionPass:
    """What one budgeted compaction pass did: tables compacted, and tables that still hold
    partitions past the bound (the budget ran out first)."""

    compacted: list[str]
    remaining: list[str]
