"""The one Arrow type classifier: the family of each type, and which families get Delta
statistics (the two classifiers it replaced agreed on every type below)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lake.arrow_types import family, stats_kind

CASES = [
    (pa.int8(), "int", "int"),
    (pa.uint64(), "int", "int"),
    (pa.float32(), "float", "float"),
    (pa.string(), "string", "string"),
    (pa.large_string(), "string", "string"),
    (pa.string_view(), "string", None),
    (pa.dictionary(pa.int32(), pa.string()), "string", None),
    (pa.binary(), "binary", None),
    (pa.timestamp("us", tz="UTC"), "timestamp", "timestamp"),
    (pa.timestamp("ms"), "timestamp", "timestamp"),
    (pa.date32(), "date", "date"),
    (pa.date64(), "date", "date"),
    (pa.bool_(), "bool", "bool"),
    (pa.null(), "null", None),
    (pa.list_(pa.string()), "list:string", None),
    (pa.large_list(pa.int64()), "list:int", None),
    (pa.struct([("a", pa.int64())]), "struct<a: int64>", None),
    (pa.decimal128(10, 2), "decimal128(10, 2)", None),
]


@pytest.mark.parametrize(("arrow_type", "want_family", "want_stats"), CASES)
def test_family_and_statistics(
    arrow_type: pa.DataType, want_family: str, want_stats: str | None
) -> None:
    assert family(arrow_type) == want_family
    assert stats_kind(arrow_type) == want_stats
