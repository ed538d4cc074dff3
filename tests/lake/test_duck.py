"""``lake.duck``: the governed read's scan (``read_delta``) and its conditions.

A condition rendered by ``sql_condition`` must select exactly the rows the same condition
selects in pyarrow (the access layer filters in Arrow whatever does not render): checked
on a real Delta table, partitioned by a string column, with values that need quoting,
on local disk and on S3 (moto).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.duck import read_delta, reader, sql_condition
from lake.storage import Store

T0 = datetime(2026, 3, 31, 18, 0, tzinfo=UTC)
PARTS = ["b001", "o'brien", "café 2", 'say "hi"', "x;--", "a/b"]
NAMES = ["a", "A", "a'", "') OR true --", "\u0928\u093e\u092e", "with space", "back\\slash"]
SCHEMA = pa.schema(
    [
        pa.field("part", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("day", pa.date32()),
    ]
)


def _rows(count: int) -> pa.Table:
    return pa.table(
        {
            "part": [PARTS[i % len(PARTS)] for i in range(count)],
            "name": [None if i % 7 == 0 else NAMES[i % len(NAMES)] for i in range(count)],
            "n": [i - count // 2 for i in range(count)],
            "ts": [T0 + timedelta(minutes=17 * i, microseconds=i) for i in range(count)],
            "day": [date(2026, 3, 1) + timedelta(days=i % 60) for i in range(count)],
        },
        schema=SCHEMA,
    )


def _table(store: Store, rel: str) -> pa.Table:
    """Two versions: 0 holds 120 rows, 1 adds 60 more."""
    first, second = _rows(180).slice(0, 120), _rows(180).slice(120)
    options = store.storage_options()
    write_deltalake(store.url(rel), first, partition_by=["part"], storage_options=options)
    write_deltalake(
        store.url(rel), second, partition_by=["part"], mode="append", storage_options=options
    )
    return _rows(180)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pa.Table]:
    store = Store.from_uri(str(tmp_path_factory.mktemp("duck") / "lake"))
    return store, _table(store, "t")


def _expression(column: str, op: str, value: Any) -> pc.Expression:
    field = pc.field(column)
    if op == "in":
        return field.isin(value) if value else pc.scalar(False)
    return {
        "=": field == pa.scalar(value),
        "<": field < pa.scalar(value),
        "<=": field <= pa.scalar(value),
        ">": field > pa.scalar(value),
        ">=": field >= pa.scalar(value),
    }[op]


def _sorted(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["n"], r["ts"]))


_OPS = st.sampled_from(["=", "<", "<=", ">", ">="])
_TIMES = st.integers(-10, 200 * 17).map(lambda m: T0 + timedelta(minutes=m))
_CONDITIONS = st.one_of(
    st.tuples(st.just("part"), st.just("in"), st.lists(st.sampled_from(PARTS), max_size=4)),
    st.tuples(st.just("name"), st.just("in"), st.lists(st.sampled_from(NAMES), max_size=3)),
    st.tuples(st.just("part"), _OPS, st.sampled_from(PARTS)),
    st.tuples(st.just("n"), _OPS, st.integers(-100, 100)),
    st.tuples(st.just("n"), st.just("in"), st.lists(st.integers(-100, 100), max_size=5)),
    st.tuples(st.just("ts"), _OPS, _TIMES),
    st.tuples(st.just("day"), _OPS, st.dates(date(2026, 2, 20), date(2026, 5, 10))),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(conditions=st.lists(_CONDITIONS, max_size=3), version=st.sampled_from([0, 1]))
def test_a_rendered_condition_selects_what_pyarrow_selects(
    local: tuple[Store, pa.Table], conditions: list[tuple[str, str, Any]], version: int
) -> None:
    store, everything = local
    rows = everything.slice(0, 120 if version == 0 else 180)
    where = []
    expected = rows
    for column, op, value in conditions:
        condition = sql_condition(column, op, value, SCHEMA.field(column).type)
        assert condition is not None, (column, op, value)
        where.append(condition)
        expected = expected.filter(_expression(column, op, value))
    con = reader(store)
    try:
        got = read_delta(con, store, "t", version, SCHEMA, where=where)
    finally:
        con.close()
    assert got.schema == SCHEMA
    assert _sorted(got) == _sorted(expected)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ts", datetime(2026, 4, 1)),  # noqa: DTZ001 - naive: which zone is meant is not known
        ("ts", "2026-04-01"),
        ("n", "3"),
        ("n", 3.5),
        ("n", True),
        ("part", 3),
        ("day", datetime(2026, 4, 1, tzinfo=UTC)),
        ("name", None),
        ("n", 2**63),
    ],
)
def test_a_value_not_of_its_columns_kind_is_not_rendered(column: str, value: Any) -> None:
    kind = SCHEMA.field(column).type
    assert sql_condition(column, ">=", value, kind) is None
    assert sql_condition(column, "in", [value], kind) is None


def test_an_empty_in_list_selects_nothing(local: tuple[Store, pa.Table]) -> None:
    store, _ = local
    empty = sql_condition("part", "in", [], pa.string())
    assert empty is not None
    where = [empty]
    con = reader(store)
    try:
        assert read_delta(con, store, "t", 1, SCHEMA, where=where).num_rows == 0
    finally:
        con.close()


def test_read_delta_reads_a_table_on_s3_at_each_version(s3_store: Store) -> None:
    everything = _table(s3_store, "tenants/acme/t")
    brien = sql_condition("part", "in", ["o'brien", "café 2"], pa.string())
    assert brien is not None
    where = [brien]
    expected = everything.filter(pc.field("part").isin(["o'brien", "café 2"]))
    con = reader(s3_store)
    try:
        at_1 = read_delta(con, s3_store, "tenants/acme/t", 1, SCHEMA, where=where)
        at_0 = read_delta(con, s3_store, "tenants/acme/t", 0, SCHEMA, where=where)
    finally:
        con.close()
    assert _sorted(at_1) == _sorted(expected)
    assert _sorted(at_0) == _sorted(expected.filter(pc.field("n") < 120 - 90))
