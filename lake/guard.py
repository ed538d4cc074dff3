"""One commit discipline for every writer of a readings table: the duplicate check and the
commit cannot interleave with another writer's commit.

A writer (a ``process`` batch, a ``quality release``; the retention and erasure jobs to
come) checks its rows for keys the table already holds at some version ``v`` (a batch's
pinned snapshot, the version a release read), writes its files, and then commits through
:func:`commit_guarded`. Inside the commit's lock-free retry loop, against the table as it
is at that moment (version ``c``), :class:`KeyGuard` reads the key columns of the files
added after ``v`` (``c > v`` only when another writer committed in between) and, if any of
the writer's rows has a key among them, the commit does not happen: the writer's files are
rewritten without those rows (counted as duplicates: the other writer's copy stays) and the
commit is tried again with ``v = c``. The commit itself is made with no automatic retry,
so it lands at exactly version ``c + 1`` or fails, and a failure starts over with a fresh
check. Optimistic, as Delta's own commits are: no lock object, on local disk and on S3
alike, and no cost when nobody else committed (then ``c == v`` and nothing is read).

Compaction follows the same rule trivially: it adds no key (it rewrites rows the table
holds), and Delta's own conflict check fails it if a file it rewrites was removed under it.

The key of a reading is ``(device_id, seq, ts)``: a copy with the same device, sequence
number and event time is the same reading delivered again. (Deduplication within a batch
also tells a device's reboot or a resent seq with other content apart; at commit time only
a true redelivery can have slipped in between, since both copies passed a writer's check.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from contracts.model import Contract
from lake.delta import DataFile, commit_files, open_table
from lake.errors import LakeError
from lake.rewrite import split_files, table_filesystem
from lake.storage import Store

__all__ = [
    "READING_KEY",
    "DuplicateKeysError",
    "GuardedCommit",
    "KeyGuard",
    "commit_guarded",
]

READING_KEY: tuple[str, ...] = ("device_id", "seq", "ts")
"""The columns that identify one reading across deliveries (see the module's docstring)."""

_MAX_REWRITES = 20  # each needs another writer's commit in between: a busy table, not a loop


class DuplicateKeysError(LakeError):
    """Rows about to be committed have keys that another writer committed after the check."""

    def __init__(self, rel: str, version: int, keys: pl.DataFrame) -> None:
        self.rel = rel
        self.version = version
        self.keys = keys
        super().__init__(
            f"{rel}: {keys.height} key(s) about to be committed were committed by another "
            f"writer up to version {version}; the rows are dropped and the commit retried"
        )


@dataclass(slots=True)
class KeyGuard:
    """The check :func:`lake.delta.commit_files` runs against the fresh table before each
    attempt: no key of ``files`` may be among the rows added after ``checked_version``."""

    store: Store
    rel: str
    files: Sequence[DataFile]
    checked_version: int | None  # None: the writer's check saw no table
    columns: tuple[str, ...] = READING_KEY
    _ours: pl.DataFrame | None = field(default=None, init=False)

    def __call__(self, table: DeltaTable) -> None:
        current = int(table.version())
        checked = self.checked_version
        if checked is not None and current <= checked:
            return  # nobody committed since the check: the common case costs nothing
        added = _paths(table)
        if checked is not None:
            added -= _paths(open_table(self.store, self.rel, checked))
        if added and self.files:
            ours = self._our_keys()
            devices = ours.get_column(self.columns[0]).unique().to_list()
            theirs = _read_keys(self.store, self.rel, sorted(added), self.columns, devices)
            clash = ours.join(theirs, on=list(self.columns), how="semi").unique()
            if clash.height:
                raise DuplicateKeysError(self.rel, current, clash)
        self.checked_version = current

    def _our_keys(self) -> pl.DataFrame:
        if self._ours is None:
            self._ours = _read_keys(
                self.store, self.rel, [f.path for f in self.files], self.columns, None
            )
        return self._ours


@dataclass(slots=True)
class GuardedCommit:
    """What :func:`commit_guarded` did."""

    committed: bool  # False: the table already recorded this app transaction (a replay)
    files: list[DataFile]  # the files committed (rewritten ones replace the originals)
    dropped: pl.DataFrame  # rows left out as another writer's duplicates: partition columns, ts


def commit_guarded(
    store: Store,
    rel: str,
    contract: Contract,
    files: Sequence[DataFile],
    *,
    app_id: str,
    version: int,
    metadata: dict[str, str],
    checked_version: int | None,
    before_retry: Callable[[list[DataFile], pl.DataFrame], None] | None = None,
) -> GuardedCommit:
    """Commit ``files`` as :func:`lake.delta.commit_files` does, guarded by :class:`KeyGuard`.

    When another writer committed some of the same keys after ``checked_version``, the
    files holding them are rewritten without those rows (new names derived from the
    originals and the version that holds the other copies, so a replay rewrites the same
    names) and ``before_retry(files, rows dropped by this rewrite)`` runs before the next attempt: a
    writer that records its files and counts (a batch's plan) persists them there, so a
    crash after the commit leaves a record that matches the table.
    """
    current = list(files)
    dropped: list[pl.DataFrame] = []
    for _ in range(_MAX_REWRITES):
        guard = KeyGuard(store, rel, current, checked_version)
        try:
            done = commit_files(
                store,
                rel,
                contract,
                current,
                app_id=app_id,
                version=version,
                metadata=metadata,
                precheck=guard,
            )
        except DuplicateKeysError as clash:
            current, gone = _without(store, rel, contract, current, clash)
            dropped.append(gone)
            checked_version = clash.version
            if before_retry is not None:
                before_retry(current, _concat([gone], contract))
            continue
        return GuardedCommit(done, current, _concat(dropped, contract))
    raise LakeError(
        f"{rel}: other writers kept committing the same keys; gave up after "
        f"{_MAX_REWRITES} rewrites of {app_id}@{version}"
    )


# ------------------------------------------------------------------------------- helpers


def _paths(table: DeltaTable) -> set[str]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return set(actions.column("path").to_pylist()) if actions.num_rows else set()


def _read_keys(
    store: Store,
    rel: str,
    paths: list[str],
    columns: tuple[str, ...],
    devices: list[Any] | None,
) -> pl.DataFrame:
    """The key columns of some data files of the table (only rows of ``devices``)."""
    if not paths:
        return pl.DataFrame(schema={c: pl.Null for c in columns})
    data = pads.dataset(paths, format="parquet", filesystem=table_filesystem(store, rel))
    where = pads.field(columns[0]).isin(devices) if devices is not None else None
    frame = pl.from_arrow(data.to_table(columns=list(columns), filter=where))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _without(
    store: Store,
    rel: str,
    contract: Contract,
    files: list[DataFile],
    clash: DuplicateKeysError,
) -> tuple[list[DataFile], pl.DataFrame]:
    """The files with the clashing keys' rows left out, and those rows (partition, ts)."""
    columns = list(clash.keys.columns)
    wanted = clash.keys.select(pl.struct(columns).alias("k")).get_column("k")

    def clashing(rows: pl.DataFrame) -> pl.Series:
        return rows.select(pl.struct(columns).is_in(wanted.implode())).to_series()

    split = split_files(
        store, rel, contract, files, clashing, kept_tag=f"v{clash.version}", taken_tag=None
    )
    if split.taken_rows.is_empty():
        return split.kept, split.taken_rows
    return split.kept, split.taken_rows.select(*contract.partition_columns, "ts")


def _concat(frames: list[pl.DataFrame], contract: Contract) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if frames:
        return pl.concat(frames, how="vertical_relaxed")
    schema: dict[str, Any] = dict.fromkeys(contract.partition_columns, pl.String)
    return pl.DataFrame(schema={**schema, "ts": pl.Datetime("us", "UTC")})
