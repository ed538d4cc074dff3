"""Delta tables of the lake: create from a contract, write data files, commit, compact, read.

The write path is split the way a parallel pipeline needs it (docs/LAKE.md):

1. :func:`ensure_table` once per table (creates it from the contract, or checks it);
2. :func:`write_data_file` in parallel workers: one Parquet file per partition, written
   atomically under a deterministic name, returning a :class:`DataFile` (JSON-serialisable,
   so a plan file can carry it);
3. :func:`commit_files` once per batch: ONE Delta commit adding every file, carrying the
   app transaction ``(app_id, version)`` -- a replayed batch commits nothing.

Reads go through pyarrow's own filesystems (:func:`dataset`, :func:`read_table`), never the
Python filesystem wrapper of ``DeltaTable.to_pyarrow_dataset()``: with that wrapper the
interpreter can abort at exit ("terminate called without an active exception").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, WriterProperties
from deltalake import Field as DeltaField
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction

from contracts.model import Contract
from lake.arrow_types import stats_kind
from lake.errors import CommitError, LakeError, SchemaMismatchError
from lake.storage import Store

__all__ = [
    "CONTRACT_KEY",
    "NO_STATS_CLASSIFICATIONS",
    "NULL_PARTITION",
    "CompactReport",
    "DataFile",
    "app_txn_version",
    "commit_files",
    "compact",
    "data_file_name",
    "dataset",
    "ensure_table",
    "file_stats",
    "files_per_partition",
    "latest_version",
    "open_table",
    "read_table",
    "stats_columns",
    "table_at",
    "table_exists",
    "write_data_file",
]

CONTRACT_KEY = "energylake.contract"
"""Table property (and commit metadata key) naming the contract ``id@version``."""

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Directory value of a null partition value (Hive's convention, which Delta readers know)."""

NO_STATS_CLASSIFICATIONS = frozenset({"personal", "location", "secret"})
"""Classifications whose values never go into min/max statistics of the Delta log.

Statistics are copied into every later log checkpoint; a personal value there outlives the
erasure of its row until the log is cleaned (docs/LAKE.md, "Statistics"). Null counts are kept.
"""

STATS_STRING_PREFIX = 32
"""String min/max statistics are cut to this many characters (as Spark does)."""

ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group of a data file."""

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.parquet$")
_FOLDER = re.compile(r"_?[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESERVED_COMMIT_KEYS = frozenset({"timestamp", "operation", "engineInfo", "operationParameters"})
_COMMIT_ATTEMPTS = 10
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_URL_SAFE = "/=-_."
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


# ---------------------------------------------------------------------------- opening


_LOG_RACE_ATTEMPTS = 5


def _log_race(exc: BaseException) -> bool:
    """A commit file listed and then gone: the log was cleaned up while it was read (an
    erasure's purge, ``lake.purge``); reading again starts from the new checkpoint."""
    text = str(exc)
    return "_delta_log" in text and ("not found" in text.lower() or "No such file" in text)


def open_table(store: Store, rel: str, version: int | None = None) -> DeltaTable:
    """The Delta table at ``rel`` (latest, or ``version``), with the store's options."""
    for attempt in range(_LOG_RACE_ATTEMPTS):
        try:
            return DeltaTable(
                store.url(rel), version=version, storage_options=store.storage_options()
            )
        except TableNotFoundError as exc:
            raise LakeError(f"no Delta table at {store.url(rel)}") from exc
        except DeltaError as exc:
            if version is not None or not _log_race(exc) or attempt == _LOG_RACE_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def table_exists(store: Store, rel: str) -> bool:
    """Whether a Delta table exists at ``rel``."""
    return bool(DeltaTable.is_deltatable(store.url(rel), store.storage_options()))


def dataset(
    store: Store,
    rel: str,
    version: int | None = None,
    *,
    files: list[tuple[str, str, Any]] | None = None,
    table: DeltaTable | None = None,
) -> pads.Dataset:
    """The table as a pyarrow dataset (partition values and statistics on its fragments).

    ``files`` (delta-rs tuple filters such as ``("branch_id", "in", [...])`` or
    ``("ts", ">=", t)``) keeps only the files that may match: partition columns select
    exactly, other columns by the file's min/max statistics in the log. Without it every
    file of the table becomes a fragment, which costs time in proportion to the whole
    table. Filter the rows too: this selects files. ``table``: an already opened table.
    """
    if table is None:
        table = open_table(store, rel, version)
    fs, base = store.filesystem()
    sub = pafs.SubTreeFileSystem(f"{base}/{rel}", fs)
    return table.to_pyarrow_dataset(filesystem=sub, file_pruning_predicate=files)


_READERS: OrderedDict[str, tuple[threading.Lock, DeltaTable, bytes | None]] = OrderedDict()
_READERS_LOCK = threading.Lock()


def _log_identity(store: Store, rel: str) -> bytes | None:
    """Which table lives at ``rel`` (local lakes): a digest of its first log entry, which
    holds the table's id (a uuid) and creation time. A table deleted and created again at
    the same path has another (an inode number would not do: the file system reuses them
    at once). None when there is no such entry (no table, or the log was cleaned up: the
    handle is then opened once more). On S3 a cached handle is trusted (None)."""
    if store.is_s3:
        return None
    try:
        first = (Path(store.url(rel)) / "_delta_log" / f"{0:020d}.json").read_bytes()
    except OSError:
        return None
    return hashlib.blake2b(first, digest_size=16).digest()


def _handle_key(store: Store, rel: str) -> str:
    """A cached handle's key: the table, and the S3 encryption its writes ask for (a handle
    opened for one store must not write another's objects with its options)."""
    s3 = store.s3_settings
    return store.url(rel) if s3 is None else f"{store.url(rel)}|{s3.encryption}"


def _reader(store: Store, rel: str) -> DeltaTable | None:
    """This process's reading handle on the table, caught up to its latest version (None:
    no table). Opening a table reads its log from the last checkpoint: per table and batch
    that grew with the log; catching up an open handle reads only the new commits."""
    url = _handle_key(store, rel)
    ident = _log_identity(store, rel)
    with _READERS_LOCK:
        entry = _READERS.get(url)
        if entry is not None and not store.is_s3 and entry[2] != ident:
            del _READERS[url]  # gone, or another table at the same path: never mix logs
            entry = None
        if entry is not None:
            _READERS.move_to_end(url)
    if entry is None:
        if not table_exists(store, rel):
            return None
        entry = (threading.Lock(), open_table(store, rel), ident)
        with _READERS_LOCK:
            _READERS[url] = entry
            while len(_READERS) > _HANDLES_MAX:
                _READERS.popitem(last=False)
        return entry[1]
    lock, table, _ = entry
    with lock:
        try:
            table.update_incremental()
        except (DeltaError, OSError):  # replaced or removed under us: start over
            with _READERS_LOCK:
                _READERS.pop(url, None)
            return _reader(store, rel) if table_exists(store, rel) else None
        return table


def latest_version(store: Store, rel: str) -> int | None:
    """The table's latest version, None if there is no table (a cached, caught-up handle)."""
    table = _reader(store, rel)
    return None if table is None else int(table.version())


def table_at(store: Store, rel: str, version: int) -> DeltaTable:
    """The table at ``version``: the cached handle when it is there (the usual case: the
    version a batch pinned is the latest), else opened at that version."""
    with _READERS_LOCK:
        entry = _READERS.get(_handle_key(store, rel))
    if entry is not None and entry[1].version() == version:
        return entry[1]
    return open_table(store, rel, version)


def read_table(
    store: Store,
    rel: str,
    *,
    columns: list[str] | None = None,
    filter: pc.Expression | None = None,
    version: int | None = None,
) -> pa.Table:
    """The table's rows (optionally some columns, filtered) as one Arrow table.

    A latest-version read whose files were vacuumed while it read them (an erasure purges
    right after its commit, ``lake.purge``) reads again, from the version that follows."""
    for attempt in range(_LOG_RACE_ATTEMPTS):
        try:
            return dataset(store, rel, version).to_table(columns=columns, filter=filter)
        except (FileNotFoundError, pa.ArrowException, OSError) as exc:
            gone = isinstance(exc, FileNotFoundError) or "No such file" in str(exc)
            if version is not None or not gone or attempt == _LOG_RACE_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- creating


def stats_columns(contract: Contract) -> list[str]:
    """The columns whose min/max statistics the lake records (see NO_STATS_CLASSIFICATIONS)."""
    parts = set(contract.partition_columns)
    return [
        f.name
        for f in contract.fields
        if f.name not in parts
        and f.classification not in NO_STATS_CLASSIFICATIONS
        and stats_kind(f.arrow_type) is not None
    ]


def _table_configuration(contract: Contract) -> dict[str, str | None]:
    config: dict[str, str | None] = {CONTRACT_KEY: contract.ref}
    columns = stats_columns(contract)
    if columns:
        config["delta.dataSkippingStatsColumns"] = ",".join(columns)
    else:
        config["delta.dataSkippingNumIndexedCols"] = "0"
    return config


def _fields(schema: Schema) -> list[tuple[str, str, bool]]:
    raw = json.loads(schema.to_json())["fields"]
    return [(f["name"], json.dumps(f["type"], sort_keys=True), bool(f["nullable"])) for f in raw]


def _schema_differences(table: DeltaTable, contract: Contract) -> list[str]:
    want = _fields(Schema.from_arrow(contract.arrow_schema()))
    have = _fields(table.schema())
    diffs = []
    want_by_name = {name: (kind, null) for name, kind, null in want}
    have_by_name = {name: (kind, null) for name, kind, null in have}
    for name, (kind, null) in want_by_name.items():
        if name not in have_by_name:
            diffs.append(f"column {name!r}: in the contract, not in the table")
            continue
        have_kind, have_null = have_by_name[name]
        if have_kind != kind:
            diffs.append(f"column {name!r}: table type {have_kind}, contract type {kind}")
        if have_null != null:
            diffs.append(f"column {name!r}: table nullable={have_null}, contract nullable={null}")
    diffs.extend(
        f"column {name!r}: in the table, not in the contract"
        for name in have_by_name
        if name not in want_by_name
    )
    if not diffs and [n for n, _, _ in want] != [n for n, _, _ in have]:
        diffs.append(
            f"column order: table {[n for n, _, _ in have]}, contract {[n for n, _, _ in want]}"
        )
    table_parts = list(table.metadata().partition_columns)
    if table_parts != contract.partition_columns:
        diffs.append(
            f"partition columns: table {table_parts}, contract {contract.partition_columns}"
        )
    return diffs


def _add_new_columns(table: DeltaTable, contract: Contract) -> DeltaTable:
    """A table one contract version behind by optional columns the contract appends (the
    only schema change made without a migration): add them, a commit of metadata only;
    older files read them as null. Anything else is left for ``_check_contract``."""
    have = [name for name, _, _ in _fields(table.schema())]
    want = _fields(Schema.from_arrow(contract.arrow_schema()))
    new = want[len(have) :]
    if (
        not new
        or [name for name, _, _ in want[: len(have)]] != have
        or not all(nullable for _, _, nullable in new)
    ):
        return table
    schema = contract.arrow_schema()
    try:
        table.alter.add_columns(
            [DeltaField.from_arrow(schema.field(name)) for name, _, _ in new],
            commit_properties=CommitProperties(
                custom_metadata={"energylake.operation": "add columns"}, max_commit_retries=0
            ),
        )
    except DeltaError:  # another writer added them first: see what the table is now
        table.update_incremental()
    return table


def _relax_not_null(table: DeltaTable, contract: Contract) -> DeltaTable:
    """Columns the contract now allows to be null (a field a device profile may leave out)
    lose the table's NOT NULL: a commit of metadata only, and the only other change made
    without a migration (tightening is never done here)."""
    want = {name: null for name, _, null in _fields(Schema.from_arrow(contract.arrow_schema()))}
    relax = [name for name, _, null in _fields(table.schema()) if not null and want.get(name)]
    for name in relax:
        try:
            table.alter.drop_column_not_null(
                name,
                commit_properties=CommitProperties(
                    custom_metadata={"energylake.operation": "drop not null"},
                    max_commit_retries=0,
                ),
            )
        except DeltaError:  # another writer relaxed it first: see what the table is now
            table.update_incremental()
    return table


def _check_contract(table: DeltaTable, contract: Contract, where: str) -> None:
    diffs = _schema_differences(table, contract)
    if diffs:
        raise SchemaMismatchError(where, contract.ref, diffs)


def ensure_table(store: Store, rel: str, contract: Contract) -> DeltaTable:
    """The table at ``rel``, created empty from the contract if missing.

    Safe when processes race: one creates it (an atomic create of log version 0), the others
    open it. An existing table must have the contract's schema and partition columns, else
    :class:`SchemaMismatchError`. When only the contract's version changed (same schema) the
    table property ``energylake.contract`` is updated to the new ``id@version``.
    """
    url = store.url(rel)
    options = store.storage_options()
    try:
        found = _reader(store, rel)
        if found is None:
            raise TableNotFoundError(url)
        table = found
    except TableNotFoundError:
        try:
            return DeltaTable.create(
                url,
                contract.arrow_schema(),
                mode="error",
                partition_by=contract.partition_columns or None,
                name=contract.dataset,
                description=contract.purpose.strip() or None,
                configuration=_table_configuration(contract),
                storage_options=options,
                raise_if_key_not_exists=False,
                # no retry: delta-rs would retry a lost race as a second CREATE at version 1
                commit_properties=CommitProperties(
                    custom_metadata={CONTRACT_KEY: contract.ref}, max_commit_retries=0
                ),
            )
        except DeltaError as exc:  # another process created it first: open theirs
            try:
                table = DeltaTable(url, storage_options=options)
            except TableNotFoundError:
                raise LakeError(f"could not create the Delta table at {url}: {exc}") from exc
    table = _add_new_columns(table, contract)
    table = _relax_not_null(table, contract)
    _check_contract(table, contract, url)
    if table.metadata().configuration.get(CONTRACT_KEY) != contract.ref:
        table.alter.set_table_properties({CONTRACT_KEY: contract.ref}, raise_if_not_exists=False)
    return table


# ---------------------------------------------------------------------------- data files


@dataclass(frozen=True, slots=True)
class DataFile:
    """A Parquet file written into a table but not yet committed: a Delta add action."""

    path: str
    """Relative to the table root, with ``k=v/`` partition directories; URL-safe characters
    only, so the add action's path and the physical path are the same string."""
    size: int
    partition_values: dict[str, str | None]
    modification_time: int
    """Milliseconds since the epoch."""
    num_records: int
    stats: str
    """Delta add-action statistics (JSON): numRecords, minValues, maxValues, nullCount."""

    def to_add_action(self) -> AddAction:
        return AddAction(
            path=self.path,
            size=self.size,
            partition_values=dict(self.partition_values),
            modification_time=self.modification_time,
            data_change=True,
            stats=self.stats,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataFile:
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            partition_values={
                str(k): (None if v is None else str(v))
                for k, v in dict(data["partition_values"]).items()
            },
            modification_time=int(data["modification_time"]),
            num_records=int(data["num_records"]),
            stats=str(data["stats"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DataFile:
        return cls.from_dict(json.loads(text))


def data_file_name(batch_id: str, partition_values: Mapping[str, str | None], part: int = 0) -> str:
    """A deterministic file name for a batch's file in a partition (a retry rewrites it).

    ``part-<batch>-<hash of the partition values>-<part>.zstd.parquet``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", batch_id)[:80] or "batch"
    key = json.dumps(sorted(partition_values.items()), separators=(",", ":"))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"part-{safe}-{digest}-{part:04d}.zstd.parquet"


def _partition_dir(value: str | None) -> str:
    """A partition value as a directory name made of URL-safe characters only.

    ``[A-Za-z0-9._-]`` values are kept as they are (every id of ours); anything else becomes
    ``_h`` + a hash of the value. Delta readers take partition values from the log, never
    from directory names, and a URL-safe add path is the physical path itself -- which
    readers that do not URL-decode (pyarrow datasets over a plain filesystem) need.
    """
    if value is None:
        return NULL_PARTITION
    if _SAFE_VALUE.match(value):
        return value
    return "_h" + hashlib.sha256(value.encode()).hexdigest()[:24]


def _timestamp_text(value: int, unit: str, tz: str | None, *, ceil: bool) -> str:
    """A timestamp statistic as Delta writes it: milliseconds, rounded outwards."""
    per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
    if per_ms is None:
        return _timestamp_text(value * 1000, "ms", tz, ceil=ceil)
    millis = -(-value // per_ms) if ceil else value // per_ms
    moment = _EPOCH + dt.timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}"
    return text + "Z" if tz else text


def file_stats(table: pa.Table, columns: Iterable[str] | None = None) -> str:
    """Delta statistics JSON of ``table`` for ``columns`` (default: every column whose field
    metadata does not classify it as personal, location or secret).

    Min/max are conservative so pruning never drops a matching file: timestamps are cut to
    milliseconds outwards (min down, max up), strings longer than 32 characters keep a
    32-character prefix as min and no max, floats holding NaN or infinities get no min/max.
    """
    if columns is None:
        columns = [
            f.name
            for f in table.schema
            if (f.metadata or {}).get(b"classification", b"").decode()
            not in NO_STATS_CLASSIFICATIONS
        ]
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in columns:
        column = table.column(name)
        kind = stats_kind(column.type)
        if kind is None:
            continue
        nulls[name] = column.null_count
        if kind == "bool" or column.null_count == len(column):
            continue
        if kind == "float":
            # One pass instead of three: a NaN or an infinity makes the sum non-finite (so
            # does an overflow of huge values, which only drops statistics: still safe).
            total = pc.sum(column).as_py()
            if total is None or not math.isfinite(total):
                continue
        pair = pc.min_max(column)
        low, high = pair["min"], pair["max"]
        if kind == "timestamp":
            unit, tz = column.type.unit, column.type.tz
            mins[name] = _timestamp_text(low.value, unit, tz, ceil=False)
            maxs[name] = _timestamp_text(high.value, unit, tz, ceil=True)
        elif kind == "date":
            mins[name] = low.as_py().isoformat()
            maxs[name] = high.as_py().isoformat()
        elif kind == "string":
            low_text, high_text = low.as_py(), high.as_py()
            mins[name] = low_text[:STATS_STRING_PREFIX]
            if len(high_text) <= STATS_STRING_PREFIX:
                maxs[name] = high_text
        else:
            low_value, high_value = low.as_py(), high.as_py()
            if kind == "float" and not (math.isfinite(low_value) and math.isfinite(high_value)):
                continue
            mins[name] = low_value
            maxs[name] = high_value
    return json.dumps(
        {
            "numRecords": table.num_rows,
            "minValues": mins,
            "maxValues": maxs,
            "nullCount": nulls,
        },
        separators=(",", ":"),
    )


def _check_partition_column(
    table: pa.Table, column: str, value: str | None, file_name: str
) -> None:
    if column not in table.column_names:
        raise LakeError(f"{file_name}: partition column {column!r} is not in the data")
    values = table.column(column)
    if value is None:
        ok = values.null_count == len(values)
    else:
        if not pa.types.is_string(values.type):
            values = values.cast(pa.string())
        ok = values.null_count == 0 and bool(pc.all(pc.equal(values, value)).as_py() is not False)
    if not ok:
        raise LakeError(
            f"{file_name}: column {column!r} holds values other than the partition value {value!r}"
        )


def write_data_file(
    store: Store,
    rel: str,
    table: pa.Table,
    partition_values: Mapping[str, str | None],
    file_name: str,
    *,
    stats_columns: Sequence[str] | None = None,
    folder: str = "",
) -> DataFile:
    """Write ``table`` (full contract schema) as one Parquet file of the table at ``rel``.

    ``folder``: a folder of the table to write under (``_held``: a name starting with
    ``_`` is not the table's data, and ``vacuum`` never deletes in it).

    The partition columns are checked to hold exactly ``partition_values`` and are left out
    of the file (as Delta does). The file goes to ``<k1=v1>/<k2=v2>/<file_name>`` atomically;
    writing the same name again replaces it, so a retried batch is idempotent. Nothing is
    committed: pass the returned :class:`DataFile` to :func:`commit_files`.
    """
    if not _FILE_NAME.match(file_name):
        raise LakeError(f"invalid data file name {file_name!r} (a plain name ending .parquet)")
    for column, value in partition_values.items():
        if value == "":
            raise LakeError(f"{file_name}: empty partition value for {column!r} (use None)")
        _check_partition_column(table, column, value, file_name)
    data = table.drop_columns(list(partition_values)) if partition_values else table
    dirs = [f"{_partition_dir(k)}={_partition_dir(v)}" for k, v in partition_values.items()]
    if folder and not _FOLDER.fullmatch(folder):
        raise LakeError(f"invalid folder {folder!r} for a data file (one plain name)")
    physical = "/".join([*([folder] if folder else []), *dirs, file_name])
    sink = pa.BufferOutputStream()
    pq.write_table(
        data,
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=True,
    )
    buffer = sink.getvalue()
    store.put_bytes(f"{rel}/{physical}", memoryview(buffer))
    return DataFile(
        path=quote(physical, safe=_URL_SAFE),
        size=buffer.size,
        partition_values=dict(partition_values),
        modification_time=int(time.time() * 1000),
        num_records=data.num_rows,
        stats=file_stats(data, stats_columns),
    )


# ---------------------------------------------------------------------------- committing


class _Handle:
    """A process-local, up-to-date handle on one table: re-reading the whole log per commit
    costs ~0.1 s on S3 once a table has a checkpoint; catching up costs a few ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.table: DeltaTable | None = None
        self.ident: bytes | None = None

    def fresh(self, store: Store, rel: str) -> DeltaTable:
        """The table at its latest version (call with ``lock`` held); opened afresh when
        another table now lives at the path (see ``_log_identity``)."""
        ident = _log_identity(store, rel)
        if self.table is None or (not store.is_s3 and ident != self.ident):
            self.table = open_table(store, rel)
            self.ident = ident
            return self.table
        try:
            self.table.update_incremental()
        except DeltaError as exc:
            if not _log_race(exc):
                raise
            self.table = open_table(store, rel)  # the commits it needed were cleaned up
        return self.table


_HANDLES: OrderedDict[tuple[int, str], _Handle] = OrderedDict()
_HANDLES_LOCK = threading.Lock()
_HANDLES_MAX = 256


def _handle(store: Store, rel: str) -> _Handle:
    """The handle of ``rel`` for this Store object (two Store objects: two writers)."""
    key, url = (id(store), rel), store.url(rel)
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None or handle.url != url:
            handle = _HANDLES[key] = _Handle(url)
        _HANDLES.move_to_end(key)
        while len(_HANDLES) > _HANDLES_MAX:
            _HANDLES.popitem(last=False)
        return handle


def app_txn_version(store: Store, rel: str, app_id: str) -> int | None:
    """The last committed app transaction version of ``app_id`` in the table (None: never)."""
    handle = _handle(store, rel)
    with handle.lock:
        version = handle.fresh(store, rel).transaction_version(app_id)
    return None if version is None else int(version)


def commit_files(
    store: Store,
    rel: str,
    contract: Contract,
    files: Sequence[DataFile],
    *,
    app_id: str,
    version: int,
    metadata: Mapping[str, str],
    precheck: Callable[[DeltaTable], None] | None = None,
) -> bool:
    """Add every file in ONE Delta commit carrying the app transaction ``(app_id, version)``.

    Returns False, committing nothing, when the table already records ``app_id`` at
    ``version`` or later (a replayed batch). Zero files still commit the app transaction,
    so the batch is recorded. A concurrent commit makes this one start over from the new
    table state (the replay check included), a few times, before :class:`CommitError`.
    Commits to one table through one Store object are serialised in the process.

    ``precheck(table)`` runs against the fresh table before each attempt (after the replay
    check); each attempt commits at exactly the version after that table's, or fails and
    starts over, so nothing another writer commits can slip between the check and the
    commit. An exception from it ends the call (``lake.guard`` raises one when keys clash).
    """
    bad = sorted(set(metadata) & _RESERVED_COMMIT_KEYS)
    if bad:
        raise LakeError(f"commit metadata may not set {bad}")
    parts = set(contract.partition_columns)
    for data_file in files:
        if set(data_file.partition_values) != parts:
            raise LakeError(
                f"{data_file.path}: partition values {sorted(data_file.partition_values)} "
                f"do not match the partition columns {contract.partition_columns}"
            )
    actions: list[Any] = [f.to_add_action() for f in files]
    custom = {
        **metadata,
        CONTRACT_KEY: contract.ref,
        "energylake.app_id": app_id,
        "energylake.app_version": str(version),
        "energylake.files": str(len(files)),
        "energylake.rows": str(sum(f.num_records for f in files)),
    }
    handle = _handle(store, rel)
    last: Exception | None = None
    with handle.lock:
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                table = handle.fresh(store, rel)
                done = table.transaction_version(app_id)
                if done is not None and done >= version:
                    return False
                if attempt == 0:
                    _check_contract(table, contract, handle.url)
                if precheck is not None:
                    precheck(table)
                table.create_write_transaction(
                    actions,
                    mode="append",
                    schema=table.schema(),
                    partition_by=list(table.metadata().partition_columns) or None,
                    commit_properties=CommitProperties(
                        custom_metadata=custom,
                        app_transactions=[Transaction(app_id, version)],
                        max_commit_retries=0,
                    ),
                )
            except CommitFailedError as exc:  # someone committed first: catch up, re-check
                last = exc
                time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
                continue
            except LakeError:
                raise  # the precheck's verdict; the handle is fine
            except BaseException:
                handle.table = None  # unknown state: the next call opens the table afresh
                raise
            return True
    raise CommitError(
        f"{handle.url}: commit of {app_id}@{version} kept conflicting after "
        f"{_COMMIT_ATTEMPTS} attempts: {last}"
    )


# ---------------------------------------------------------------------------- maintenance


def _partition_key(values: Iterable[Any]) -> tuple[str | None, ...]:
    return tuple(None if v is None else str(v) for v in values)


def files_per_partition(store: Store, rel: str) -> dict[tuple[str | None, ...], int]:
    """Active files per partition (values in partition-column order; ``()`` unpartitioned)."""
    return _files_per_partition(open_table(store, rel))


def _files_per_partition(table: DeltaTable) -> dict[tuple[str | None, ...], int]:
    parts = list(table.metadata().partition_columns)
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return {}
    if not parts:
        return {(): actions.num_rows}
    columns = [actions.column(f"partition.{p}").to_pylist() for p in parts]
    return dict(Counter(_partition_key(row) for row in zip(*columns, strict=True)))


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What :func:`compact` did."""

    files_removed: int
    files_added: int
    partitions: list[dict[str, str | None]] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    seconds: float = 0.0
    deferred: int = 0  # partitions due but not started: the deadline had passed


def compact(
    store: Store,
    rel: str,
    *,
    min_files: int = 2,
    partitions: Sequence[Mapping[str, str | None]] | None = None,
    target_size: int | None = None,
    deadline: float | None = None,
) -> CompactReport:
    """Rewrite the small files of each partition holding ``min_files`` or more into fewer.

    One ``optimize.compact`` (one commit) per partition: a reader sees the table before or
    after, never in between. Files are removed logically; ``vacuum`` deletes their bytes
    later (not done here). ``partitions`` limits the work to those partitions, and they are
    compacted in that order. ``target_size`` defaults to the table's
    ``delta.targetFileSize`` (else 100 MB). ``deadline`` (``time.monotonic()``): no
    partition is started after it (one started is finished); the rest wait for a next call.
    """
    started = time.monotonic()
    table = open_table(store, rel)
    parts = list(table.metadata().partition_columns)
    wanted = None
    if partitions is not None:
        wanted = {_partition_key(p.get(c) for c in parts) for p in partitions}
    removed = added = 0
    touched: list[dict[str, str | None]] = []
    versions: list[int] = []
    properties = WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP_ROWS)
    counts = _files_per_partition(table)
    started_parts = deferred = 0
    order = (
        [_partition_key(p.get(c) for c in parts) for p in partitions]
        if partitions is not None
        else sorted(counts, key=lambda k: tuple(v or "" for v in k))
    )
    for key in order:
        count = counts.get(key, 0)
        if count < min_files or (wanted is not None and key not in wanted):
            continue
        if deadline is not None and started_parts and time.monotonic() >= deadline:
            deferred += 1  # at least one partition per call: progress on any budget
            continue
        started_parts += 1
        named = dict(zip(parts, key, strict=True))
        # a null partition value is matched by "" (Delta reads an empty value as null)
        filters = [(c, "=", "" if v is None else v) for c, v in named.items()]
        metrics = table.optimize.compact(
            partition_filters=filters or None,
            target_size=target_size,
            writer_properties=properties,
            commit_properties=CommitProperties(custom_metadata={"energylake.operation": "compact"}),
        )
        if int(metrics.get("numFilesRemoved", 0)):
            removed += int(metrics["numFilesRemoved"])
            added += int(metrics.get("numFilesAdded", 0))
            touched.append(named)
            versions.append(int(table.version()))
    return CompactReport(
        files_removed=removed,
        files_added=added,
        partitions=touched,
        versions=versions,
        seconds=time.monotonic() - started,
        deferred=deferred,
    )
