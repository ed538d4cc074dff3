"""The strict NDJSON parse in blocks (parsed on a thread pool while more lines are still
being appended): bad lines anywhere, in several blocks at once, are named by their own
index, and the good lines come back in their input order."""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.ndjson import PARSE_BLOCK, BlockParser

SCHEMA = pa.schema([pa.field("seq", pa.int64()), pa.field("v", pa.float64())])


def _lines(n: int, bad: set[int]) -> list[bytes]:
    return [
        b'{"seq": "not a number", "v": 1}' if i in bad else orjson.dumps({"seq": i, "v": i / 2})
        for i in range(n)
    ]


def _parse_lines(
    lines: list[bytes], cuts: set[int] | None = None
) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Feed the parser the way the decoder does: append line by line, and hand it every
    line up to each cut (by default, every full block) while appending goes on."""
    fed: list[bytes] = []
    parser = BlockParser(fed, SCHEMA)
    for i, line in enumerate(lines):
        fed.append(line)
        if (i + 1) in (cuts if cuts is not None else range(PARSE_BLOCK, len(lines), PARSE_BLOCK)):
            parser.submit_upto(i + 1)
    parser.submit_upto(len(fed))
    parsed = parser.result()
    return parsed.table, parsed.failed


def test_bad_lines_at_block_edges_are_named_and_order_is_kept() -> None:
    n = 3 * PARSE_BLOCK + 17
    bad = {0, 3, PARSE_BLOCK - 1, PARSE_BLOCK, 2 * PARSE_BLOCK + 5, n - 1}
    table, failed = _parse_lines(_lines(n, bad))
    assert sorted(k for k, _, _ in failed) == sorted(bad)
    assert {code for _, code, _ in failed} == {"SCHEMA_MISMATCH"}
    assert table.column("seq").to_pylist() == [i for i in range(n) if i not in bad]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=3 * PARSE_BLOCK),
    picks=st.lists(st.integers(min_value=0, max_value=3 * PARSE_BLOCK), max_size=12),
    cuts=st.sets(st.integers(min_value=1, max_value=3 * PARSE_BLOCK), max_size=6),
)
def test_any_bad_lines(n: int, picks: list[int], cuts: set[int]) -> None:
    bad = {p for p in picks if p < n}
    table, failed = _parse_lines(_lines(n, bad), cuts)
    assert sorted(k for k, _, _ in failed) == sorted(bad)
    assert table.column("seq").to_pylist() == [i for i in range(n) if i not in bad]
