"""The reference files energylake ships for its reports (``reporting/reference/<dataset>.csv``:
emission factors, CAQM rules), loaded with ``energylake reference load-platform DATASET``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["shipped_file"]


def shipped_file(dataset: str) -> Path | None:
    """The shipped CSV of a platform-wide dataset, if energylake ships one."""
    path = Path(str(files("reporting") / "reference" / f"{dataset}.csv"))
    return path if path.is_file() else None
