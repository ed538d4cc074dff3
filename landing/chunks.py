"""What a batch reads from the landing log: closed segments in groups of about
``GROUP_BYTES`` (one Beam element each) and, from a group, envelope chunks of about
``CHUNK_RECORDS`` (small segments are read together so per-chunk costs stay amortised).
Envelopes again by offset: ``landing.reader.read_records_at``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from landing.reader import iter_segment_tables

__all__ = [
    "CHUNK_RECORDS",
    "GROUP_BYTES",
    "group_segments",
    "read_segment_tables",
]

log = logging.getLogger("energylake.process")
CHUNK_RECORDS = 32_000
GROUP_BYTES = 32 << 20


def read_segment_tables(
    paths: list[str],
) -> Iterator[pa.Table | tuple[str, str, str, str, str, int]]:
    """Envelope chunks of about CHUNK_RECORDS from a group of closed segments (small segments
    are read together: per-chunk costs stay amortised); damage comes out as a stat."""
    pending: list[pa.Table] = []
    rows = 0
    for path in paths:
        for part in iter_segment_tables(Path(path), CHUNK_RECORDS):
            if len(part):
                pending.append(part.table)
                rows += len(part)
            if part.damage is not None:
                log.error("segment %s: damaged tail: %s", part.segment, part.damage)
                yield ("damaged", "", "", "", part.segment, int(part.damage.length))
            if rows >= CHUNK_RECORDS:
                yield pa.concat_tables(pending)
                pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending)


def group_segments(paths: list[Path], target_bytes: int = GROUP_BYTES) -> list[list[str]]:
    """Consecutive segments in groups of about ``target_bytes`` (one Beam element each)."""
    groups: list[list[str]] = []
    size = 0
    for path in paths:
        length = path.stat().st_size
        if not groups or size + length > target_bytes:
            groups.append([])
            size = 0
        groups[-1].append(str(path))
        size += length
    return groups
