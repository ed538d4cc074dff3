"""Physical erasure of what a Delta table no longer references.

A Delta ``delete`` or ``update`` is logical: it rewrites the files that held the rows and
records the old ones as removed, but their bytes stay until a vacuum, and values stay in
the log -- the DELETE or UPDATE commit's own predicate (it holds the literal), min/max
statistics in earlier ``add`` actions, tombstones in checkpoints (kept for
``delta.deletedFileRetentionDuration``). :func:`purge_table` removes all of that, in the
order measured on deltalake 1.6.6 to reach zero bytes:

1. ``delta.logRetentionDuration`` and ``delta.deletedFileRetentionDuration`` to 0 (one commit);
2. vacuum of the removed files (``retention_hours=0``);
3. vacuum of orphans -- files in the table's folders that no version lists (a crashed
   writer's) -- older than ``orphan_grace_s``: a younger orphan may be a file a running
   pipeline has written and not committed yet, and deleting it would break that commit;
4. a checkpoint at the latest version (after the delete and the vacuum commits), so the
   commits that held the old values are no longer needed by any reader;
5. log clean-up: every commit and checkpoint before that checkpoint goes;
6. the retention properties back to what they were (from a crash in between: the
   defaults, since a value of 0 is never the table's own);
7. empty partition folders removed (local disk; S3 has no folders).

Cost: time travel to any version before the checkpoint stops working, for the whole table.
A crash at any step leaves a readable table; running :func:`purge_table` again finishes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from deltalake import CommitProperties

from lake.delta import open_table
from lake.storage import Store

__all__ = [
    "FILE_RETENTION",
    "LOG_RETENTION",
    "ORPHAN_GRACE_S",
    "PurgeReport",
    "purge_table",
    "unreferenced_files",
]

LOG_RETENTION = "delta.logRetentionDuration"
FILE_RETENTION = "delta.deletedFileRetentionDuration"
_ZERO = "interval 0 seconds"
_DEFAULTS = {LOG_RETENTION: "interval 30 days", FILE_RETENTION: "interval 7 days"}
ORPHAN_GRACE_S = 3600
"""Orphan files younger than this are left to the next purge (a writer may still commit them)."""


@dataclass(slots=True)
class PurgeReport:
    """What one :func:`purge_table` did."""

    table: str
    version_before: int
    version_after: int
    removed_files: list[str] = field(default_factory=list)  # tombstoned files deleted
    orphan_files: list[str] = field(default_factory=list)  # unlisted files deleted
    young_orphans: list[str] = field(default_factory=list)  # unlisted, within the grace: kept
    log_files_before: int = 0  # files in _delta_log before and after
    log_files_after: int = 0
    empty_folders_removed: int = 0
    seconds: float = 0.0


def _commit(operation: str) -> CommitProperties:
    return CommitProperties(custom_metadata={"energylake.operation": operation})


def unreferenced_files(store: Store, rel: str) -> list[str]:
    """Data files under the table's folder (not ``_``-prefixed ones) that the latest version
    does not list: tombstoned files not vacuumed yet, and orphans. Paths relative to the table."""
    table = open_table(store, rel)
    listed = set(table.file_uris())
    base = store.url(rel).rstrip("/")
    found: list[str] = []
    for path in store.list(rel):
        inside = path[len(rel) :].lstrip("/")
        if not inside.endswith(".parquet") or any(
            p.startswith(("_", ".")) for p in inside.split("/")
        ):
            continue
        if f"{base}/{inside}" not in listed:
            found.append(inside)
    return sorted(found)


def purge_table(store: Store, rel: str, *, orphan_grace_s: float = ORPHAN_GRACE_S) -> PurgeReport:
    """Remove the bytes of every row the table no longer holds (see the module's steps)."""
    started = time.monotonic()
    table = open_table(store, rel)
    before = int(table.version())
    config = table.metadata().configuration
    saved = {
        key: value if value and value != _ZERO else _DEFAULTS[key]
        for key, value in ((k, config.get(k)) for k in (LOG_RETENTION, FILE_RETENTION))
    }
    report = PurgeReport(table=rel, version_before=before, version_after=before)
    report.log_files_before = len(store.list(f"{rel}/_delta_log"))
    table.alter.set_table_properties(
        {LOG_RETENTION: _ZERO, FILE_RETENTION: _ZERO}, commit_properties=_commit("purge-start")
    )
    report.removed_files = table.vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False
    )
    orphans = table.vacuum(
        retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True
    )
    cutoff = time.time() - orphan_grace_s
    gone = set(report.removed_files)
    orphans = [p for p in orphans if p not in gone]
    old = [p for p in orphans if (store.modified_at(f"{rel}/{p}") or 0.0) <= cutoff]
    report.young_orphans = sorted(set(orphans) - set(old))
    for path in old:
        store.delete(f"{rel}/{path}")
    report.orphan_files = sorted(old)
    table.update_incremental()
    table.create_checkpoint()
    table.cleanup_metadata()
    table.alter.set_table_properties(saved, commit_properties=_commit("purge-end"))
    report.version_after = int(table.version())
    report.log_files_after = len(store.list(f"{rel}/_delta_log"))
    if not store.is_s3:
        report.empty_folders_removed = _remove_empty_folders(Path(store.url(rel)))
    report.seconds = time.monotonic() - started
    return report


def _remove_empty_folders(root: Path) -> int:
    """Remove the empty folders under ``root`` (deepest first; never ``root`` itself)."""
    removed = 0
    for folder, _subdirs, _files in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        path = Path(folder)
        if path == root or path.name.startswith("_delta_log"):
            continue
        try:
            path.rmdir()
        except OSError:
            continue  # not empty
        removed += 1
    return removed
