"""The one atomic write: whole or nothing for readers and crashes, exact modes, and the
fsyncs (file, then folder) seen in the system calls of a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from durable.files import atomic_file, atomic_write, is_temp, temp_sibling


def test_a_reader_never_sees_a_part_of_a_write(tmp_path: Path) -> None:
    target = tmp_path / "book.json"
    small, large = b"a" * 10, b"b" * (4 << 20)  # a large write takes many write() calls
    atomic_write(target, small)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            assert data in (small, large), f"a read of {len(data)} bytes: a part of a write"
            seen.add(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            atomic_write(target, large if i % 2 == 0 else small)
    finally:
        stop.set()
        reader.join()
    assert seen == {len(small), len(large)}  # the reader did see both contents
    assert [p.name for p in tmp_path.iterdir()] == ["book.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def fail() -> None:
        with atomic_file(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        fail()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_mode_is_exact_and_without_it_the_umask_decides(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "secret", b"x", mode=0o600)
        atomic_write(tmp_path / "open", b"x")
        os.umask(0o077)
        atomic_write(tmp_path / "wide", b"x", mode=0o644)  # exact even under a strict umask
    finally:
        os.umask(old)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "open").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "wide").stat().st_mode & 0o777 == 0o644


def test_temp_names_are_hidden_and_recognised(tmp_path: Path) -> None:
    tmp = temp_sibling(tmp_path / "part-0.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".part-0.parquet")
    assert is_temp(tmp.name)
    assert not is_temp("part-0.parquet")


def test_the_file_then_its_folder_are_fsynced_before_the_write_returns(tmp_path: Path) -> None:
    """strace of a real process: fsync(temp file), rename over the target, fsync(folder)."""
    target = tmp_path / "identity.json"
    code = (
        "import sys; from pathlib import Path; from durable.files import atomic_write; "
        "atomic_write(Path(sys.argv[1]), b'{}', mode=0o600)"
    )
    trace = tmp_path.parent / f"{tmp_path.name}.strace"
    subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=fsync,rename,renameat,renameat2",
         "-o", str(trace), sys.executable, "-c", code, str(target)],
        check=True,
        timeout=60,
    )  # fmt: skip
    calls = [
        line.split(None, 1)[1]  # strace pads the pid to 5 columns: "4321  fsync(..."
        for line in trace.read_text().splitlines()
        if str(tmp_path) in line and ("fsync(" in line or "rename" in line)
    ]
    kinds = [c.split("(", 1)[0] for c in calls]
    assert kinds == ["fsync", kinds[1], "fsync"], calls
    assert kinds[1].startswith("rename")
    assert ".identity.json.tmp-" in calls[0]  # the temp file's data first
    assert f"<{tmp_path}>" in calls[2]  # then the folder that holds the new name
    assert target.read_bytes() == b"{}"
