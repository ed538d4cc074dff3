"""Reading audit records back (``energylake audit log``): every record of a folder, oldest
first, filtered by principal, purpose, dataset, event and time.

The filters read the fields the writers give: the access layer's ``principal``, ``purpose``
and ``datasets`` (a list of ``{"dataset", ...}``), an operator's ``actor`` (who released a
held batch), and ``ts`` of every record. Lines that are not records are skipped here;
``audit verify`` is what names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from audit.chain import day_files

__all__ = ["RecordFilter", "parse_time", "read_records"]


def parse_time(value: str) -> datetime:
    """``2026-12-05`` or an ISO time (``Z`` or an offset; no offset is UTC)."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_records(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the folder, oldest first (one day file in memory at a time)."""
    for path in day_files(folder):
        for raw in path.read_bytes().split(b"\n"):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def _datasets(record: dict[str, Any]) -> set[str]:
    found = set()
    if isinstance(record.get("dataset"), str):
        found.add(record["dataset"])
    for item in record.get("datasets") or ():
        if isinstance(item, dict) and isinstance(item.get("dataset"), str):
            found.add(item["dataset"])
        elif isinstance(item, str):
            found.add(item)
    return found


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What ``audit log`` keeps; ``None`` keeps everything for that field."""

    principal: str | None = None  # the access record's principal or an operator's actor
    purpose: str | None = None
    dataset: str | None = None
    event: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def keeps(self, record: dict[str, Any]) -> bool:
        if self.event is not None and record.get("event") != self.event:
            return False
        if self.principal is not None and self.principal not in (
            record.get("principal"),
            record.get("actor"),
        ):
            return False
        if self.purpose is not None and record.get("purpose") != self.purpose:
            return False
        if self.dataset is not None and self.dataset not in _datasets(record):
            return False
        if self.since is not None or self.until is not None:
            try:
                moment = parse_time(str(record.get("ts")))
            except ValueError:
                return False
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment >= self.until:
                return False
        return True

    def select(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (record for record in records if self.keeps(record))
