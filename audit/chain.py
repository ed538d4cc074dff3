"""The hash chain of an audit folder: one chain over its day files, appended by any number of
processes, with anchors kept apart.

Format (docs/AUDIT.md). A folder (``<data_dir>/audit/gateway``, ``.../pipeline``,
``.../access``) holds ``YYYY-MM-DD.jsonl`` files, one record per line. Every line is the
canonical JSON of its record (orjson, keys sorted, no spaces) and carries ``seq`` (1, 2, ...
across the folder's files) and ``prev``: the hex SHA-256 of the previous line's bytes (without
its newline; ``GENESIS`` for seq 1). Editing a line breaks the next line's ``prev``; deleting
or reordering lines breaks ``seq``. Cutting the tail leaves a shorter, valid chain, so the
head (seq, SHA-256 of that line, time) is copied now and then to an anchor file kept apart
(``anchor_path``): every ``anchor_every_records`` records (seq a multiple of it), when a
writer has not anchored for ``anchor_interval_s``, at a day roll and at close.

Appends from several processes are serialised by ``flock`` on ``<folder>/.lock``. The lock
file also holds a hint of the head (its file, size and seq), rewritten after each append, so
a writer re-reads the head from disk only when another writer (or a crash) changed it. A
line torn by a crash mid-write is never repaired silently: the next writer closes it with a
newline, keeps its bytes and appends a record of its own (``audit_torn_tail``: how many
bytes, their SHA-256) that chains from the last whole line; ``audit.verify`` reports it as a
crash, not as tampering.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from durable.files import fsync_dir

__all__ = [
    "ANCHOR_EVERY_RECORDS",
    "ANCHOR_INTERVAL_S",
    "GENESIS",
    "TORN_EVENT",
    "ChainWriter",
    "anchor_path",
    "day_files",
    "encode",
    "last_line",
    "line_hash",
    "stamp",
]

GENESIS = "0" * 64  # the ``prev`` of seq 1
TORN_EVENT = "audit_torn_tail"  # the record a writer leaves after finding a torn line
ANCHOR_EVERY_RECORDS = 100
ANCHOR_INTERVAL_S = 300.0
_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.jsonl$")
_LOCK_NAME = ".lock"
_TAIL_CHUNK_BYTES = 64 * 1024


def encode(record: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a record (what is hashed and written, without the newline)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def stamp(moment: datetime) -> str:
    """A record's ``ts``: UTC, microseconds, ``Z``."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def day_files(folder: Path) -> list[Path]:
    """The folder's day files, oldest first (the chain's order)."""
    try:
        names = [e.name for e in os.scandir(folder) if _DAY_FILE.match(e.name)]
    except FileNotFoundError:
        return []
    return [folder / name for name in sorted(names)]


def anchor_path(folder: Path, anchor_dir: Path | None = None) -> Path:
    """Where a folder's anchors go: ``<anchor_dir>/<folder name>.anchors.jsonl``, by default
    under ``<folder>/anchors/`` (set ``audit_anchor_dir`` to another mount or a WORM store:
    whoever can rewrite the log should not be able to rewrite its anchors)."""
    base = anchor_dir if anchor_dir is not None else folder / "anchors"
    return base / f"{folder.name}.anchors.jsonl"


@dataclass(frozen=True, slots=True)
class _Head:
    path: Path | None  # the file holding the last line (None: an empty chain)
    size_bytes: int  # that file's size after the last line
    seq: int
    sha256: str
    hint: bytes  # the lock file's hint this head agrees with


def _tail(path: Path) -> tuple[bytes | None, bytes, int]:
    """(the last whole line or None, the torn bytes after the last newline, file size)."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        buf = b""
        pos = size
        while pos > 0:
            step = min(_TAIL_CHUNK_BYTES, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            last = buf.rfind(b"\n")
            if last == -1:
                continue
            before = buf.rfind(b"\n", 0, last)
            if before != -1 or pos == 0:
                return buf[before + 1 : last], buf[last + 1 :], size
        return None, buf, size


def last_line(path: Path) -> bytes | None:
    """The last whole line of a file (without its newline), or None."""
    return _tail(path)[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ChainWriter:
    """Appends records to one folder's chain. Thread-safe and safe across processes; raises
    ``OSError`` (I/O) or ``TypeError`` (a value that is not JSON): the caller decides whether
    that is fatal (``audit.log.AuditLog``)."""

    def __init__(
        self,
        folder: Path,
        *,
        component: str,
        anchor_dir: Path | None = None,
        fsync: bool = False,
        anchor_every_records: int = ANCHOR_EVERY_RECORDS,
        anchor_interval_s: float = ANCHOR_INTERVAL_S,
    ) -> None:
        self.folder = Path(folder)
        self.anchors = anchor_path(self.folder, anchor_dir)
        self._component = component
        self._fsync = fsync
        self._every = max(1, anchor_every_records)
        self._interval_s = anchor_interval_s
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._head: _Head | None = None
        self._anchored_seq = 0  # the last head this writer anchored
        self._last_anchor = time.monotonic()

    # -- public ---------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> tuple[int, str]:
        """Chain ``record`` (its ``ts`` names the day file) and append it; (seq, SHA-256)."""
        with self._lock:
            self._acquire()
            try:
                return self._append(record)
            except BaseException:
                self._forget()
                raise
            finally:
                self._release()

    def anchor_if_due(self, *, force: bool = False) -> None:
        """Anchor the head this writer last wrote when the interval has passed (or now)."""
        with self._lock:
            head = self._head
            if head is None or head.seq <= self._anchored_seq:
                return
            if not force and time.monotonic() - self._last_anchor < self._interval_s:
                return
            self._acquire()
            try:
                self._anchor(head)
            finally:
                self._release()

    def close(self) -> None:
        """Anchor what this writer wrote since its last anchor, then close the files."""
        try:
            self.anchor_if_due(force=True)
        finally:
            with self._lock:
                self._forget()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    # -- under the locks ------------------------------------------------------------------
    def _acquire(self) -> None:
        if self._lock_fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def _release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _forget(self) -> None:
        """Drop what is cached (after an error the head is re-read from disk)."""
        self._head = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._fd_path = None, None

    def _append(self, record: Mapping[str, Any]) -> tuple[int, str]:
        head = self._current_head()
        name = f"{str(record['ts'])[:10]}.jsonl"
        same = head.path is not None and head.path.name >= name
        # never behind the newest file: the files stay in the chain's order
        target = head.path if same and head.path is not None else self.folder / name
        if not same and head.path is not None and head.seq > self._anchored_seq:
            self._anchor(head)  # a day roll: the old day's head is anchored
        seq = head.seq + 1
        line = encode({**record, "seq": seq, "prev": head.sha256})
        fd = self._open(target)
        _write_all(fd, line + b"\n")
        if self._fsync:
            os.fsync(fd)
        size = head.size_bytes + len(line) + 1 if same else os.fstat(fd).st_size
        self._head = self._new_head(target, size, seq, line_hash(line))
        if seq % self._every == 0 or time.monotonic() - self._last_anchor >= self._interval_s:
            self._anchor(self._head)
        return seq, self._head.sha256

    def _new_head(self, path: Path, size: int, seq: int, sha256: str) -> _Head:
        """Record the head in the lock file's hint and in this writer's cache."""
        assert self._lock_fd is not None
        hint = f"{path.name} {size:020d} {seq:020d}\n".encode()
        os.pwrite(self._lock_fd, hint, 0)
        return _Head(path, size, seq, sha256, hint)

    def _current_head(self) -> _Head:
        assert self._lock_fd is not None
        hint = os.pread(self._lock_fd, 128, 0)
        head = self._head
        if (
            head is not None
            and head.hint == hint
            and (head.path is None or self._size(head.path) == head.size_bytes)
        ):
            return head
        head = self._read_head(hint)
        self._head = head
        return head

    def _size(self, path: Path) -> int:
        if self._fd is not None and self._fd_path is path:
            return os.fstat(self._fd).st_size  # the open file: no path lookup
        return os.stat(path).st_size

    def _read_head(self, hint: bytes) -> _Head:
        """The head as the files say, after recording a torn last line if there is one."""
        files = day_files(self.folder)
        torn_in: tuple[Path, bytes, int] | None = None
        for i, path in enumerate(reversed(files)):
            line, torn, size = _tail(path)
            if i == 0 and torn:
                torn_in = (path, torn, size)
            if line is None:
                continue
            try:
                seq = int(orjson.loads(line)["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                seq = 0  # not a record: `audit verify` names it; the chain goes on from it
            head = _Head(path, size, seq, line_hash(line), hint)
            break
        else:
            head = _Head(None, 0, 0, GENESIS, hint)
        if torn_in is None:
            return head
        return self._record_torn(head, *torn_in)

    def _record_torn(self, head: _Head, path: Path, torn: bytes, size: int) -> _Head:
        try:
            whole = orjson.loads(torn)
        except orjson.JSONDecodeError:
            whole = None
        if (
            isinstance(whole, dict)
            and whole.get("seq") == head.seq + 1
            and whole.get("prev") == head.sha256
            and encode(whole) == torn
        ):  # the crash cut only the newline: the record is whole, the newline completes it
            fd = self._open(path)
            _write_all(fd, b"\n")
            if self._fsync:
                os.fsync(fd)
            return self._new_head(path, size + 1, head.seq + 1, line_hash(torn))
        now = datetime.now(UTC)
        record = {
            "ts": stamp(now),
            "component": self._component,
            "event": TORN_EVENT,
            "detail": (
                f"the last line of {path.name} was cut by a crash mid-write ({len(torn)} "
                "bytes); kept as it was, closed with a newline, not part of the chain"
            ),
            "file": path.name,
            "torn_bytes": len(torn),
            "torn_sha256": line_hash(torn),
            "seq": head.seq + 1,
            "prev": head.sha256,
        }
        line = encode(record)
        fd = self._open(path)
        _write_all(fd, b"\n" + line + b"\n")
        if self._fsync:
            os.fsync(fd)
        return self._new_head(path, size + len(line) + 2, head.seq + 1, line_hash(line))

    def _open(self, path: Path) -> int:
        if self._fd is None or (self._fd_path is not path and self._fd_path != path):
            if self._fd is not None:
                os.close(self._fd)
                self._fd, self._fd_path = None, None
            created = not path.exists()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fd_path = path
            if created and self._fsync:
                fsync_dir(self.folder)
        return self._fd

    def _anchor(self, head: _Head) -> None:
        """Copy the head to the anchor file (the log first made durable up to it)."""
        if head.path is None:
            return
        if self._fd is not None and self._fd_path == head.path:
            os.fsync(self._fd)
        else:
            fd = os.open(head.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        line = encode(
            {
                "file": head.path.name,
                "seq": head.seq,
                "sha256": head.sha256,
                "ts": stamp(datetime.now(UTC)),
            }
        )
        self.anchors.parent.mkdir(parents=True, exist_ok=True)
        created = not self.anchors.exists()
        fd = os.open(self.anchors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.anchors.parent)
        self._anchored_seq = head.seq
        self._last_anchor = time.monotonic()
