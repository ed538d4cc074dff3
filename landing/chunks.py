"""What the Beam stages are given to read the landing log: envelope chunks from closed
segments (grouped so per-chunk costs stay amortised), and envelopes again by offset."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from gateway.landing import iter_segment_tables, read_records_at

__all__ = [
    "CHUNK_RECORDS",
    "GROUP_BYTES",
    "EnvelopeReader",
    "group_segments",
    "read_segment_tables",
]

log = logging.getLogger("energylake.process")
CHUNK_RECORDS = 32_000
GROUP_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class EnvelopeReader:
    """Envelopes again, by (segment, offset): accepted rows do not carry source, topic,
    identity and raw bytes through the shuffle; the few a later stage quarantines are read
    back from the closed segment, which stays in place until the batch has committed."""

    closed: str

    def __call__(self, segment: str, offsets: Sequence[int]) -> list[tuple[str, str, str, bytes]]:
        return [
            (e.source, e.topic, e.identity, e.payload)
            for e in read_records_at(Path(self.closed) / segment, offsets)
        ]


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
