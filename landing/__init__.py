"""The landing log: append-only segment files of raw messages, as received, between the
gateway (which writes them) and the pipeline (which reads the closed ones).

- ``landing.format``: the bytes (constants, the envelope, the file header); docs/LANDING.md.
- ``landing.writer``: ``LandingWriter`` (append, group sync, roll, close) and ``recover``,
  which closes what a crashed writer left in ``open/``.
- ``landing.reader``: every complete record of a segment before a torn or corrupt tail, as
  Python lists or Arrow tables; the closed segments of a landing folder.
- ``landing.chunks``: what the batch reads: groups of closed segments, envelope chunks of
  about ``CHUNK_RECORDS``, envelopes again by offset.

Imports only ``contracts``; never Beam. Used by the gateway, the simulator, the transforms
and the pipeline. The public names of the four modules are re-exported here.
"""

from landing.chunks import CHUNK_RECORDS, GROUP_BYTES, group_segments, read_segment_tables
from landing.format import (
    ARROW_SCHEMA,
    BODY_FIXED_BYTES,
    FILE_HEADER_BYTES,
    FILE_MAGIC,
    FORMAT_VERSION,
    FRAME_HEADER_BYTES,
    MAX_BODY_BYTES,
    MIB,
    SOURCES,
    DamageReason,
    Envelope,
    LandingError,
    RecordRef,
    Source,
    TailDamage,
)
from landing.reader import (
    SegmentRecords,
    SegmentTable,
    closed_segments,
    iter_segment_chunks,
    iter_segment_tables,
    read_records_at,
    read_segment,
)
from landing.writer import LandingWriter, RecoveredSegment, recover

__all__ = [
    "ARROW_SCHEMA",
    "BODY_FIXED_BYTES",
    "CHUNK_RECORDS",
    "FILE_HEADER_BYTES",
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "FRAME_HEADER_BYTES",
    "GROUP_BYTES",
    "MAX_BODY_BYTES",
    "MIB",
    "SOURCES",
    "DamageReason",
    "Envelope",
    "LandingError",
    "LandingWriter",
    "RecordRef",
    "RecoveredSegment",
    "SegmentRecords",
    "SegmentTable",
    "Source",
    "TailDamage",
    "closed_segments",
    "group_segments",
    "iter_segment_chunks",
    "iter_segment_tables",
    "read_records_at",
    "read_segment",
    "read_segment_tables",
    "recover",
]
