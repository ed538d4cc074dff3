"""The hash chain under every audit log: append-only, tamper-evident, shared by processes.

One chain per audit folder (``audit/gateway``, ``audit/pipeline``, ``audit/access``), over
its daily files ``YYYY-MM-DD.jsonl`` in name order. Every line is one JSON record that
carries ``seq`` (1, 2, ... along the chain) and ``prev``: the SHA-256 of the previous
line's exact bytes (``GENESIS`` for the first). Editing a line breaks the next line's
``prev``; deleting or reordering lines breaks ``seq``; cutting the tail is caught by an
*anchor*: every ``anchor_every`` records, and when a writer closes, the head (seq, hash,
file) is appended to ``anchors/anchors.jsonl`` beside the log, or to ``anchor_dir`` (set
it to another mount or a write-once store: an anchor kept beside the log can be cut with
it). ``audit.verify`` checks all of it.

Writers in several processes append to one folder: each append takes an exclusive
``flock`` on ``.lock``, reads the head when the file grew since its last look, writes
one line with one ``write()``, and (``durable``) fsyncs before it returns. A torn last
line (a crash mid-write) is never repaired silently: the next writer ends it with a
newline and appends an ``audit_torn_tail`` record chained to the last whole line, which
``verify`` reports as a crash, not as tampering.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from durable.files import fsync_dir

__all__ = [
    "ANCHORS_FILE",
    "GENESIS",
    "ChainWriter",
    "Head",
    "anchors_path",
    "day_files",
    "line_hash",
]

GENESIS = "0" * 64
ANCHORS_FILE = "anchors.jsonl"
_LOCK = ".lock"
_TAIL_BYTES = 1 << 16  # a record is far shorter; the last line is found in this much


def line_hash(line: bytes) -> str:
    """The SHA-256 of a line's bytes (without its newline): what the next ``prev`` holds."""
    return hashlib.sha256(line).hexdigest()


def day_files(folder: Path) -> list[Path]:
    """The chain's files, in order."""
    return sorted(p for p in folder.glob("*.jsonl") if p.is_file())


def anchors_path(folder: Path, anchor_dir: Path | None = None) -> Path:
    """Where the anchors of the chain in ``folder`` are kept."""
    if anchor_dir is None:
        return folder / "anchors" / ANCHORS_FILE
    return anchor_dir / f"{folder.name}-{ANCHORS_FILE}"


@dataclass(frozen=True, slots=True)
class Head:
    """The chain's last whole record: its seq, the hash of its line, and where it is."""

    seq: int = 0
    hash: str = GENESIS
    file: str = ""
    size: int = 0  # the file's size when this head was read


def _last_line(path: Path) -> tuple[bytes | None, bytes]:
    """The last whole line of ``path`` and any torn bytes after it."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = max(0, size - _TAIL_BYTES)
        handle.seek(start)
        tail = handle.read()
        while start > 0 and tail.count(b"\n") < 2:  # a line longer than the window
            start = max(0, start - _TAIL_BYTES)
            handle.seek(start)
            tail = handle.read()
    end = tail.rfind(b"\n")
    if end < 0:
        return None, tail
    torn = tail[end + 1 :]
    begin = tail.rfind(b"\n", 0, end) + 1
    if begin == 0 and start > 0:  # pragma: no cover - the loop above keeps two newlines
        return None, torn
    return tail[begin:end], torn


class ChainWriter:
    """Appends records to the chain in ``folder`` (thread safety: the caller's lock)."""

    def __init__(
        self,
        folder: Path,
        component: str,
        *,
        durable: bool,
        anchor_every: int = 1000,
        anchor_dir: Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.component = component
        self.durable = durable
        self.anchor_every = anchor_every
        self.anchor_dir = anchor_dir
        self._head: Head | None = None
        self._anchored = 0  # the seq of this writer's last anchor

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def append(self, now: datetime, fields: dict[str, Any]) -> Head:
        """Write one record (``seq`` and ``prev`` added) and return the new head. OSError
        when it could not be written (with ``durable``: made durable)."""
        with self._locked():
            path = self.folder / f"{now.astimezone(UTC):%Y-%m-%d}.jsonl"
            head = self._current(path)
            head = self._write(path, head, fields)
            if self.anchor_every and head.seq - self._anchored >= self.anchor_every:
                self._anchor(head, now)
            return head

    def anchor(self, now: datetime) -> Head | None:
        """Record the current head as an anchor (at close, or on a timer); None: empty."""
        with self._locked():
            files = day_files(self.folder)
            if not files:
                return None
            head = self._current(files[-1])
            if head.seq == 0 or head.seq == self._anchored:
                return head
            self._anchor(head, now)
            return head

    # -- under the lock ---------------------------------------------------------------------

    def _current(self, path: Path) -> Head:
        """The head, re-read only when the newest file changed since this writer's look."""
        files = day_files(self.folder)
        newest = files[-1] if files else None
        cached = self._head
        if (
            cached is not None
            and newest is not None
            and cached.file == newest.name
            and newest.stat().st_size == cached.size
        ):
            return cached
        head = Head()
        for candidate in reversed(files):
            line, torn = _last_line(candidate)
            if torn:
                head = self._mend(candidate, line, torn)
                break
            if line is not None:
                record = orjson.loads(line)
                head = Head(
                    int(record.get("seq", 0)),
                    line_hash(line),
                    candidate.name,
                    candidate.stat().st_size,
                )
                break
        self._head = head
        return head

    def _mend(self, path: Path, line: bytes | None, torn: bytes) -> Head:
        """A torn last line: end it, and say so in a record chained to the last whole one."""
        record = orjson.loads(line) if line is not None else {}
        whole = Head(int(record.get("seq", 0)), line_hash(line) if line is not None else GENESIS)
        if line is None and path != day_files(self.folder)[0]:
            earlier = [p for p in day_files(self.folder) if p.name < path.name]
            for candidate in reversed(earlier):
                last, _ = _last_line(candidate)
                if last is not None:
                    whole = Head(int(orjson.loads(last).get("seq", 0)), line_hash(last))
                    break
        with path.open("ab") as handle:
            handle.write(b"\n")
        now = datetime.now(UTC)
        return self._write(
            path,
            whole,
            {
                "ts": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "component": self.component,
                "event": "audit_torn_tail",
                "detail": "the line above was torn by a crash while it was written; "
                "it is kept as it was and is not part of the chain",
                "torn_bytes": len(torn),
                "torn_sha256": hashlib.sha256(torn).hexdigest(),
            },
        )

    def _write(self, path: Path, head: Head, fields: dict[str, Any]) -> Head:
        record = {**fields, "seq": head.seq + 1, "prev": head.hash}
        line = orjson.dumps(record)
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
            if self.durable:
                os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if new and self.durable:
            fsync_dir(self.folder)
        self._head = Head(head.seq + 1, line_hash(line), path.name, size)
        return self._head

    def _anchor(self, head: Head, now: datetime) -> None:
        target = anchors_path(self.folder, self.anchor_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps(
            {
                "ts": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "component": self.component,
                "chain": str(self.folder.name),
                "seq": head.seq,
                "hash": head.hash,
                "file": head.file,
            }
        )
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._anchored = head.seq
