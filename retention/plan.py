"""What the contracts' retention says is due, table by table and partition by partition:
the rows to move from the hot tier to the archive, and the rows to delete.

Every contract declares ``retention``: ``hot_days``, ``archive_days`` and the ``basis``
column the age is counted from. At a moment ``now`` a row whose basis is older than
``now - hot_days`` is due for the archive, and one older than ``now - hot_days -
archive_days`` is due for deletion (with ``archive_days`` 0, straight from hot). A row
with no basis value is kept, and said so.

The plan reads only what it must. Each data file's min/max statistics of the basis column
(in the Delta log) settle whole files. A file that straddles a cut-off has its basis
column read and counted. The counts are exact; bytes are the files' sizes pro rata of
their rows. It changes nothing: ``energylake retention plan`` is its dry run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import Contract, ContractRegistry
from contracts.model import Retention
from lake.delta import open_table, table_exists
from lake.layout import UNASSIGNED_TENANT, platform_rel, table_rel, tenants
from lake.storage import Store

__all__ = ["Cutoffs", "PartitionPlan", "RetentionPlan", "cutoffs", "plan_retention"]

_QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows whose basis is before ``archive_before`` leave the hot tier; before
    ``delete_before`` they are deleted. Equal when the contract has no archive."""

    archive_before: datetime
    delete_before: datetime


def cutoffs(retention: Retention, now: datetime) -> Cutoffs:
    hot = now - timedelta(days=retention.hot_days)
    return Cutoffs(archive_before=hot, delete_before=hot - timedelta(days=retention.archive_days))


@dataclass(slots=True)
class PartitionPlan:
    """One partition of one table (the whole table when it is not partitioned)."""

    dataset: str
    tenant: str | None  # None: a platform-wide table (clients)
    table: str
    version: int
    partition: dict[str, str | None]
    rows: int = 0
    files: int = 0
    size_bytes: int = 0
    archive_rows: int = 0  # due to move to the archive tier
    delete_rows: int = 0  # due to be deleted
    no_basis_rows: int = 0  # kept: no basis value to count the age from
    archive_bytes: int = 0
    delete_bytes: int = 0
    files_read: int = 0  # files whose basis column had to be read (statistics did not settle)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class RetentionPlan:
    now: datetime
    partitions: list[PartitionPlan] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per dataset: rows, archive and delete rows and bytes."""
        out: dict[str, dict[str, int]] = {}
        for p in self.partitions:
            t = out.setdefault(
                p.dataset,
                dict.fromkeys(
                    ("rows", "archive_rows", "delete_rows", "archive_bytes", "delete_bytes"), 0
                ),
            )
            t["rows"] += p.rows
            t["archive_rows"] += p.archive_rows
            t["delete_rows"] += p.delete_rows
            t["archive_bytes"] += p.archive_bytes
            t["delete_bytes"] += p.delete_bytes
        return out


def _tables(store: Store, contract: Contract) -> Iterable[tuple[str | None, str]]:
    if contract.platform_wide:
        yield None, platform_rel(contract.dataset)
        return
    for tenant in tenants(store):
        yield tenant, table_rel(tenant, contract.dataset)
    if contract.dataset == _QUARANTINE:
        yield UNASSIGNED_TENANT, table_rel(UNASSIGNED_TENANT, _QUARANTINE)


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def plan_retention(
    store: Store, registry: ContractRegistry, now: datetime | None = None
) -> RetentionPlan:
    """The retention due at ``now`` (default: the current time) across the lake."""
    now = now or datetime.now(UTC)
    plan = RetentionPlan(now=now)
    fs, base = store.filesystem()
    for contract in registry:
        cut = cutoffs(contract.retention, now)
        basis = contract.retention.basis
        for tenant, rel in _tables(store, contract):
            if not table_exists(store, rel):
                continue
            table = open_table(store, rel)
            version = int(table.version())
            actions = pa.table(table.get_add_actions(flatten=True))
            names = actions.column_names
            parts = [n for n in names if n.startswith("partition.")]
            by_partition: dict[tuple[Any, ...], PartitionPlan] = {}
            for row in actions.to_pylist():
                key = tuple(row[p] for p in parts)
                entry = by_partition.get(key)
                if entry is None:
                    entry = PartitionPlan(
                        dataset=contract.dataset,
                        tenant=tenant,
                        table=rel,
                        version=version,
                        partition={p.removeprefix("partition."): row[p] for p in parts},
                    )
                    by_partition[key] = entry
                _count_file(entry, row, basis, cut, fs, f"{base}/{rel}")
            plan.partitions.extend(by_partition.values())
    return plan


def _count_file(
    entry: PartitionPlan,
    action: dict[str, Any],
    basis: str,
    cut: Cutoffs,
    fs: Any,
    table_path: str,
) -> None:
    rows = int(action["num_records"] or 0)
    size = int(action["size_bytes"] or 0)
    entry.rows += rows
    entry.files += 1
    entry.size_bytes += size
    if not rows:
        return
    low = _as_utc(action.get(f"min.{basis}"))
    high = _as_utc(action.get(f"max.{basis}"))
    nulls = action.get(f"null_count.{basis}")
    if low is not None and high is not None and nulls == 0:
        if high < cut.delete_before:
            entry.delete_rows += rows
            entry.delete_bytes += size
            return
        if low >= cut.archive_before:
            return
        if low >= cut.delete_before and high < cut.archive_before:
            entry.archive_rows += rows
            entry.archive_bytes += size
            return
    # The statistics do not settle it (a straddling file, or no statistics): count.
    entry.files_read += 1
    column = pq.read_table(f"{table_path}/{action['path']}", columns=[basis], filesystem=fs).column(
        basis
    )
    delete = int(pc.sum(pc.less(column, pa.scalar(cut.delete_before))).as_py() or 0)
    older = int(pc.sum(pc.less(column, pa.scalar(cut.archive_before))).as_py() or 0)
    missing = int(column.null_count)
    entry.delete_rows += delete
    entry.archive_rows += older - delete
    entry.no_basis_rows += missing
    entry.delete_bytes += size * delete // rows
    entry.archive_bytes += size * (older - delete) // rows
