"""Reading landing segments: every complete record before a torn or corrupt tail.

Nothing after a bad frame is read: the reader never resynchronises, because a payload
may itself contain bytes that look like a valid frame.

The frames are walked once in Python (the only step that must be sequential: a frame's
length says where the next begins; the walk checks lengths and the CRC-32 of each body).
Everything else is done on whole columns with numpy and Arrow: the fixed fields are
gathered at once, topics, identities and payloads are cut out of the file's bytes as
Arrow binary views and copied into ordinary Arrow arrays, and text is checked as UTF-8
in one pass. The pipeline takes the result as an Arrow table (``iter_segment_tables``);
``read_segment`` gives the same records as Python lists.

Every reader takes a segment either as a local path or as its bytes with its name
(``SegmentBytes``): a pipeline's workers read the copy the batch staged in the lake, not
the landing folder of the machine that claimed the batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from landing.format import (
    ARROW_SCHEMA,
    BODY_FIXED_BYTES,
    FILE_HEADER_BYTES,
    FRAME_HEAD,
    FRAME_HEADER_BYTES,
    MASK32,
    MAX_BODY_BYTES,
    SOURCES,
    Envelope,
    LandingError,
    TailDamage,
    check_file_header,
)

__all__ = [
    "SegmentBytes",
    "SegmentRecords",
    "SegmentTable",
    "closed_segments",
    "iter_segment_chunks",
    "iter_segment_tables",
    "read_records_at",
    "read_segment",
    "scan_frames",
]

Int64Array = npt.NDArray[np.int64]
_FIXED = np.arange(BODY_FIXED_BYTES)
_SOURCE_NAMES = pa.array(SOURCES, pa.string())
_VIEW_INLINE = 12  # an Arrow binary view holds up to 12 bytes in itself
_VIEW_MAX_OFFSET = (1 << 31) - 1


@dataclass(slots=True)
class SegmentRecords:
    """The records of a segment (or a slice of one), column by column."""

    segment: str
    received_at_us: Int64Array
    source: list[str]
    topic: list[str]
    identity: list[str]
    payload: list[bytes]
    offset: Int64Array
    damage: TailDamage | None = None

    def __len__(self) -> int:
        return len(self.payload)

    def envelopes(self) -> list[Envelope]:
        """The records as ``Envelope`` objects (convenient, not fast)."""
        return [
            Envelope(int(ts), src, topic, ident, payload)  # type: ignore[arg-type]
            for ts, src, topic, ident, payload in zip(
                self.received_at_us.tolist(),
                self.source,
                self.topic,
                self.identity,
                self.payload,
                strict=True,
            )
        ]

    def to_arrow(self) -> pa.Table:
        """An Arrow table under ``ARROW_SCHEMA`` (one row per record)."""
        n = len(self)
        return pa.Table.from_arrays(
            [
                pa.array(self.received_at_us, type=pa.timestamp("us", tz="UTC")),
                pa.array(self.source, type=pa.string()),
                pa.array(self.topic, type=pa.string()),
                pa.array(self.identity, type=pa.string()),
                pa.array(self.payload, type=pa.large_binary()),
                pa.array([self.segment] * n, type=pa.string()),
                pa.array(self.offset, type=pa.int64()),
            ],
            schema=ARROW_SCHEMA,
        )


@dataclass(frozen=True, slots=True)
class SegmentTable:
    """The records of a segment (or a slice of one) as an Arrow table (``ARROW_SCHEMA``)."""

    segment: str
    table: pa.Table
    damage: TailDamage | None = None

    def __len__(self) -> int:
        return int(self.table.num_rows)


@dataclass(frozen=True, slots=True)
class Frames:
    """What ``scan_frames`` found: the valid records from a position, column by column
    (Arrow arrays, or numpy for the numbers), where the scan stopped, and why if damaged."""

    received_at_us: Int64Array
    source_code: npt.NDArray[np.uint8]
    topic: pa.StringArray
    identity: pa.StringArray
    payload: pa.LargeBinaryArray
    offset: Int64Array
    end: int
    damage: TailDamage | None

    def __len__(self) -> int:
        return len(self.offset)

    def table(self, segment: str) -> pa.Table:
        n = len(self)
        return pa.Table.from_arrays(
            [
                pa.array(self.received_at_us, type=pa.timestamp("us", tz="UTC")),
                _SOURCE_NAMES.take(pa.array(self.source_code)),
                self.topic,
                self.identity,
                self.payload,
                pa.repeat(pa.scalar(segment, pa.string()), n),
                pa.array(self.offset, type=pa.int64()),
            ],
            schema=ARROW_SCHEMA,
        )

    def records(self, segment: str, damage: TailDamage | None) -> SegmentRecords:
        return SegmentRecords(
            segment=segment,
            received_at_us=self.received_at_us,
            source=[SOURCES[c] for c in self.source_code.tolist()],
            topic=self.topic.to_pylist(),
            identity=self.identity.to_pylist(),
            payload=self.payload.to_pylist(),
            offset=self.offset,
            damage=damage,
        )


def closed_segments(root: Path) -> list[Path]:
    """The closed segments under ``root``, sorted by name (that is, by opening time)."""
    folder = Path(root) / "closed"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("*.seg") if p.is_file()), key=lambda p: p.name)


# --------------------------------------------------------------------------- scanning


def _walk(
    buf: bytes, pos: int, limit: int | None
) -> tuple[list[int], list[int], int, TailDamage | None]:
    """Frame starts and body lengths from ``pos`` until the end, the first frame whose
    lengths or checksum are wrong, or ``limit`` frames; the end position; the damage."""
    n = len(buf)
    starts: list[int] = []
    lengths: list[int] = []
    frame_head = FRAME_HEAD.unpack_from
    crc32 = zlib.crc32
    head = FRAME_HEADER_BYTES
    damage: TailDamage | None = None
    add_start = starts.append
    add_length = lengths.append
    last = -1 if limit is None else limit  # the frame count to stop at
    count = 0
    with memoryview(buf) as view:
        while pos < n and count != last:
            if n - pos < head:
                damage = TailDamage(pos, n - pos, "truncated", "frame header incomplete")
                break
            blen, nlen, crc = frame_head(buf, pos)
            if blen ^ nlen != MASK32 or blen < BODY_FIXED_BYTES or blen > MAX_BODY_BYTES:
                damage = TailDamage(pos, n - pos, "bad header", "frame length fields disagree")
                break
            body = pos + head
            stop = body + blen
            if stop > n:
                damage = TailDamage(
                    pos, n - pos, "truncated", f"frame body needs {blen} bytes, {n - body} left"
                )
                break
            if crc32(view[body:stop]) != crc:
                damage = TailDamage(pos, n - pos, "checksum", "frame body checksum mismatch")
                break
            add_start(pos)
            add_length(blen)
            count += 1
            pos = stop
    return starts, lengths, pos, damage


def _cut(
    data: pa.Buffer, arr: npt.NDArray[np.uint8], start: Int64Array, size: Int64Array
) -> pa.LargeBinaryArray:
    """``data[start[i] : start[i] + size[i]]`` for every i, as one Arrow array (a copy)."""
    n = len(start)
    if len(arr) > _VIEW_MAX_OFFSET:
        # Views address their buffer with 32-bit offsets: a file this large (only possible
        # with records near the 1 GiB limit) is cut value by value.
        ends = (start + size).tolist()
        values = [data[a:b].to_pybytes() for a, b in zip(start.tolist(), ends, strict=True)]
        return cast(pa.LargeBinaryArray, pa.array(values, pa.large_binary()))
    views = np.zeros((n, 4), dtype="<i4")
    views[:, 0] = size
    inline = size <= _VIEW_INLINE
    if inline.any():
        # Short values live in the view itself: their bytes, zero-padded, after the length.
        at = start[inline, None] + np.arange(_VIEW_INLINE)
        keep = np.arange(_VIEW_INLINE) < size[inline, None]
        small = np.where(keep, arr[np.minimum(at, len(arr) - 1)], 0).astype(np.uint8)
        views[inline, 1:] = small.view("<i4")
    long = ~inline
    if long.any():
        # Longer ones: a 4-byte prefix, the buffer (0) and the offset into it.
        first = arr[start[long, None] + np.arange(4)]
        views[long, 1] = first.view("<i4").ravel()
        views[long, 3] = start[long]
    viewed = pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views), data])
    return cast(pa.LargeBinaryArray, viewed.cast(pa.large_binary()))


def _first_not_utf8(values: pa.LargeBinaryArray) -> int | None:
    """The index of the first value that is not UTF-8, or None (a whole-array check first)."""
    try:
        values.cast(pa.large_string())
    except pa.ArrowInvalid:
        for i, value in enumerate(values.to_pylist()):
            try:
                value.decode()
            except UnicodeDecodeError:
                return i
    return None


def scan_frames(buf: bytes, pos: int, limit: int | None = None) -> Frames:
    """The valid records from ``pos`` (a frame start) until the end of ``buf``, the first
    bad frame, or ``limit`` records; a bad frame and everything after it is damage."""
    starts_list, lengths, end, damage = _walk(buf, pos, limit)
    starts = np.array(starts_list, dtype=np.int64)
    blen = np.array(lengths, dtype=np.int64)
    arr = np.frombuffer(buf, dtype=np.uint8)
    body = starts + FRAME_HEADER_BYTES
    fixed = arr[body[:, None] + _FIXED] if len(starts) else np.zeros((0, 14), np.uint8)
    received = np.ascontiguousarray(fixed[:, 0:8]).view("<i8").ravel().astype(np.int64)
    code = fixed[:, 8].copy()
    flags = fixed[:, 9]
    tlen = np.ascontiguousarray(fixed[:, 10:12]).view("<u2").ravel().astype(np.int64)
    ilen = np.ascontiguousarray(fixed[:, 12:14]).view("<u2").ravel().astype(np.int64)
    t0 = body + BODY_FIXED_BYTES
    i0 = t0 + tlen
    p0 = i0 + ilen
    stop = body + blen
    # A frame can be whole and still inconsistent inside; it ends the readable part.
    bad = (p0 > stop) | (code >= len(SOURCES)) | (flags != 0)
    keep = int(np.argmax(bad)) if bad.any() else len(starts)
    reason = "record fields inconsistent"
    data = pa.py_buffer(buf)
    topic = _cut(data, arr, t0[:keep], tlen[:keep])
    identity = _cut(data, arr, i0[:keep], ilen[:keep])
    for values, what in ((topic, "topic"), (identity, "identity")):
        first = _first_not_utf8(values)
        if first is not None and first < keep:
            keep, reason = first, f"{what} is not UTF-8"
    if keep < len(starts):
        at = int(starts[keep])
        damage, end = TailDamage(at, len(buf) - at, "bad header", reason), at
    return Frames(
        received_at_us=received[:keep],
        source_code=code[:keep],
        topic=cast(pa.StringArray, topic[:keep].cast(pa.string())),
        identity=cast(pa.StringArray, identity[:keep].cast(pa.string())),
        payload=_cut(data, arr, p0[:keep], (stop - p0)[:keep]),
        offset=starts[:keep],
        end=end,
        damage=damage,
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class SegmentBytes:
    """A segment's bytes and its file name, wherever they were read from (the lake's copy
    of a claimed segment, for a pipeline worker)."""

    name: str
    data: bytes


Segment = Path | SegmentBytes


def _load(segment: Segment) -> tuple[str, bytes]:
    if isinstance(segment, SegmentBytes):
        return segment.name, segment.data
    path = Path(segment)
    # Read whole (segments roll at 16 MiB): the columns are cut from these bytes.
    with path.open("rb") as handle:
        return path.name, handle.read()


_NO_FRAMES = scan_frames(b"", 0)


def read_segment(path: Segment) -> SegmentRecords:
    """Every complete record of a segment, and its damaged tail if any.

    Raises ``LandingError`` if the file is not a landing segment (bad magic) or has a
    format version this reader does not know; damage is reported, never raised.
    """
    name, buf = _load(path)
    damage = check_file_header(buf, name)
    if damage is not None:
        return _NO_FRAMES.records(name, damage)
    frames = scan_frames(buf, FILE_HEADER_BYTES)
    return frames.records(name, frames.damage)


def read_records_at(path: Segment, offsets: Sequence[int]) -> list[Envelope]:
    """The records whose frames start at ``offsets`` (as ``offset_bytes`` reports them), in
    that order. Each frame is checked like a sequential read; LandingError if one is not a
    whole, valid record. For the rare look-up of a record's raw bytes after its batch was
    read (the pipeline quarantines a row late and needs its payload again)."""
    if not offsets:
        return []
    out: list[Envelope] = []
    name, buf = _load(path)
    for offset in offsets:
        if offset < FILE_HEADER_BYTES or offset >= len(buf):
            raise LandingError(f"{name}: no record at offset {offset}")
        frames = scan_frames(buf, offset, 1)
        if not len(frames) or frames.offset[0] != offset:
            detail = frames.damage.detail if frames.damage else "no frame"
            raise LandingError(f"{name}: no valid record at offset {offset}: {detail}")
        out.append(
            Envelope(
                received_at_us=int(frames.received_at_us[0]),
                source=SOURCES[int(frames.source_code[0])],
                topic=frames.topic[0].as_py(),
                identity=frames.identity[0].as_py(),
                payload=frames.payload[0].as_py(),
            )
        )
    return out


def _iter_frames(
    name: str, buf: bytes, max_records: int
) -> Iterator[tuple[Frames, TailDamage | None]]:
    if max_records < 1:
        raise ValueError("max_records must be at least 1")
    damage = check_file_header(buf, name)
    if damage is not None:
        yield _NO_FRAMES, damage
        return
    size = len(buf)
    pos = FILE_HEADER_BYTES
    first = True
    while True:
        frames = scan_frames(buf, pos, max_records)
        pos = frames.end
        done = frames.damage is not None or pos >= size
        if len(frames) or (done and (first or frames.damage is not None)):
            yield frames, frames.damage
        first = False
        if done:
            return


def iter_segment_chunks(path: Segment, max_records: int) -> Iterator[SegmentRecords]:
    """A segment as consecutive slices of up to ``max_records`` records.

    Yields at least one slice; only the last may carry the damage.
    """
    name, buf = _load(path)
    for frames, damage in _iter_frames(name, buf, max_records):
        yield frames.records(name, damage)


def iter_segment_tables(path: Segment, max_records: int) -> Iterator[SegmentTable]:
    """``iter_segment_chunks`` as Arrow tables under ``ARROW_SCHEMA`` (what the pipeline
    reads: no Python object per record)."""
    name, buf = _load(path)
    for frames, damage in _iter_frames(name, buf, max_records):
        yield SegmentTable(name, frames.table(name), damage)
