"""How long audit records are kept, and the one way to delete old ones.

India's DPDP Rules ask for logs of processing to be kept for at least one year, so nothing
younger than ``MIN_RETENTION_DAYS`` is ever deleted: ``prune`` refuses a shorter age, and any
future retention code deletes audit files through it. It is a dry run unless told otherwise;
before deleting it appends an ``audit_pruned`` record to the same chain (the files, the last
pruned seq and its SHA-256), so ``audit verify`` knows where the remaining chain starts and
that nothing before it went missing unnoticed. The newest file (the chain's head) is never
pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from audit.chain import day_files, last_line, line_hash
from audit.errors import AuditRetentionError, AuditWriteError
from audit.log import AuditLog
from audit.verify import PRUNED_EVENT
from durable.files import fsync_dir

__all__ = ["MIN_RETENTION_DAYS", "RETENTION_DAYS", "PruneReport", "prune"]

MIN_RETENTION_DAYS = 365  # the legal floor: a year of processing logs
RETENTION_DAYS = 366  # the default age past which audit files may be pruned (a leap year)


@dataclass(slots=True)
class PruneReport:
    """What ``prune`` deleted (or would delete, on a dry run)."""

    folder: Path
    older_than_days: int
    dry_run: bool
    files: list[str] = field(default_factory=list)
    through_seq: int = 0  # the last pruned record
    through_sha256: str = ""
    record_seq: int | None = None  # the audit_pruned record written (not on a dry run)


def prune(
    folder: Path,
    older_than_days: int = RETENTION_DAYS,
    *,
    dry_run: bool = True,
    today: date | None = None,
    anchor_dir: Path | None = None,
    actor: str | None = None,
) -> PruneReport:
    """Delete the folder's day files older than ``older_than_days`` (whole UTC days before
    ``today``); refuses fewer than ``MIN_RETENTION_DAYS``."""
    if older_than_days < MIN_RETENTION_DAYS:
        raise AuditRetentionError(
            f"audit records are kept at least {MIN_RETENTION_DAYS} days (DPDP Rules: a year "
            f"of processing logs); {older_than_days} is too few: pass {RETENTION_DAYS} or more",
            setting="--older-than-days",
            value=older_than_days,
        )
    folder = Path(folder)
    report = PruneReport(folder, older_than_days, dry_run)
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=older_than_days)
    files = day_files(folder)
    old = [p for p in files[:-1] if date.fromisoformat(p.stem) < cutoff]
    report.files = [p.name for p in old]
    line = None
    while old and (line := last_line(old[-1])) is None:  # an empty file: nothing to name
        old = old[:-1]
    if line is not None:
        report.through_seq = int(orjson.loads(line)["seq"])
        report.through_sha256 = line_hash(line)
    if dry_run or not report.files:
        return report
    audit = AuditLog(folder, component="audit", fail_closed=True, anchor_dir=anchor_dir)
    try:
        written = audit.append(
            PRUNED_EVENT,
            {
                "files": report.files,
                "older_than_days": older_than_days,
                "through_seq": report.through_seq,
                "through_sha256": report.through_sha256,
                "actor": actor,
            },
        )
    finally:
        audit.close()
    if written is None:  # pragma: no cover - a fail-closed log raises instead
        raise AuditWriteError("the audit_pruned record was not written", folder=folder)
    report.record_seq = written[0]
    for name in report.files:
        (folder / name).unlink()
    fsync_dir(folder)
    return report
