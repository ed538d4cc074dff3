"""The one classifier of Arrow types: which family a column's type belongs to.

Used where a type decides what to do: whether reference data may be cast to its contract's
type (``lake.reference``), and how a column's statistics are recorded in a Delta commit
(``lake.delta``).
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["family", "stats_kind"]

_STATS_FAMILIES = frozenset({"timestamp", "date", "int", "float", "string", "bool"})


def family(arrow_type: pa.DataType) -> str:
    """``int``, ``float``, ``string``, ``binary``, ``timestamp``, ``date``, ``bool``,
    ``null``, ``list:<family>`` (a dictionary counts as its values' type); any other type
    is its own name."""
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_dictionary(arrow_type):
        return family(arrow_type.value_type)
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "string"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "list:" + family(arrow_type.value_type)
    return str(arrow_type)


def stats_kind(arrow_type: pa.DataType) -> str | None:
    """How a column's statistics are recorded in a Delta commit: its family, for the plain
    scalar families; None (no statistics) for the rest, and for dictionary-encoded and
    view columns, whose values the statistics writer does not read."""
    if pa.types.is_dictionary(arrow_type) or pa.types.is_string_view(arrow_type):
        return None
    kind = family(arrow_type)
    return kind if kind in _STATS_FAMILIES else None
