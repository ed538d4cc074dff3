"""What a batch reads from the landing log: closed segments in groups of about
``GROUP_BYTES`` (one Beam element each) and, from a group, envelope chunks of about
``CHUNK_RECORDS`` (small segments are read together so per-chunk costs stay amortised).
Envelopes again by offset: ``landing.reader.read_records_at``.

A group names its segments by reference (for the pipeline: the lake-relative path of the
copy its batch staged in the lake) and a ``load`` function gives their bytes, so the
worker that reads them needs nothing of the machine that grouped them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

import pyarrow as pa

from landing.reader import SegmentBytes, iter_segment_tables

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
    refs: Sequence[str], load: Callable[[str], bytes]
) -> Iterator[pa.Table | tuple[str, str, str, str, str, int]]:
    """Envelope chunks of about CHUNK_RECORDS from a group of closed segments (small segments
    are read together: per-chunk costs stay amortised); damage comes out as a stat.

    ``refs`` name the segments (the last ``/`` part is the segment's file name) and
    ``load`` reads one, whole; one segment is held in memory at a time."""
    pending: list[pa.Table] = []
    rows = 0
    for ref in refs:
        segment = SegmentBytes(PurePosixPath(ref).name, load(ref))
        for part in iter_segment_tables(segment, CHUNK_RECORDS):
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


def group_segments(
    sized: Sequence[tuple[str, int]], target_bytes: int = GROUP_BYTES
) -> list[list[str]]:
    """Consecutive segments, given as ``(reference, size in bytes)``, in groups of about
    ``target_bytes`` (one Beam element each)."""
    groups: list[list[str]] = []
    size = 0
    for ref, length in sized:
        if not groups or size + length > target_bytes:
            groups.append([])
            size = 0
        groups[-1].append(ref)
        size += length
    return groups
