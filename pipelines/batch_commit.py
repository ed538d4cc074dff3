"""A batch's commit step: the quality gate's holds, then one commit per table, every
readings table guarded against keys another writer (a ``quality release``) committed after
the batch's pinned snapshot.

Holds (:func:`hold`): when a blocking rule failed, the rows of the unit the rule is about
(the devices it names, or the whole table for a rule about the table) are split into held
files, kept for ``quality release`` / ``discard``; the rest of the table is committed with
the batch. The plan records both (``files``, ``held_files``) and counts the held rows
(``held`` stats; ``day`` stats count published rows only) before anything is committed,
so a replay finds the split made.

Beam deduplicated the batch against the snapshot the manifest pinned. If a release
committed some of the same readings after that, :func:`lake.guard.commit_guarded` rewrites
the batch's files without them before committing, and this module amends the batch's plan
first (files, ``written`` and ``day`` counts down, ``duplicates`` up), so that the plan a
replay or ``energylake status`` reads always matches what the table holds: conservation
(lake + quarantine + duplicates = acknowledged) stays exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from batch.records import GateVerdict, Plan, TableStat
from contracts.model import Contract
from lake.delta import DataFile, commit_files, ensure_table
from lake.guard import commit_guarded
from lake.layout import HELD_FOLDER
from lake.rewrite import split_files
from lake.storage import Store

__all__ = ["COMMIT_THREADS", "CommitJob", "commit_tables", "hold"]

COMMIT_THREADS = 4  # tables committed at once after a batch
CommitJob = tuple[str, Contract, list[DataFile]]  # rel, contract, files


def commit_tables(
    store: Store,
    jobs: Sequence[CommitJob],
    *,
    plan: Plan,
    snapshot: dict[str, int | None],
    guarded: Callable[[str], bool],
    save_plan: Callable[[Plan], None],
    app_id: str,
    version: int,
    metadata: dict[str, str],
) -> list[bool]:
    """Commit every job's files (the tables at once; each commit its own transaction, so a
    replay commits only what a crash left out). Returns, per job, whether it committed.

    ``guarded(dataset)`` says which tables are deduplicated (their commits are guarded);
    ``save_plan`` persists ``plan`` after an amendment, before the retried commit.
    """
    lock = threading.Lock()

    def one(job: CommitJob) -> bool:
        rel, contract, files = job
        ensure_table(store, rel, contract)
        if not guarded(contract.dataset):
            return commit_files(
                store, rel, contract, files, app_id=app_id, version=version, metadata=metadata
            )

        def amend(kept: list[DataFile], dropped: pl.DataFrame) -> None:
            with lock:
                _amend(plan, rel, contract.dataset, kept, dropped)
                save_plan(plan)

        return commit_guarded(
            store,
            rel,
            contract,
            files,
            app_id=app_id,
            version=version,
            metadata=metadata,
            checked_version=snapshot.get(rel),
            before_retry=amend,
        ).committed

    with ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit") as pool:
        return list(pool.map(one, jobs))


def hold(
    store: Store, plan: Plan, rel: str, contract: Contract, gate: GateVerdict
) -> list[DataFile]:
    """Split ``rel``'s files by the gate's verdict (a failed blocking rule); returns the files
    to publish now. Idempotent: a plan that records the split is not split again."""
    entry = plan.tables[rel]
    if entry.held_files is None:
        files = [DataFile.from_dict(f) for f in entry.files]
        devices = gate.held_devices
        # None: the whole table is held (every row taken)
        wanted = None if devices is None else pl.Series(devices, dtype=pl.String).implode()
        split = split_files(
            store,
            rel,
            contract,
            files,
            lambda frame: (
                pl.Series([True] * frame.height)
                if wanted is None
                else frame.select(pl.col("device_id").is_in(wanted)).to_series()
            ),
            kept_tag="p",
            taken_tag="h",
            taken_folder=HELD_FOLDER,
        )
        published, held, rows = split.kept, split.taken, split.taken_rows
        entry.files = [f.to_dict() for f in published]
        entry.held_files = [f.to_dict() for f in held]
        _count_held(plan, rel, contract.dataset, rows)
    return [DataFile.from_dict(f) for f in entry.files]


def _count_held(plan: Plan, rel: str, dataset: str, rows: pl.DataFrame) -> None:
    """``held`` stats per branch; the ``day`` stats keep only the rows published now."""
    if rows.is_empty():
        return
    tenant = rel.split("/")[1]
    stats = [s.to_row() for s in plan.stats]
    for branch, n in rows.group_by("branch_id").len().rows():
        stats.append(["held", tenant, dataset, branch or "", "", n])
    if "ts" in rows.columns:
        by_day = rows.group_by("branch_id", pl.col("ts").dt.date().alias("day")).len()
        for branch, day, n in by_day.rows():
            _take(stats, ("day", tenant, dataset, branch or "", str(day)), n)
    plan.stats = sorted(TableStat.from_row(s) for s in stats if s[5] != 0)


def _amend(plan: Plan, rel: str, dataset: str, kept: list[DataFile], dropped: pl.DataFrame) -> None:
    """Amend the plan in place: ``rel``'s files are now ``kept``, and the rows ``dropped``
    by this rewrite count as duplicates instead of written."""
    plan.tables[rel].files = sorted((f.to_dict() for f in kept), key=lambda f: f["path"])
    tenant = rel.split("/")[1]
    stats = [s.to_row() for s in plan.stats]
    by_branch = dropped.group_by("branch_id").len().rows()
    by_day = dropped.group_by("branch_id", pl.col("ts").dt.date().alias("day")).len().rows()
    for branch, n in by_branch:
        _take(stats, ("written", tenant, dataset, branch or "", ""), n)
        stats.append(["duplicates", tenant, dataset, branch or "", "", n])
    for branch, day, n in by_day:
        _take(stats, ("day", tenant, dataset, branch or "", str(day)), n)
    plan.stats = sorted(TableStat.from_row(s) for s in stats if s[5] != 0)


def _take(stats: list[list[Any]], key: tuple[str, str, str, str, str], n: int) -> None:
    """Subtract ``n`` from the rows of ``key`` (rows are per file: several may match)."""
    for row in stats:
        if n == 0:
            return
        if tuple(row[:5]) == key:
            part = min(n, int(row[5]))
            row[5] = int(row[5]) - part
            n -= part
    if n:
        raise ValueError(f"plan counts {key} are short by {n}: the plan and its files disagree")
