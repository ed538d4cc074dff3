"""The pipeline's Beam PTransforms. Elements are chunks (Arrow tables / polars frames), never
one record each; every stage is a named PTransform so a runner's UI shows the flow:

    ReadSegments -> Decode -> Normalise -> Enforce -> Deduplicate (dedupe, series, write)
                       \\___________\\__________\\_________\\-> Quarantine -> WriteLake

Stages that need state from outside (the device registry, the pinned table snapshot, the
store) get it as plain constructor arguments, so any runner can ship them to workers.
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import apache_beam as beam
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from contracts import ContractRegistry, load_registry
from lake.delta import DataFile, table_at, write_data_file
from lake.delta import dataset as lake_dataset
from lake.errors import StorageError
from lake.layout import UNASSIGNED_TENANT, months_between, table_rel
from lake.storage import S3Encryption, Store
from landing.chunks import read_segment_tables
from landing.reader import SegmentBytes, read_records_at
from transforms import coders
from transforms.catalogue import DECODERS_DIR, Catalogue, load_catalogue
from transforms.decode import DecodeSchema, decode_chunk
from transforms.enforce import enforce_chunk
from transforms.frames import Chunk, quarantine_rows, quarantine_table
from transforms.normalise import normalise_chunk
from transforms.series import STUCK_RUN, committed_columns, dedupe_and_check

__all__ = [
    "DAMAGED",
    "GATE",
    "QUALITY_FILES",
    "QUARANTINE",
    "STATS",
    "BatchContext",
    "DecodeToRows",
    "Deduplicate",
    "ReadSegments",
    "Stat",
    "TableRows",
    "WriteLake",
    "file_name",
    "quarantine_keyed",
    "quarantine_stats",
    "read_committed",
]

QUARANTINE = "quarantine"
STATS = "stats"
GATE = "gate"
QUALITY_FILES = "quality_files"  # quality_results files written, for the runner to commit
DAMAGED = "damaged"
LOOKBACK = timedelta(days=2)  # how far back the series checks look for a predecessor
RECENT = timedelta(hours=1)  # the first, usual, look back (see read_committed)
MAX_ROWS_PER_FILE = 2_000_000
WRITE_THREADS = 4
SERIES_THREADS = 2  # tables deduplicated and checked at once (the machine has 2 cores)
GATE_THREADS = 1  # tables validated one at a time (GE is Python: two threads measured slower)
GLOBAL_WINDOW = GlobalWindow()
_SHUFFLE_DROPS = ("source", "topic", "identity")


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What every stage of one batch needs to know; picklable."""

    pipeline_id: str
    batch_no: int
    lake_uri: str
    contracts_dir: str | None  # None: the packaged contracts (found on each worker)
    devices: pl.DataFrame
    payload_limit: int = 65536
    snapshot: dict[str, int | None] = field(default_factory=dict)  # table rel -> version
    # Where the lake holds each segment this batch reads (name -> lake-relative path; the
    # driver staged them there at the claim): rows quarantined after Enforce get their
    # envelope (source, topic, identity, payload) back from that copy, by offset.
    segments: dict[str, str] = field(default_factory=dict)
    # The quality gate (transforms/quality.py): run on each table's rows before they are
    # written; a failed blocking rule holds the table out of this batch's commit.
    gate: bool = True
    branches: pl.DataFrame | None = None  # opening hours, for the gate's zero-share rule
    encryption: S3Encryption | None = None  # S3 server-side encryption (None: the default)
    decoders_dir: str | None = None  # None: the packaged decoder catalogue

    @property
    def batch_id(self) -> str:
        return f"{self.pipeline_id}:{self.batch_no}"

    def registry(self) -> ContractRegistry:
        return load_registry(Path(self.contracts_dir) if self.contracts_dir else None)

    def catalogue(self, registry: ContractRegistry) -> Catalogue:
        folder = Path(self.decoders_dir) if self.decoders_dir else DECODERS_DIR
        return load_catalogue((folder,), registry)

    def store(self) -> Store:
        return Store.from_uri(self.lake_uri, encryption=self.encryption)


coders.register()
# A table's rows of one chunk, keyed by (tenant, dataset): typed, so Beam uses FrameCoder.
TableRows = beam.typehints.Tuple[beam.typehints.Tuple[str, str], pl.DataFrame]

# kind, tenant, dataset, branch, key, count. Kinds: written, quarantined (key: reason),
# duplicates, late, damaged (key: segment), day (key: the UTC date of the rows written).
Stat = tuple[str, str, str, str, str, int]


def _stat(kind: str, tenant: str, dataset: str, branch: str | None, key: str, n: int) -> Stat:
    return (kind, tenant, dataset, branch or "", key, int(n))


def _tagged_stat(*args: Any) -> Any:
    return beam.pvalue.TaggedOutput(STATS, _stat(*args))


# --- read ----------------------------------------------------------------------------------


def _segment_bytes(store: Store, rel: str) -> bytes:
    data = store.get_bytes(rel)
    if data is None:
        raise StorageError(
            f"{store.url(rel)}: the batch's staged copy of a landing segment is missing;"
            " the batch cannot be read (was the lake's raw/ folder changed by hand?)"
        )
    return data


class _ReadFn(beam.DoFn):
    """Reads a group of segments from the lake's copies (``BatchContext.segments``)."""

    def __init__(self, ctx: BatchContext) -> None:
        self._ctx = ctx

    def setup(self) -> None:
        self._store = self._ctx.store()

    def process(self, segments: list[str]) -> Iterator[Any]:
        load = functools.partial(_segment_bytes, self._store)
        for element in read_segment_tables(segments, load):
            if isinstance(element, pa.Table):
                yield element
            else:  # a damage stat
                yield beam.pvalue.TaggedOutput(DAMAGED, element)


class ReadSegments(beam.PTransform):
    """Groups of closed landing segments (lake-relative paths of their staged copies,
    ``landing.group_segments``) to envelope chunks (main output, Arrow tables), read from
    the lake by ``landing`` on the worker; tagged ``damaged``: the damage stats of torn
    tails."""

    def __init__(self, ctx: BatchContext) -> None:
        super().__init__()
        self._ctx = ctx

    def expand(self, segments: Any) -> Any:
        return (
            segments
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadChunks"
            >> beam.ParDo(_ReadFn(self._ctx))
            .with_output_types(pa.Table)
            .with_outputs(DAMAGED, main="tables")
        )


# --- decode, normalise, enforce ------------------------------------------------------------


class _DecodeFn(beam.DoFn):
    """Decode, normalise or enforce a chunk. The work runs on a small pool, up to
    IN_FLIGHT chunks at a time per step: Arrow and polars release the GIL, so one chunk's
    columnar work overlaps another's Python (and the reading of the next). Outputs leave
    in input order."""

    def __init__(self, ctx: BatchContext, step: str) -> None:
        self._ctx = ctx
        self._step = step

    def setup(self) -> None:
        self._registry = self._ctx.registry()
        self._schema = DecodeSchema.from_registry(
            self._registry, self._ctx.catalogue(self._registry)
        )
        self._pending: deque[Future[list[Any]]] = deque()

    def start_bundle(self) -> None:
        self._pending = deque()

    def process(self, element: Any) -> Iterator[Any]:
        self._pending.append(_stage_pool().submit(self._work, element))
        while len(self._pending) > IN_FLIGHT:
            yield from self._pending.popleft().result()

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            for out in self._pending.popleft().result():
                yield _windowed(out)

    def _work(self, element: Any) -> list[Any]:
        ctx = self._ctx
        if self._step == "decode":
            chunk = Chunk(envelopes=element)
            decode_chunk(chunk, self._schema, payload_limit=ctx.payload_limit)
            return [chunk]
        if self._step == "normalise":
            normalise_chunk(element, self._registry, ctx.devices)
            return [element]
        chunk = element
        out: list[Any] = []
        accepted = enforce_chunk(chunk, self._registry, self._schema)
        for dataset, rows in accepted.items():
            # The envelope's text goes no further: a later reject reads it back from the
            # segment (``_with_envelopes``); segment and offset stay as the key.
            rows = rows.drop(_SHUFFLE_DROPS, strict=False)
            by_tenant = rows.partition_by("client_id", maintain_order=False, as_dict=True)
            for (tenant,), part in by_tenant.items():
                out.append(((str(tenant), dataset), part))
        quarantined = quarantine_table(chunk, self._registry, ctx.devices, batch_id=ctx.batch_id)
        out.extend(_quarantine_outputs(quarantined))
        return out


IN_FLIGHT = 2  # chunks worked on at once per step (the machine has 2 cores)


@cache
def _stage_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="chunk")


def _quarantine_outputs(quarantined: pl.DataFrame) -> Iterator[Any]:
    if quarantined.height == 0:
        return
    for (tenant,), part in quarantined.group_by("_tenant"):
        key = str(tenant) if tenant is not None else UNASSIGNED_TENANT
        yield beam.pvalue.TaggedOutput(QUARANTINE, (key, part.drop("_tenant")))


class DecodeToRows(beam.PTransform):
    """Decode -> Normalise -> Enforce. Main output: ((tenant, dataset), rows); tagged
    ``quarantine``: (tenant, quarantine rows)."""

    def __init__(self, ctx: BatchContext) -> None:
        super().__init__()
        self._ctx = ctx

    def expand(self, chunks: Any) -> Any:
        # Output types are declared so Beam uses transforms/coders.py (cheap size estimates).
        decoded = chunks | "Decode" >> beam.ParDo(_DecodeFn(self._ctx, "decode")).with_output_types(
            Chunk
        )
        normalised = decoded | "Normalise" >> beam.ParDo(
            _DecodeFn(self._ctx, "normalise")
        ).with_output_types(Chunk)
        return normalised | "Enforce" >> beam.ParDo(
            _DecodeFn(self._ctx, "enforce")
        ).with_output_types(TableRows).with_outputs(QUARANTINE, main="rows")


# --- deduplicate and series checks ---------------------------------------------------------


def read_committed(
    store: Store,
    rel: str,
    version: int | None,
    columns: list[str],
    batch: pl.DataFrame,
    min_history: int = STUCK_RUN,
) -> pl.DataFrame:
    """The committed rows the batch's devices may collide with or follow (pinned version).

    What the checks need of a device is local: the committed copies of its batch readings
    (same event time, so not before its first batch reading) and the few readings before
    that (the longest look back is a STUCK run). So the read is per device and in two
    steps: the hour before each device's first reading; then, only for a device with fewer
    than ``min_history`` committed readings there, up to LOOKBACK before it. Reading
    LOOKBACK for every device made each batch of ``process --follow`` read two days of
    its branches' rows, so batch time grew with the lake (measured: 1.4 s to 7.8 s over 30
    small batches).
    """
    schema_cols = {c: batch.schema[c] for c in columns if c in batch.schema}
    if version is None or batch.height == 0:
        return pl.DataFrame(schema=schema_cols)
    table = table_at(store, rel, version)
    firsts = batch.group_by("device_id").agg(pl.col("ts").min().alias("_first"))
    until: datetime = batch["ts"].max()  # type: ignore[assignment]
    branches = batch["branch_id"].unique().to_list()

    def scan(devices: pl.DataFrame, back: timedelta) -> pl.DataFrame:
        # devices grouped by the hour their window starts: a few terms, not one per device
        starts = (
            devices.with_columns((pl.col("_first") - back).dt.truncate("1h").alias("_start"))
            .group_by("_start")
            .agg(pl.col("device_id"))
        )
        earliest: datetime = starts["_start"].min()  # type: ignore[assignment]
        months = sorted(set(months_between(earliest, until)) | set(batch["event_month"].unique()))
        window: pc.Expression | None = None
        for start, ids in starts.iter_rows():
            term = pc.field("device_id").isin(list(ids)) & (
                pc.field("ts") >= pa.scalar(start, pa.timestamp("us", "UTC"))
            )
            window = term if window is None else window | term
        assert window is not None
        # only the files of the batch's branches and months that reach into the window
        # become fragments (partitions exactly, ts by the log's file statistics)
        dataset = lake_dataset(
            store,
            rel,
            files=[
                ("branch_id", "in", branches),
                ("event_month", "in", months),
                ("ts", ">=", earliest),
            ],
            table=table,
        )
        # a column the contract added after this version was committed reads as null
        have = [c for c in columns if c in dataset.schema.names]
        frame = pl.from_arrow(dataset.to_table(columns=have, filter=window))
        assert isinstance(frame, pl.DataFrame)
        missing = [pl.lit(None, batch.schema[c]).alias(c) for c in columns if c not in have]
        return frame.with_columns(missing).select(columns) if missing else frame

    recent = scan(firsts, RECENT)
    before = (
        recent.join(firsts, on="device_id")
        .filter(pl.col("ts") < pl.col("_first"))
        .group_by("device_id")
        .len()
    )
    short = firsts.join(before, on="device_id", how="left").filter(
        pl.col("len").fill_null(0) < min_history
    )
    if short.height == 0:
        return recent
    longer = scan(short.select("device_id", "_first"), LOOKBACK)
    kept = recent.join(short.select("device_id"), on="device_id", how="anti")
    return pl.concat([kept, longer], how="vertical_relaxed")


def _in_global_window(value: Any) -> WindowedValue:
    """An output of ``finish_bundle`` (which has no input element to take a window from)."""
    return WindowedValue(value, MIN_TIMESTAMP, (GLOBAL_WINDOW,))


def _windowed(out: Any) -> Any:
    """``out`` (a main or tagged output) for ``finish_bundle``."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(out.tag, _in_global_window(out.value))
    return _in_global_window(out)


@dataclass(frozen=True, slots=True)
class _TableWork:
    """What one table's deduplication and checks produced, for ``finish_bundle``."""

    outputs: list[Any]
    writes: _Writes | None
    gate: Future[tuple[str, dict[str, Any]]] | None


class _LakeFn(beam.DoFn):
    """A DoFn that writes lake files: the contracts, the store and the writer threads."""

    def __init__(self, ctx: BatchContext) -> None:
        self._ctx = ctx

    def setup(self) -> None:
        self._registry = self._ctx.registry()
        self._store = self._ctx.store()
        self._pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="lake-writer")

    def teardown(self) -> None:
        self._pool.shutdown(wait=True)


class _SeriesFn(_LakeFn):
    """Deduplicate, check the series and write, per table. Tables are worked on by
    SERIES_THREADS threads (polars and the Parquet writers release the GIL, so two tables
    use two cores); their outputs leave in order at the end of the bundle."""

    def setup(self) -> None:
        super().setup()
        self._gate_pool = ThreadPoolExecutor(GATE_THREADS, thread_name_prefix="quality-gate")
        self._recorded: list[Future[list[dict[str, Any]]]] = []
        self._series_pool = ThreadPoolExecutor(SERIES_THREADS, thread_name_prefix="series")
        self._tables: list[Future[_TableWork]] = []

    def start_bundle(self) -> None:
        self._tables = []
        self._recorded = []

    def finish_bundle(self) -> Iterator[Any]:
        tables, self._tables = self._tables, []
        works = [table.result() for table in tables]
        for work in works:
            for out in work.outputs:
                yield _windowed(out)
        # A table's files are written while the next table is deduplicated and checked.
        for work in works:
            if work.writes is not None:
                for out in _collect_writes(work.writes):
                    yield _windowed(out)
        # The verdicts are only needed at commit: the gate threads run behind the tables
        # that follow. A verdict leaves once every gate's results file is written.
        verdicts = [work.gate.result() for work in works if work.gate is not None]
        recorded, self._recorded = self._recorded, []
        for record in recorded:
            for written in record.result():
                yield beam.pvalue.TaggedOutput(QUALITY_FILES, _in_global_window(written))
        for verdict in verdicts:
            yield beam.pvalue.TaggedOutput(GATE, _in_global_window(verdict))

    def teardown(self) -> None:
        super().teardown()
        self._series_pool.shutdown(wait=True)
        self._gate_pool.shutdown(wait=True)

    def process(self, element: tuple[tuple[str, str], Iterable[pl.DataFrame]]) -> None:
        (tenant, dataset), frames = element
        # The grouped values are read here, on Beam's thread; the work goes to the pool.
        self._tables.append(self._series_pool.submit(self._table, tenant, dataset, list(frames)))

    def _table(self, tenant: str, dataset: str, frames: list[pl.DataFrame]) -> _TableWork:
        ctx = self._ctx
        contract = self._registry.get(dataset)
        batch = pl.concat(frames, how="vertical_relaxed", rechunk=True)
        rel = table_rel(tenant, dataset)
        committed = read_committed(
            self._store, rel, ctx.snapshot.get(rel), committed_columns(contract), batch
        )
        result = dedupe_and_check(contract, batch, committed)
        outputs: list[Any] = []
        for row in result.duplicates.iter_rows():
            outputs.append(_tagged_stat("duplicates", tenant, dataset, row[0], "", row[1]))
        for row in result.late.iter_rows():
            outputs.append(_tagged_stat("late", tenant, dataset, row[0], "", row[1]))
        if result.rejects.height:
            rejects = _with_envelopes(result.rejects, ctx, self._store).with_columns(
                pl.col("reason_code").fill_null("IMPLAUSIBLE_DELTA"),
                pl.lit("enforce").alias("pipeline_step"),
                pl.lit(dataset).alias("dataset"),
            )
            quarantined = quarantine_rows(
                rejects, self._registry, ctx.devices, batch_id=ctx.batch_id
            )
            outputs.extend(_quarantine_outputs(quarantined))
        names = [f.name for f in contract.fields]
        rows = result.rows.select(names)
        # The gate runs on its own thread while the files are written (GE is Python, the
        # Parquet writers mostly release the GIL): its verdict is only needed at commit.
        gate = (
            self._gate_pool.submit(self._gate, contract, tenant, dataset, rows)
            if ctx.gate and rows.height
            else None
        )
        # Written here, not after another GroupByKey: the rows are already grouped by
        # table, and a second shuffle would pickle every frame again. A table the gate
        # holds is written too (its files wait, uncommitted, for a release).
        writes = (
            _submit_writes(self._store, self._pool, contract, ctx.batch_no, tenant, dataset, rows)
            if rows.height
            else None
        )
        return _TableWork(outputs, writes, gate)

    def _gate(
        self, contract: Any, tenant: str, dataset: str, rows: pl.DataFrame
    ) -> tuple[str, dict[str, Any]]:
        """Run the gate, write its results' file (quality_results; the runner commits it),
        and say what the commit step needs: passed or held, and the assertions for lineage."""
        from transforms.quality import GateBatch, run_gate
        from transforms.quality_results import write_results_files

        ctx = self._ctx
        gate = run_gate(
            contract,
            rows,
            ctx.devices,
            GateBatch(ctx.pipeline_id, ctx.batch_no),
            tenant=tenant,
            branches=ctx.branches,
        )
        # Written on a writer thread: the gate thread goes on to the next table;
        # finish_bundle waits for the file before the verdict leaves.
        recorded = self._pool.submit(
            write_results_files, self._store, [gate], registry=self._registry
        )
        self._recorded.append(recorded)
        return table_rel(tenant, dataset), {
            "passed": gate.passed,
            "held_devices": gate.held_devices,
            "rows": rows.height,
            "summary": gate.summary(),
            "blocking_failures": [r.rule for r in gate.blocking_failures],
            "warnings": [r.rule for r in gate.warnings],
            "reasons": {r.rule: r.reason for r in gate.blocking_failures + gate.warnings},
            "assertions": gate.assertions(),
            "contract": gate.contract_ref,
            "seconds": round(gate.duration_s, 4),
        }


def _with_envelopes(rows: pl.DataFrame, ctx: BatchContext, store: Store) -> pl.DataFrame:
    """Accepted rows travel without their envelope; read it back for a late reject, from
    the lake's copy of its segment."""
    parts = []
    for (segment,), part in rows.with_row_index("_at").group_by("segment"):
        offsets = part["offset_bytes"].to_list()
        unique = sorted(set(offsets))
        rel = ctx.segments.get(str(segment))
        if rel is None:
            raise StorageError(f"segment {segment} is not one of batch {ctx.batch_id}'s")
        data = SegmentBytes(str(segment), _segment_bytes(store, rel))
        records = read_records_at(data, unique)
        found = dict(zip(unique, records, strict=True))
        envs = [found[o] for o in offsets]
        parts.append(
            part.with_columns(
                pl.Series("source", [e.source for e in envs], dtype=pl.String),
                pl.Series("topic", [e.topic for e in envs], dtype=pl.String),
                pl.Series("identity", [e.identity for e in envs], dtype=pl.String),
                pl.Series("payload", [e.payload for e in envs], dtype=pl.Binary),
            )
        )
    return pl.concat(parts).sort("_at").drop("_at")


class Deduplicate(beam.PTransform):
    """Group a table's rows, drop duplicates (counted), run the series checks, and write
    the table's files. Main output: add-file records ``(rel, dataset, json)``; tagged
    ``quarantine``, ``stats``, ``gate`` (the quality gate's verdict per table) and
    ``quality_files`` (the gate results' files written, uncommitted)."""

    def __init__(self, ctx: BatchContext) -> None:
        super().__init__()
        self._ctx = ctx

    def expand(self, rows: Any) -> Any:
        return (
            rows
            | "GroupByTable" >> beam.GroupByKey()
            | "DedupeSeriesGateWrite"
            >> beam.ParDo(_SeriesFn(self._ctx)).with_outputs(
                QUARANTINE, STATS, GATE, QUALITY_FILES, main="files"
            )
        )


# --- write ---------------------------------------------------------------------------------


def file_name(batch_no: int, rel: str, partition: dict[str, str], part: int) -> str:
    """Deterministic: a retried batch rewrites the same names."""
    key = rel + "|" + "|".join(f"{k}={v}" for k, v in sorted(partition.items())) + f"|{part}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"part-b{batch_no:010d}-{digest}-{part:03d}.zstd.parquet"


@dataclass(frozen=True, slots=True)
class _Writes:
    """One table's partition writes, submitted to the writer pool (``_submit_writes``):
    a file per partition, split past MAX_ROWS_PER_FILE; ``_collect_writes`` yields their
    add-file records and stats."""

    tenant: str
    dataset: str
    rel: str
    jobs: list[Future[tuple[list[tuple[str | None, str, int]], list[DataFile]]]]


def _submit_writes(
    store: Store,
    pool: ThreadPoolExecutor,
    contract: Any,
    batch_no: int,
    tenant: str,
    dataset: str,
    frame: pl.DataFrame,
) -> _Writes:
    """Each partition's sort, conversion and encoding go to ``pool`` (polars and Arrow
    release the GIL there): the Beam thread only splits the frame."""
    rel = table_rel(tenant, dataset)
    partitions = contract.partition_columns
    jobs = []
    for values, part in frame.partition_by(partitions, maintain_order=False, as_dict=True).items():
        partition = {
            k: ("" if v is None else str(v)) for k, v in zip(partitions, values, strict=True)
        }
        jobs.append(
            pool.submit(_write_partition, store, rel, contract, batch_no, dataset, partition, part)
        )
    return _Writes(tenant, dataset, rel, jobs)


def _collect_writes(writes: _Writes) -> Iterator[Any]:
    """The add-file records (main output) and stats of submitted writes, in order."""
    tenant, dataset = writes.tenant, writes.dataset
    for job in writes.jobs:
        days, files = job.result()
        for branch, day, n in days:
            yield _tagged_stat("day", tenant, dataset, branch, day, n)
        for data_file in files:
            yield (writes.rel, dataset, data_file.to_json())
            yield _tagged_stat(
                "written", tenant, dataset, _branch_of(data_file), "", data_file.num_records
            )


def _write_partition(
    store: Store,
    rel: str,
    contract: Any,
    batch_no: int,
    dataset: str,
    partition: dict[str, str],
    part: pl.DataFrame,
) -> tuple[list[tuple[str | None, str, int]], list[DataFile]]:
    """One partition's files (sorted, split past MAX_ROWS_PER_FILE) and its rows per day."""
    schema = contract.arrow_schema()
    sort_cols = [c for c in ("device_id", "ts", "seq", "quarantine_id") if c in part.columns]
    part = part.sort(sort_cols)
    days: list[tuple[str | None, str, int]] = []
    # Rows per (branch, UTC day): lineage answers "which runs wrote branch B on day D". The
    # day of a reading is its event time's; of a quarantined record, when it was received
    # (lineage.partitions.TIME_COLUMNS: the same choice when a table has no such counts).
    day_of = next((c for c in ("ts", "received_at") if c in part.columns), None)
    if day_of is not None:
        per_day = part.group_by(pl.col(day_of).dt.date().alias("day")).len()
        branch = partition.get("branch_id")
        days = [(branch, str(day), n) for day, n in per_day.iter_rows() if day is not None]
    files = []
    for index, start in enumerate(range(0, part.height, MAX_ROWS_PER_FILE)):
        piece = part.slice(start, MAX_ROWS_PER_FILE)
        table = piece.to_arrow().select(schema.names).cast(schema)
        name = file_name(batch_no, rel, partition, index)
        files.append(write_data_file(store, rel, table, partition, name))
    return days, files


class _WriteFn(_LakeFn):
    def process(self, element: tuple[tuple[str, str], Iterable[pl.DataFrame]]) -> Iterator[Any]:
        (tenant, dataset), frames = element
        frame = pl.concat(list(frames), how="vertical_relaxed")
        contract = self._registry.get(dataset)
        yield from _collect_writes(
            _submit_writes(
                self._store, self._pool, contract, self._ctx.batch_no, tenant, dataset, frame
            )
        )


def _branch_of(data_file: DataFile) -> str | None:
    return data_file.partition_values.get("branch_id")


class WriteLake(beam.PTransform):
    """Write each keyed table's rows as Parquet files (in parallel); outputs add-file
    records. The quarantine goes this way; readings are written by Deduplicate."""

    def __init__(self, ctx: BatchContext) -> None:
        super().__init__()
        self._ctx = ctx

    def expand(self, keyed: Any) -> Any:
        return (
            keyed
            | "GroupByTable" >> beam.GroupByKey()
            | "WriteFiles" >> beam.ParDo(_WriteFn(self._ctx)).with_outputs(STATS, main="files")
        )


def quarantine_keyed(element: tuple[str, pl.DataFrame]) -> tuple[tuple[str, str], pl.DataFrame]:
    tenant, frame = element
    return ((tenant, QUARANTINE), frame)


def quarantine_stats(element: tuple[str, pl.DataFrame]) -> Iterator[Stat]:
    tenant, frame = element
    counts = frame.group_by("branch_id", "reason_code").agg(pl.len())
    for branch, reason, n in counts.iter_rows():
        yield _stat("quarantined", tenant, QUARANTINE, branch, str(reason), n)
