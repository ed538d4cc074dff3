"""Consumption from counters and tank levels: independent of row order, never negative."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.consumption import RESET_DROP, counter_steps, fuel_used

T0 = datetime(2026, 11, 1, tzinfo=UTC)

series = st.lists(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=40),
    min_size=1,
    max_size=5,
)


def _frame(per_device: list[list[float]], column: str, order: list[int]) -> pl.DataFrame:
    rows = [
        {"device_id": f"d{d}", "seq": i, "ts": T0 + timedelta(minutes=i), column: v}
        for d, values in enumerate(per_device)
        for i, v in enumerate(values)
    ]
    shuffled = [rows[i % len(rows)] for i in order] if order else rows
    seen = {(r["device_id"], r["seq"]) for r in shuffled}
    shuffled += [r for r in rows if (r["device_id"], r["seq"]) not in seen]
    return pl.DataFrame(shuffled)


@settings(max_examples=60, deadline=None)
@given(series, st.lists(st.integers(min_value=0, max_value=10_000), max_size=200))
def test_fuel_used_is_the_sum_of_level_falls_whatever_the_row_order(
    per_device: list[list[float]], order: list[int]
) -> None:
    frame = _frame(per_device, "fuel_level_pct", order)
    tanks = pl.DataFrame(
        {"device_id": [f"d{d}" for d in range(len(per_device))], "tank_capacity_l": 200.0}
    )
    got = fuel_used(frame, tanks).collect().group_by("device_id").agg(pl.sum("fuel_used_l"))
    for device, litres in got.iter_rows():
        values = per_device[int(device[1:])]
        want = sum(max(a - b, 0.0) for a, b in itertools.pairwise(values)) * 2.0
        assert abs(litres - want) < 1e-6


@settings(max_examples=60, deadline=None)
@given(series, st.lists(st.integers(min_value=0, max_value=10_000), max_size=200))
def test_counter_steps_never_negative_and_follow_resets(
    per_device: list[list[float]], order: list[int]
) -> None:
    frame = _frame(per_device, "energy_kwh", order)
    got = counter_steps(frame, ["energy_kwh"]).collect()
    assert (got["energy_kwh_step"] >= 0).all()
    sums = dict(got.group_by("device_id").agg(pl.sum("energy_kwh_step")).iter_rows())
    for d, values in enumerate(per_device):
        want = 0.0
        for prev, cur in itertools.pairwise(values):
            if cur >= prev:
                want += cur - prev
            elif prev > 0 and cur < prev * (1 - RESET_DROP):
                want += cur  # a reset: counting restarted from zero
        assert abs(sums[f"d{d}"] - want) < 1e-6


def test_tank_rows_repeated_in_the_registry_do_not_double_the_fuel() -> None:
    frame = _frame([[80.0, 70.0, 75.0, 60.0]], "fuel_level_pct", [])
    tanks = pl.DataFrame({"device_id": ["d0", "d0"], "tank_capacity_l": [100.0, 100.0]})
    got = fuel_used(frame, tanks).collect()
    assert got.height == 4
    assert abs(got["fuel_used_l"].sum() - 25.0) < 1e-9


@settings(max_examples=60, deadline=None)
@given(series, st.sampled_from([None, 100.0]))
def test_the_sql_twins_give_the_steps_of_the_frame_rules(
    per_device: list[list[float]], ceiling: float | None
) -> None:
    """counter_step_sql / fuel_used_sql in DuckDB == counter_steps / fuel_used in polars."""
    import duckdb

    from lake.consumption import counter_step_sql, fuel_used_sql

    frame = _frame(per_device, "v", [])
    tanks = pl.DataFrame({"device_id": [f"d{d}" for d in range(len(per_device))]}).with_columns(
        pl.lit(80.0).alias("tank_capacity_l")
    )
    ceilings = {"v": ceiling} if ceiling is not None else None
    want = (
        fuel_used(counter_steps(frame, ["v"], ceilings=ceilings).collect(), tanks, level="v")
        .sort("device_id", "seq")
        .collect()
    )
    con = duckdb.connect()
    con.register("r", frame.to_arrow())
    con.register("t", tanks.to_arrow())
    got = pl.from_arrow(
        con.execute(
            f"""SELECT device_id, seq, {counter_step_sql("v", "p", ceiling)} AS step,
                       {fuel_used_sql("v", "p", "tank_capacity_l")} AS litres
                FROM (SELECT r.*, lag(v) OVER (PARTITION BY device_id ORDER BY ts, seq) AS p
                      FROM r) JOIN t USING (device_id)
                ORDER BY device_id, seq"""
        ).to_arrow_table()
    )
    assert isinstance(got, pl.DataFrame)
    assert got["step"].to_list() == pytest.approx(want["v_step"].to_list(), abs=1e-9)
    assert got["litres"].to_list() == pytest.approx(want["fuel_used_l"].to_list(), abs=1e-9)
