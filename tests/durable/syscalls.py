"""Run a snippet of Python under ``strace`` and return its fsync and rename calls, in order.

This is how the tests see that a folder is fsynced: an os-level observable, the system calls
the process makes, without patching ``os.fsync`` in the code under test. A machine without
strace fails these tests (it is installed with apt-get: ``strace``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["Call", "syscalls"]

_LINE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_FD_PATH = re.compile(r"^\d+<(.*)>$")

_FAMILY = {"renameat": "rename", "renameat2": "rename", "linkat": "link"}
Call = tuple[str, tuple[str, ...]]


def _args(call: str, raw: str) -> tuple[str, ...]:
    if call in ("fsync", "fdatasync"):
        match = _FD_PATH.match(raw.strip())
        return (match.group(1) if match else raw.strip(),)
    return tuple(re.findall(r'"([^"]*)"', raw))


def syscalls(code: str, workdir: Path, timeout_s: float = 60.0) -> list[Call]:
    """The successful fsync/rename/link calls of ``python -c code`` (paths resolved with -y)."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: apt-get install strace"
    out = workdir / "strace.out"
    subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
            "-o",
            str(out),
            sys.executable,
            "-c",
            code,
        ],
        check=True,
        timeout=timeout_s,
        cwd=workdir,
    )
    calls: list[Call] = []
    for line in out.read_text().splitlines():
        match = _LINE.match(line)
        if match and match.group(3) == "0":
            name = match.group(1)
            calls.append(
                (
                    name.rstrip("at2") if name.startswith(("rename", "link")) else name,
                    _args(name, match.group(2)),
                )
            )
    return calls
