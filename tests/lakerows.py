"""Rows of a lake table in a form two lakes can be compared by (the crash and worker-pool
tests: the same segments must give the same lake, row by row)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["freeze"]


def freeze(value: Any) -> Any:
    """A cell as a hashable, comparable value: NaN equals NaN, lists and maps are tuples."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value
