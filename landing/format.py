"""The landing segment format: constants, the envelope, the file header.

A segment is a file header followed by frames; each frame carries its length twice
(plain and complemented) and a CRC-32 of its body (docs/LANDING.md describes the bytes).
The writer is ``landing.writer``; the reader ``landing.reader``.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

from contracts import EnergylakeError

__all__ = [
    "ARROW_SCHEMA",
    "BODY_FIXED_BYTES",
    "FILE_HEADER_BYTES",
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "FRAME_HEADER_BYTES",
    "MAX_BODY_BYTES",
    "MIB",
    "SOURCES",
    "DamageReason",
    "Envelope",
    "LandingError",
    "RecordRef",
    "Source",
    "TailDamage",
]

Source = Literal["mqtt", "http", "file", "modbus"]
DamageReason = Literal["truncated", "checksum", "bad header"]

SOURCES: Final[tuple[Source, ...]] = ("mqtt", "http", "file", "modbus")
SOURCE_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(SOURCES)}

MIB: Final = 1 << 20
FORMAT_VERSION: Final = 1
FILE_MAGIC: Final = b"\x89ELSEG\r\n"
FILE_HEAD = struct.Struct("<8sHHI")  # magic, version, flags, crc32 of the first 12 bytes
FRAME_HEAD = struct.Struct("<III")  # body length, body length ^ 0xFFFFFFFF, crc32(body)
BODY_FIXED = struct.Struct("<qBBHH")  # received_at_us, source, flags, topic len, identity len
FILE_HEADER_BYTES: Final = FILE_HEAD.size  # 16
FRAME_HEADER_BYTES: Final = FRAME_HEAD.size  # 12
BODY_FIXED_BYTES: Final = BODY_FIXED.size  # 14
MAX_BODY_BYTES: Final = 1 << 30
MASK32: Final = 0xFFFFFFFF
MAX_TEXT: Final = 0xFFFF

ARROW_SCHEMA: Final = pa.schema(
    [
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("identity", pa.string(), nullable=False),
        pa.field("payload", pa.large_binary(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("offset_bytes", pa.int64(), nullable=False),
    ]
)


class LandingError(EnergylakeError):
    """A landing-log file or operation that cannot proceed (not a segment, bad input, I/O)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One received message: when, through which door, on which topic, from whom, raw bytes."""

    received_at_us: int
    source: Source
    topic: str
    identity: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where an appended record lives: segment file name and byte offset of its frame."""

    segment: str
    offset: int


@dataclass(frozen=True, slots=True)
class TailDamage:
    """The unreadable end of a segment: from ``offset`` (end of the last good record) on."""

    offset: int
    length: int
    reason: DamageReason
    detail: str


def file_header() -> bytes:
    """The 16 bytes every segment starts with."""
    head = FILE_MAGIC + struct.pack("<HH", FORMAT_VERSION, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def check_file_header(buf: bytes | mmap.mmap, name: str) -> TailDamage | None:
    """Damage at offset 0 if the header is torn or corrupt; LandingError if not a segment."""
    n = len(buf)
    if n < FILE_HEADER_BYTES:
        head = bytes(buf[:n])
        if FILE_MAGIC.startswith(head[: len(FILE_MAGIC)]):
            return TailDamage(0, n, "truncated", f"file header incomplete ({n} of 16 bytes)")
        raise LandingError(f"{name}: not a landing segment (bad magic)")
    magic, version, _flags, crc = FILE_HEAD.unpack_from(buf, 0)
    if magic != FILE_MAGIC:
        raise LandingError(f"{name}: not a landing segment (bad magic)")
    if zlib.crc32(bytes(buf[:12])) != crc:
        return TailDamage(0, n, "bad header", "file header checksum mismatch")
    if version != FORMAT_VERSION:
        raise LandingError(
            f"{name}: landing segment format version {version} is not supported "
            f"(this reader knows {FORMAT_VERSION})"
        )
    return None
