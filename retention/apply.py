"""Acting on the contracts' retention: hot to archive, and deletion at the end.

For each tenant's table of a contract with archive days (``retention.plan`` says what is
due), one pass:

1. reads the hot table at its version ``V`` the rows whose basis is before the archive
   cut-off (only the files whose statistics may hold them);
2. writes those not yet due for deletion into the archive table (``retention.archive``:
   one file per month, deterministic names) and commits them with the app transaction
   ``("retention:<hot table>", V)``; the commit records the cut-off;
3. deletes the same rows from the hot table *at version V*, in a commit carrying the app
   transaction ``("retention:archive", V)``. delta-rs (1.6.6) checks that commit against
   everything committed since ``V``: an append whose file statistics may match the
   predicate, or a rewrite of a file the delete read (compaction, an erasure), makes it
   fail (``CommitFailedError``, "a concurrent transaction added new data") instead of
   deleting a row that was never archived; fresh appends do not conflict.

A rerun after a crash sees what is done from the two app transactions: the archive has
``V`` and the hot table does not -> only step 3 is redone (with the recorded cut-off);
both have it -> a new pass. Between steps 2 and 3 a row is in both tables; a reader opens
the hot table first and leaves out of it the rows the archive's pending pass holds
(:func:`pending_cutoff`), so it sees every row once. When step 3 conflicts, the commits
since ``V`` are read: if none of them is an append that may hold a row older than the
cut-off, the delete is done at the latest version (the rows are the same ones, maybe in
rewritten files); else the pass stops with :class:`RetentionError` and says what to do.

At the end of the archive period (or of the hot period when there are no archive days)
the rows are deleted from the table that holds them, and ``lake.purge.purge_table``
removes their bytes (a marker in ``_state/retention`` makes a rerun finish a purge that a
crash cut short). Every predicate and every commit holds a timestamp and counts only,
never a row's value.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError

from audit.log import AuditLog
from contracts import Contract, ContractRegistry
from contracts.errors import EnergylakeError
from lake.delta import (
    commit_files,
    dataset,
    ensure_table,
    open_table,
    table_exists,
)
from lake.layout import (
    RETENTION_BEFORE_KEY,
    RETENTION_TXN,
    archive_rel,
    retention_source_txn,
    state_rel,
)
from lake.purge import purge_table
from lake.storage import Store
from lineage.emitter import LineageEmitter, TableDataset, jobs
from retention.archive import archive_contract, write_archive_files
from retention.plan import _tables, cutoffs

__all__ = [
    "ARCHIVE_TXN",
    "ApplyReport",
    "RetentionError",
    "TableResult",
    "apply_and_record",
    "apply_retention",
    "changed_tables",
    "pending_cutoff",
]

ARCHIVE_TXN = RETENTION_TXN
_BEFORE_KEY = RETENTION_BEFORE_KEY
_KILL_ENV = "ENERGYLAKE_TEST_RETENTION_KILL_AT"


class RetentionError(EnergylakeError):
    """A retention pass could not finish a table (``table``); the message says what to do."""

    def __init__(self, message: str, *, table: str) -> None:
        self.table = table
        super().__init__(message)


_source_txn = retention_source_txn


@dataclass(slots=True)
class TableResult:
    """What a pass did (or, dry, would do) to one tenant's dataset."""

    dataset: str
    tenant: str | None
    table: str
    archive_table: str | None
    rows_archived: int = 0
    rows_deleted: int = 0  # from hot (past both periods) and from the archive
    files_written: int = 0
    bytes_written: int = 0
    files_removed: int = 0
    bytes_removed: int = 0
    hot_version_read: int | None = None
    hot_version: int | None = None
    archive_version: int | None = None
    purged: list[str] = field(default_factory=list)
    redone: bool = False  # the delete of a pass a crash had cut short
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class ApplyReport:
    now: datetime
    applied: bool
    tables: list[TableResult] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, int]:
        keys = ("rows_archived", "rows_deleted", "files_written", "bytes_written")
        out = dict.fromkeys(keys, 0)
        out.update(files_removed=0, bytes_removed=0)
        for t in self.tables:
            for k in out:
                out[k] += int(getattr(t, k))
        return out


# ---------------------------------------------------------------------------- test hook


def _kill_points() -> dict[str, int]:
    """Test-only: ``ENERGYLAKE_TEST_RETENTION_KILL_AT=step[:dataset][@n]`` SIGKILLs this process the
    n-th time (default first) it reaches ``step``. Unset (production): no effect."""
    raw = os.environ.get(_KILL_ENV, "")
    if not raw:
        return {}
    step, _, nth = raw.partition("@")
    return {step: int(nth or 1)}


_KILL = _kill_points()


def _step(name: str, dataset: str) -> None:
    """A named step of a pass (``step`` or ``step:dataset`` in the test hook)."""
    for key in (name, f"{name}:{dataset}"):
        if key in _KILL:
            _KILL[key] -= 1
            if _KILL[key] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- helpers


def _literal(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _predicate(basis: str, before: datetime) -> str:
    """``"<basis>" < '<timestamp>'``: a column name from the contract and a time only."""
    return f"\"{basis}\" < '{_literal(before)}'"


def _active(table: DeltaTable) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return dict(
        zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        )
    )


def _older(store: Store, rel: str, table: DeltaTable, basis: str, before: datetime) -> pa.Table:
    scan = dataset(store, rel, table=table, files=[(basis, "<", before)])
    return scan.to_table(filter=pc.field(basis) < pa.scalar(before))


def _count_older(store: Store, rel: str, table: DeltaTable, basis: str, before: datetime) -> int:
    scan = dataset(store, rel, table=table, files=[(basis, "<", before)])
    return int(scan.count_rows(filter=pc.field(basis) < pa.scalar(before)))


def _commit_info(table: DeltaTable, app_id: str, version: int) -> dict[str, Any] | None:
    for entry in table.history(limit=200):
        if entry.get("energylake.app_id") == app_id and entry.get("energylake.app_version") == str(
            version
        ):
            return entry
    return None


def pending_cutoff(
    store: Store, hot_rel: str, hot: DeltaTable, dataset_name: str
) -> datetime | None:
    """The cut-off of a pass archived but not yet deleted from ``hot`` (None: none).

    A reader that opened ``hot`` before the archive leaves the hot rows older than it
    out: the archive holds them."""
    tenant = hot_rel.split("/")[1]
    rel = archive_rel(tenant, dataset_name)
    if not table_exists(store, rel):
        return None
    archive = open_table(store, rel)
    done = archive.transaction_version(_source_txn(hot_rel))
    if done is None:
        return None
    deleted = hot.transaction_version(ARCHIVE_TXN)
    if deleted is not None and deleted >= done:
        return None
    info = _commit_info(archive, _source_txn(hot_rel), int(done))
    if info is None:
        raise RetentionError(
            f"{rel}: the archive commit of pass {done} of {hot_rel} is no longer in its log; "
            "run `energylake retention apply --apply` to finish it",
            table=rel,
        )
    return datetime.fromisoformat(str(info[_BEFORE_KEY]))


# ---------------------------------------------------------------------------- the pass


def _delete_hot(
    store: Store,
    hot_rel: str,
    basis: str,
    before: datetime,
    version: int,
    result: TableResult,
) -> None:
    """Step 3: delete the archived rows from hot at ``version`` (see the module's notes)."""
    props = CommitProperties(
        app_transactions=[Transaction(ARCHIVE_TXN, version)],
        custom_metadata={"energylake.operation": "retention move", _BEFORE_KEY: _literal(before)},
    )
    before_files = _active(open_table(store, hot_rel, version))
    table = open_table(store, hot_rel, version)
    try:
        table.delete(_predicate(basis, before), commit_properties=props)
    except CommitFailedError:
        latest = open_table(store, hot_rel)
        unsafe = _late_appends(store, hot_rel, version, int(latest.version()), basis, before)
        if unsafe:
            raise RetentionError(
                f"{hot_rel}: rows older than the archive cut-off {_literal(before)} were "
                f"appended after version {version} (commits {unsafe}); they are not in the "
                "archive yet. Stop the pipeline writing to this tenant and run "
                "`energylake retention apply --apply` again",
                table=hot_rel,
            ) from None
        before_files = _active(latest)
        latest.delete(_predicate(basis, before), commit_properties=props)
        table = latest
    _step("hot_deleted", hot_rel.split("/")[-1])
    after = _active(open_table(store, hot_rel))
    gone = set(before_files) - set(after)
    result.files_removed += len(gone)
    result.bytes_removed += sum(before_files[p] for p in gone)
    new = set(after) - set(before_files)
    result.files_written += len(new)
    result.bytes_written += sum(after[p] for p in new)
    result.hot_version = int(open_table(store, hot_rel).version())


def _late_appends(
    store: Store, rel: str, since: int, latest: int, basis: str, before: datetime
) -> list[int]:
    """Commits after ``since`` that appended files whose statistics may hold a row older
    than ``before`` (rows the pass did not archive)."""
    unsafe = []
    for v in range(since + 1, latest + 1):
        raw = store.get_bytes(f"{rel}/_delta_log/{v:020d}.json")
        if raw is None:
            unsafe.append(v)  # cannot tell: assume the worst
            continue
        actions = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if any("remove" in a for a in actions):
            continue  # a rewrite (compaction, erasure): the same rows, or fewer
        for a in actions:
            add = a.get("add")
            if not add:
                continue
            low = (json.loads(add.get("stats") or "{}").get("minValues") or {}).get(basis)
            if low is None or datetime.fromisoformat(str(low).replace("Z", "+00:00")) < before:
                unsafe.append(v)
                break
    return unsafe


def _marker(rel: str) -> str:
    return state_rel("retention", "purge", rel.replace("/", "+"))


def _delete_expired(
    store: Store, rel: str, basis: str, before: datetime, result: TableResult, apply: bool
) -> None:
    """Delete the rows of ``rel`` whose basis is before ``before``, then purge the bytes."""
    marker = _marker(rel)
    table = open_table(store, rel)
    count = _count_older(store, rel, table, basis, before)
    result.rows_deleted += count
    if not apply:
        return
    if count:
        store.put_bytes(marker, rel.encode())
        _step("purge_marked", rel.split("/")[-1])
        before_files = _active(table)
        table.delete(
            _predicate(basis, before),
            commit_properties=CommitProperties(
                custom_metadata={
                    "energylake.operation": "retention delete",
                    _BEFORE_KEY: _literal(before),
                }
            ),
        )
        _step("expired_deleted", rel.split("/")[-1])
        after = _active(open_table(store, rel))
        gone = set(before_files) - set(after)
        result.files_removed += len(gone)
        result.bytes_removed += sum(before_files[p] for p in gone)
        new = set(after) - set(before_files)
        result.files_written += len(new)
        result.bytes_written += sum(after[p] for p in new)
    if store.exists(marker):
        purge_table(store, rel)
        result.purged.append(rel)
        store.delete(marker)


def _move(
    store: Store,
    contract: Contract,
    tenant: str,
    hot_rel: str,
    now: datetime,
    result: TableResult,
    *,
    apply: bool,
    storage_class: str,
    target_file_bytes: int,
) -> None:
    basis = contract.retention.basis
    cut = cutoffs(contract.retention, now)
    arch_rel = archive_rel(tenant, contract.dataset)
    result.archive_table = arch_rel
    hot = open_table(store, hot_rel)
    if apply:
        pending = pending_cutoff(store, hot_rel, hot, contract.dataset)
        if pending is not None:  # a crash between steps 2 and 3: finish step 3
            done = open_table(store, arch_rel).transaction_version(_source_txn(hot_rel))
            result.redone = True
            _delete_hot(store, hot_rel, basis, pending, int(done or 0), result)
            hot = open_table(store, hot_rel)
    version = int(hot.version())
    result.hot_version_read = version
    older = _older(store, hot_rel, hot, basis, cut.archive_before)
    if older.num_rows == 0:
        return
    keep = pc.greater_equal(older.column(basis), pa.scalar(cut.delete_before))
    moving = older.filter(keep)
    result.rows_archived += moving.num_rows
    result.rows_deleted += older.num_rows - moving.num_rows
    if not apply:
        return
    acontract = archive_contract(contract)
    ensure_table(store, arch_rel, acontract)
    digest = hashlib.sha256(hot_rel.encode()).hexdigest()[:8]
    files = write_archive_files(
        store,
        arch_rel,
        acontract,
        moving,
        batch_id=f"retention-{digest}-v{version}",
        storage_class=storage_class,
        target_file_bytes=target_file_bytes,
    )
    _step("archive_written", contract.dataset)
    result.files_written += len(files)
    result.bytes_written += sum(f.size for f in files)
    commit_files(
        store,
        arch_rel,
        acontract,
        files,
        app_id=_source_txn(hot_rel),
        version=version,
        metadata={
            "energylake.operation": "retention archive",
            _BEFORE_KEY: _literal(cut.archive_before),
        },
    )
    _step("archive_committed", contract.dataset)
    result.archive_version = int(open_table(store, arch_rel).version())
    _delete_hot(store, hot_rel, basis, cut.archive_before, version, result)
    if older.num_rows > moving.num_rows:  # rows past both periods left hot: their bytes go
        store.put_bytes(_marker(hot_rel), hot_rel.encode())
        purge_table(store, hot_rel)
        result.purged.append(hot_rel)
        store.delete(_marker(hot_rel))


def apply_retention(
    store: Store,
    registry: ContractRegistry,
    now: datetime | None = None,
    *,
    apply: bool = False,
    storage_class: str = "GLACIER_IR",
    target_file_bytes: int = 128 * 1024 * 1024,
    on_table: Callable[[TableResult], None] | None = None,
) -> ApplyReport:
    """One retention pass at ``now`` over the lake; dry (counts only) unless ``apply``.

    ``on_table`` is called with each table's result once it is done (the audit record)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    report = ApplyReport(now=now, applied=apply)
    for contract in registry:
        retention = contract.retention
        basis = retention.basis
        cut = cutoffs(retention, now)
        for tenant, rel in _tables(store, contract):
            if not table_exists(store, rel):
                continue
            t0 = time.monotonic()
            result = TableResult(contract.dataset, tenant, rel, None)
            if retention.archive_days > 0 and tenant is not None:
                _move(
                    store, contract, tenant, rel, now, result,
                    apply=apply, storage_class=storage_class, target_file_bytes=target_file_bytes,
                )  # fmt: skip
                arch = archive_rel(tenant, contract.dataset)
                if table_exists(store, arch):
                    _delete_expired(store, arch, basis, cut.delete_before, result, apply)
                    result.archive_version = int(open_table(store, arch).version())
            else:
                _delete_expired(store, rel, basis, cut.delete_before, result, apply)
            if table_exists(store, rel):
                result.hot_version = int(open_table(store, rel).version())
            result.seconds = time.monotonic() - t0
            report.tables.append(result)
            if on_table is not None and _changed(result):
                on_table(result)
    report.seconds = time.monotonic() - started
    return report


def _changed(result: TableResult) -> bool:
    return bool(result.rows_archived or result.rows_deleted or result.redone or result.purged)


def changed_tables(report: ApplyReport) -> Iterable[TableResult]:
    """The tables the pass moved or deleted rows of."""
    return (t for t in report.tables if _changed(t))


def apply_and_record(
    store: Store,
    registry: ContractRegistry,
    now: datetime | None = None,
    *,
    audit: AuditLog,
    emitter: LineageEmitter | None,
    storage_class: str = "GLACIER_IR",
    target_file_bytes: int = 128 * 1024 * 1024,
) -> ApplyReport:
    """:func:`apply_retention` with ``apply``, audited and in lineage: a
    ``RETENTION_START`` record, one ``RETENTION_TABLE`` per table changed (counts and
    versions, never a row's value) and a ``RETENTION_DONE``; an OpenLineage run of job
    ``retention`` (inputs: the hot tables at the versions read; outputs: the hot and
    archive tables at their versions after)."""
    moment = now or datetime.now(UTC)
    audit.append("RETENTION_START", {"now": moment.isoformat(), "actor": _actor()})
    run = emitter.run(jobs.generic("retention", "RETENTION")) if emitter is not None else None
    if run is not None:
        run.start()

    def record(result: TableResult) -> None:
        audit.append(
            "RETENTION_TABLE", {k: v for k, v in result.to_json().items() if k != "seconds"}
        )

    try:
        report = apply_retention(
            store, registry, moment, apply=True, storage_class=storage_class,
            target_file_bytes=target_file_bytes, on_table=record,
        )  # fmt: skip
    except BaseException as exc:
        audit.append("RETENTION_FAILED", {"error": type(exc).__name__, "message": str(exc)})
        if run is not None:
            run.fail(exc)
        raise
    audit.append("RETENTION_DONE", {**report.totals(), "seconds": round(report.seconds, 3)})
    if run is not None:
        lake = store.url("")
        changed = list(changed_tables(report))
        by_dataset = {c.dataset: c for c in registry}
        inputs = [
            TableDataset(lake, t.table, t.hot_version_read, by_dataset[t.dataset])
            for t in changed
            if t.hot_version_read is not None
        ]
        outputs = [
            TableDataset(lake, t.table, t.hot_version, by_dataset[t.dataset], rows=None)
            for t in changed
        ]
        outputs += [
            TableDataset(lake, t.archive_table, t.archive_version, tenant=t.tenant)
            for t in changed
            if t.archive_table is not None and t.archive_version is not None
        ]
        run.details["retention"] = {"now": moment.isoformat(), **report.totals()}
        run.complete(outputs, inputs)
    return report


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry (some containers)
        return "unknown"
