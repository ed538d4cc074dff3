"""The strict NDJSON parse in blocks (parsed on a thread pool): bad lines anywhere, in
several blocks at once, are named by their own index, and the good lines come back in
their input order."""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.decode import PARSE_BLOCK, _parse_lines

SCHEMA = pa.schema([pa.field("seq", pa.int64()), pa.field("v", pa.float64())])


def _lines(n: int, bad: set[int]) -> list[bytes]:
    return [
        b'{"seq": "not a number", "v": 1}' if i in bad else orjson.dumps({"seq": i, "v": i / 2})
        for i in range(n)
    ]


def test_bad_lines_at_block_edges_are_named_and_order_is_kept() -> None:
    n = 3 * PARSE_BLOCK + 17
    bad = {0, 3, PARSE_BLOCK - 1, PARSE_BLOCK, 2 * PARSE_BLOCK + 5, n - 1}
    table, failed = _parse_lines(_lines(n, bad), SCHEMA)
    assert sorted(k for k, _, _ in failed) == sorted(bad)
    assert {code for _, code, _ in failed} == {"SCHEMA_MISMATCH"}
    assert table.column("seq").to_pylist() == [i for i in range(n) if i not in bad]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=3 * PARSE_BLOCK),
    picks=st.lists(st.integers(min_value=0, max_value=3 * PARSE_BLOCK), max_size=12),
)
def test_any_bad_lines(n: int, picks: list[int]) -> None:
    bad = {p for p in picks if p < n}
    table, failed = _parse_lines(_lines(n, bad), SCHEMA)
    assert sorted(k for k, _, _ in failed) == sorted(bad)
    assert table.column("seq").to_pylist() == [i for i in range(n) if i not in bad]
