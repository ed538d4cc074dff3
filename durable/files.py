"""Replacing a file so that a reader, or a crash, sees the old content or the new, never a
part of it; and the folder fsync that makes a rename or a new name survive a power loss.

The steps of :func:`atomic_write` / :func:`atomic_file`: a temp file in the target's folder
(a hidden name carrying :data:`TMP_MARK`, so listings can skip it), the data, ``fsync`` of
the file, ``os.replace`` over the target, ``fsync`` of the folder. On any error the temp
file is removed and the target is untouched. ``mode`` sets the file's permission bits
exactly (``0o600`` for secrets and books); without it the process's umask decides, as for
``open``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TMP_MARK",
    "atomic_file",
    "atomic_write",
    "fsync_dir",
    "install",
    "is_temp",
    "temp_sibling",
    "written_temp",
]

TMP_MARK = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """fsync a folder: the names created, renamed or removed in it are on disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` for a file that will replace it."""
    return path.parent / f".{path.name}{TMP_MARK}{uuid.uuid4().hex}"


def is_temp(name: str) -> bool:
    """Whether a file name is one of :func:`temp_sibling`'s (a write in progress or left
    by a crash)."""
    return name.startswith(".") and TMP_MARK in name


def install(tmp: Path, path: Path) -> None:
    """Make a finished temp file the content of ``path``: fsync it, rename it over
    ``path``, fsync the folder. ``tmp`` must be in ``path``'s folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _create(tmp: Path, mode: int | None) -> BinaryIO:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    if mode is not None:
        os.fchmod(fd, mode)  # exactly, whatever the umask
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to fill that becomes ``path`` when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with _create(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write(
    path: Path, data: bytes | bytearray | memoryview, *, mode: int | None = None
) -> None:
    """Replace ``path``'s content with ``data`` atomically and durably."""
    with atomic_file(path, mode=mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def written_temp(
    path: Path, data: bytes | bytearray | memoryview, *, mode: int | None = None
) -> Iterator[Path]:
    """A fsync'd temp file next to ``path`` holding ``data``, removed when the block ends
    (for a caller that links it into place: create-if-absent; ``mode`` as for
    :func:`atomic_file`). The caller fsyncs the folder after its link."""
    tmp = temp_sibling(path)
    try:
        with _create(tmp, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
