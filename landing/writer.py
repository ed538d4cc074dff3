"""The landing log: append-only segment files of raw messages, as received.

Layout under a root (docs/LANDING.md describes the bytes)::

    open/<stamp>-<writer_id>-<counter>-<instance>.seg     being written by one live writer
    open/<writer_id>.lock                                 held (flock) by that live writer
    closed/<stamp>-<writer_id>-<counter>-<instance>.seg   complete; renamed here atomically

A name is unique forever: ``instance`` is 64 random bits drawn when a writer starts, so a
restart after the processor archived everything, or a second gateway with the same writer
id writing elsewhere into the same lake, never repeats a name the raw archive holds.

A segment is a file header followed by frames; each frame carries its length twice
(plain and complemented) and a CRC-32 of its body, so a reader keeps every complete
record before a torn or corrupt tail and reports the rest as damage. Nothing after a
bad frame is read: the reader never resynchronises, because a payload may itself
contain bytes that look like a valid frame.

Durability: a record is on disk once ``LandingWriter.sync()`` (or ``roll()`` /
``close()``) has returned after its ``append``. ``recover()`` closes what a crashed
writer left in ``open/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal

from durable.files import fsync_dir
from landing.format import (
    BODY_FIXED,
    FILE_HEADER_BYTES,
    FRAME_HEAD,
    FRAME_HEADER_BYTES,
    MASK32,
    MAX_BODY_BYTES,
    MAX_TEXT,
    MIB,
    SOURCE_CODE,
    SOURCES,
    Envelope,
    LandingError,
    RecordRef,
    TailDamage,
    check_file_header,
    file_header,
)
from landing.reader import scan_frames

__all__ = ["LandingWriter", "RecoveredSegment", "recover"]

_WRITER_ID = re.compile(r"[a-z0-9-]{1,32}")
# <stamp>-<writer_id>-<counter>-<instance>.seg; segments named before the instance part
# existed (<stamp>-<writer_id>-<counter>.seg) are still recognised, for recovery.
_SEGMENT_NAME = re.compile(
    r"(\d{8}T\d{6}\.\d{6}Z)-([a-z0-9-]{1,32})-(\d{6,})(?:-[0-9a-f]{16})?\.seg"
)
_INSTANCE_BYTES: Final = 8
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_STAMP_US: Final = 253402300799999999  # 9999-12-31T23:59:59.999999Z


@dataclass(frozen=True, slots=True)
class RecoveredSegment:
    """What ``recover()`` did with one segment found in ``open/``."""

    segment: str
    action: Literal["closed", "deleted", "skipped"]
    records: int
    kept_bytes: int
    dropped_bytes: int
    damage: TailDamage | None
    detail: str = ""


def _stamp(us: int) -> str:
    us = min(max(us, 0), _MAX_STAMP_US)
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y%m%dT%H%M%S.%fZ")


def _check_writer_id(writer_id: str) -> str:
    given: object = writer_id
    if not isinstance(given, str) or not _WRITER_ID.fullmatch(given):
        raise LandingError(f"writer id {writer_id!r} must match [a-z0-9-]{{1,32}}")
    return writer_id


def _parse_name(name: str) -> tuple[str, int] | None:
    """(writer_id, counter) of a segment file name, or None if it is not one."""
    match = _SEGMENT_NAME.fullmatch(name)
    return (match.group(2), int(match.group(3))) if match else None


# --------------------------------------------------------------------------- writing


def _encode(env: Envelope) -> tuple[bytes, bytes, int]:
    """(frame header + fixed body + topic + identity, payload, total frame size)."""
    given: object = env
    if not isinstance(given, Envelope):
        raise LandingError(f"expected an Envelope, got {type(given).__name__}")
    code = SOURCE_CODE.get(env.source)
    if code is None:
        raise LandingError(f"source {env.source!r} is not one of {', '.join(SOURCES)}")
    given = env.payload
    if not isinstance(given, bytes | bytearray):
        raise LandingError(f"payload must be bytes, got {type(given).__name__}")
    payload = env.payload
    try:
        topic = env.topic.encode()
        ident = env.identity.encode()
        if len(topic) > MAX_TEXT or len(ident) > MAX_TEXT:
            raise LandingError("topic and identity are limited to 65535 UTF-8 bytes each")
        fixed = BODY_FIXED.pack(env.received_at_us, code, 0, len(topic), len(ident))
    except (AttributeError, UnicodeEncodeError, struct.error) as exc:
        raise LandingError(f"envelope cannot be encoded: {exc}") from exc
    blen = len(fixed) + len(topic) + len(ident) + len(payload)
    if blen > MAX_BODY_BYTES:
        raise LandingError(f"record of {blen} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    head = fixed + topic + ident
    crc = zlib.crc32(payload, zlib.crc32(head))
    return FRAME_HEAD.pack(blen, blen ^ MASK32, crc) + head, payload, FRAME_HEADER_BYTES + blen


class LandingWriter:
    """Appends envelopes to segments under ``root``; thread-safe; one live writer per id.

    A segment opens on the first append after a roll and rolls (is synced, closed and
    renamed into ``closed/``) once it holds ``roll_bytes`` or more, or when a record
    arrives and the segment is ``roll_seconds`` old or older. Age is measured with
    ``clock`` (epoch seconds, default ``time.time``); with ``clock=None`` it is measured
    in reception time: the record's ``received_at_us`` minus the segment's first one
    (for replays and the simulator). Segment names carry the opening time (clock) or the
    first record's reception time (``clock=None``), the writer id, a counter (continuing
    the highest found under ``root`` for this id) and this writer's random instance id:
    names sort by time, then writer, then counter, and are never reused.

    With ``fsync=False``, ``sync()`` only flushes to the operating system (survives a
    process crash, not a power loss). An I/O error breaks the writer: every later call
    raises ``LandingError``, and its open segment is left for ``recover()``.
    """

    def __init__(
        self,
        root: Path,
        writer_id: str,
        *,
        roll_bytes: int = 64 * MIB,
        roll_seconds: float | None = 60.0,
        fsync: bool = True,
        clock: Callable[[], float] | None = time.time,
    ) -> None:
        self._writer_id = _check_writer_id(writer_id)
        if roll_bytes <= FILE_HEADER_BYTES:
            raise LandingError(f"roll_bytes must exceed {FILE_HEADER_BYTES}")
        if roll_seconds is not None and not roll_seconds > 0:
            raise LandingError("roll_seconds must be positive (or None)")
        self._root = Path(root)
        self._open_dir = self._root / "open"
        self._closed_dir = self._root / "closed"
        self._roll_bytes = roll_bytes
        self._roll_seconds = roll_seconds
        self._fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._name: str | None = None
        self._size = 0
        self._opened_at = 0.0  # clock seconds, or first record's received_at_us
        self._generation = 0
        self._durable: tuple[int, int] = (0, 0)
        self._broken: BaseException | None = None
        self._closed = False
        self._open_dir.mkdir(parents=True, exist_ok=True)
        self._closed_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _try_lock(self._open_dir, writer_id)
        if lock_fd is None:
            raise LandingError(f"another live writer holds writer id {writer_id!r} in {root}")
        self._lock_fd = lock_fd
        self._instance = secrets.token_hex(_INSTANCE_BYTES)
        try:
            self.recovered = [
                _recover_file(path, self._closed_dir)
                for path in _open_segments(self._open_dir, writer_id)
            ]
            self._counter = 1 + max(
                (
                    parsed[1]
                    for folder in (self._open_dir, self._closed_dir)
                    for p in folder.glob("*.seg")
                    if (parsed := _parse_name(p.name)) and parsed[0] == writer_id
                ),
                default=0,
            )
        except BaseException:
            os.close(self._lock_fd)
            raise

    @property
    def root(self) -> Path:
        return self._root

    @property
    def writer_id(self) -> str:
        return self._writer_id

    @property
    def segment(self) -> str | None:
        """The name of the segment being written, if one is open."""
        return self._name

    def __enter__(self) -> LandingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def append(self, envelope: Envelope) -> RecordRef:
        """Append one record; durable only after a later ``sync()`` returns."""
        frame = _encode(envelope)
        with self._lock:
            return self._append_locked(envelope.received_at_us, frame)

    def append_many(self, envelopes: Sequence[Envelope]) -> list[RecordRef]:
        """Append records in order under one lock acquisition (rolls may fall between)."""
        frames = [_encode(env) for env in envelopes]
        with self._lock:
            return [
                self._append_locked(env.received_at_us, frame)
                for env, frame in zip(envelopes, frames, strict=True)
            ]

    def sync(self) -> None:
        """Flush and fsync the open segment: every record appended before the call is on disk.

        Concurrent callers share one fsync where they can (group commit); appends are
        not blocked while the fsync runs.
        """
        with self._lock:
            self._usable()
            if self._file is None:
                return
            target = (self._generation, self._size)
            if self._durable >= target:
                return
            try:
                self._file.flush()
                if not self._fsync:
                    self._durable = target
                    return
                fd = os.dup(self._file.fileno())
            except OSError as exc:
                raise self._fail(exc) from exc
        try:
            with self._sync_lock:
                if self._durable >= target:
                    return
                try:
                    os.fsync(fd)
                except OSError as exc:
                    with self._lock:
                        raise self._fail(exc) from exc
                with self._lock:
                    self._durable = max(self._durable, target)
        finally:
            os.close(fd)

    def roll(self) -> str | None:
        """Sync, close and move the open segment to ``closed/``; its name, or None."""
        with self._lock:
            self._usable()
            return self._roll_locked()

    def maybe_roll(self) -> str | None:
        """Roll if the open segment is ``roll_seconds`` old by the clock (for an idle timer)."""
        with self._lock:
            self._usable()
            if self._file is None or self._clock is None or self._roll_seconds is None:
                return None
            if self._clock() - self._opened_at >= self._roll_seconds:
                return self._roll_locked()
            return None

    def close(self) -> None:
        """Roll the open segment and release the writer id. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._broken is None:
                    self._roll_locked()
            finally:
                self._closed = True
                if self._file is not None:  # broken: leave the segment for recover()
                    with contextlib.suppress(OSError):
                        self._file.close()
                    self._file = None
                os.close(self._lock_fd)

    # -- internals (called with self._lock held)

    def _usable(self) -> None:
        if self._closed:
            raise LandingError(f"landing writer {self._writer_id!r} is closed")
        if self._broken is not None:
            raise LandingError(
                f"landing writer {self._writer_id!r} failed earlier ({self._broken}); "
                "open a new writer (it recovers the segment)"
            )

    def _fail(self, exc: BaseException) -> LandingError:
        self._broken = exc
        return LandingError(f"landing writer {self._writer_id!r}: I/O failed: {exc}")

    def _append_locked(self, received_at_us: int, frame: tuple[bytes, bytes, int]) -> RecordRef:
        self._usable()
        if self._file is not None and self._roll_seconds is not None:
            if self._clock is None:
                age = (received_at_us - self._opened_at) / 1e6
            else:
                age = self._clock() - self._opened_at
            if age >= self._roll_seconds:
                self._roll_locked()
        if self._file is None:
            self._open_segment(received_at_us)
        assert self._file is not None
        assert self._name is not None
        head, payload, size = frame
        offset = self._size
        try:
            self._file.write(head)
            self._file.write(payload)
        except OSError as exc:
            raise self._fail(exc) from exc
        self._size += size
        ref = RecordRef(self._name, offset)
        if self._size >= self._roll_bytes:
            self._roll_locked()
        return ref

    def _open_segment(self, received_at_us: int) -> None:
        if self._clock is None:
            self._opened_at = float(received_at_us)
            stamp = _stamp(received_at_us)
        else:
            self._opened_at = self._clock()
            stamp = _stamp(round(self._opened_at * 1_000_000))
        try:
            while True:
                name = f"{stamp}-{self._writer_id}-{self._counter:06d}-{self._instance}.seg"
                self._counter += 1
                if (self._closed_dir / name).exists():
                    continue
                try:
                    handle = (self._open_dir / name).open("xb", buffering=256 * 1024)
                except FileExistsError:
                    continue
                break
            self._file, self._name = handle, name
            self._generation += 1
            handle.write(file_header())
            self._size = FILE_HEADER_BYTES
            if self._fsync:
                handle.flush()
                os.fsync(handle.fileno())
                fsync_dir(self._open_dir)
        except OSError as exc:
            raise self._fail(exc) from exc

    def _roll_locked(self) -> str | None:
        handle, name = self._file, self._name
        if handle is None or name is None:
            return None
        try:
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
            handle.close()
            self._file = self._name = None
            os.rename(self._open_dir / name, self._closed_dir / name)
            if self._fsync:
                fsync_dir(self._closed_dir)
                fsync_dir(self._open_dir)
        except OSError as exc:
            raise self._fail(exc) from exc
        self._durable = (self._generation, self._size)
        return name


# --------------------------------------------------------------------------- recovery


def _try_lock(open_dir: Path, writer_id: str) -> int | None:
    """An fd holding the writer id's flock, or None if a live writer holds it."""
    fd = os.open(open_dir / f"{writer_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_segments(open_dir: Path, writer_id: str | None = None) -> list[Path]:
    found = []
    for path in sorted(open_dir.glob("*.seg"), key=lambda p: p.name):
        parsed = _parse_name(path.name)
        if writer_id is None or (parsed is not None and parsed[0] == writer_id):
            found.append(path)
    return found


def _recover_file(path: Path, closed_dir: Path) -> RecoveredSegment:
    """Truncate an open segment to its last complete record and close it (or delete it)."""
    name = path.name
    with path.open("rb") as handle:
        buf = handle.read()
    size = len(buf)
    try:
        damage = check_file_header(buf, name)
    except LandingError as exc:
        return RecoveredSegment(name, "skipped", 0, 0, size, None, str(exc))
    records, end = 0, 0
    if damage is None:
        frames = scan_frames(buf, FILE_HEADER_BYTES)
        damage, records, end = frames.damage, len(frames), frames.end
    del buf
    if records == 0:
        path.unlink()
        fsync_dir(path.parent)
        return RecoveredSegment(name, "deleted", 0, 0, size, damage)
    target = closed_dir / name
    if target.exists():
        return RecoveredSegment(
            name, "skipped", records, end, size - end, damage, "closed/ already has this name"
        )
    with path.open("r+b") as handle:
        if end < size:
            handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(path, target)
    fsync_dir(closed_dir)
    fsync_dir(path.parent)
    return RecoveredSegment(name, "closed", records, end, size - end, damage)


def recover(root: Path) -> list[RecoveredSegment]:
    """Close every segment a dead writer left in ``root/open/``; idempotent.

    Each is truncated to its last complete record, fsynced and renamed into ``closed/``;
    one without records is deleted. Segments of a live writer (its lock is held) and
    files that are not segments are skipped and reported.
    """
    root = Path(root)
    open_dir, closed_dir = root / "open", root / "closed"
    if not open_dir.is_dir():
        return []
    closed_dir.mkdir(parents=True, exist_ok=True)
    by_writer: dict[str | None, list[Path]] = {}
    for path in _open_segments(open_dir):
        parsed = _parse_name(path.name)
        by_writer.setdefault(parsed[0] if parsed else None, []).append(path)
    report: list[RecoveredSegment] = []
    for writer_id, paths in by_writer.items():
        if writer_id is None:
            report.extend(
                RecoveredSegment(p.name, "skipped", 0, 0, 0, None, "not a segment name")
                for p in paths
            )
            continue
        fd = _try_lock(open_dir, writer_id)
        if fd is None:
            report.extend(
                RecoveredSegment(p.name, "skipped", 0, 0, 0, None, "its writer is live")
                for p in paths
            )
            continue
        try:
            report.extend(_recover_file(p, closed_dir) for p in paths)
        finally:
            os.close(fd)
    return sorted(report, key=lambda r: r.segment)
