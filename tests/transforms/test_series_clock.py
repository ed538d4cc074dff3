"""Readings whose event time contradicts the device's seq are caught; restarts are not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from transforms.series import _clock_jumps

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def _frame(
    points: list[tuple[int, float]], committed: bool, start: int = 0, device: str = "d1"
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "branch_id": "b1",
            "device_id": device,
            "seq": [s for s, _ in points],
            "ts": [T0 + timedelta(minutes=m) for _, m in points],
            "_committed": committed,
            "_i": list(range(start, start + len(points))),
        },
        schema_overrides={"_i": pl.Int64, "seq": pl.Int64},
    )


def _caught(
    points: list[tuple[int, float]], history: tuple[tuple[int, float], ...] = ()
) -> set[int]:
    hist = _frame(list(history), True, start=10_000).with_columns(
        pl.lit(None, pl.Int64).alias("_i")
    )
    # Devices on either side, with series of their own: the checks look at one device's
    # neighbours only (the frame is sorted by device, then time).
    before = _frame([(5 + k, float(k)) for k in range(30)], False, start=20_000, device="d0")
    after = _frame([(9_000 - k, float(k)) for k in range(30)], False, start=30_000, device="d2")
    merged = pl.concat([hist, _frame(points, False), before, after], how="diagonal_relaxed").sort(
        ["device_id", "ts", "seq"]
    )
    got = _clock_jumps(merged)
    got = got.filter(pl.col("_i") < 20_000)
    assert set(got["reason_code"]) <= {"TIMESTAMP_OUT_OF_RANGE"}
    assert got["detail"].is_not_null().all()
    return {points[i][0] for i in got["_i"].to_list()}


CLEAN = [(1000 + k, float(k)) for k in range(60)]


def test_a_clean_series_and_lost_messages_are_not_flagged() -> None:
    assert _caught(CLEAN) == set()
    assert _caught([p for p in CLEAN if p[0] % 7]) == set()  # gaps in seq are not clock errors


@pytest.mark.parametrize("shift", [90.0, 600.0])
def test_a_reading_shifted_into_the_middle_is_caught(shift: float) -> None:
    moved = [(s, m + shift if s == 1005 else m) for s, m in CLEAN]
    assert _caught(moved) == {1005}


def test_readings_shifted_past_the_end_are_caught_even_in_pairs() -> None:
    moved = [(s, m + 500 if s in (1010, 1020) else m) for s, m in CLEAN]
    assert _caught(moved) == {1010, 1020}


def test_a_reading_shifted_before_the_start_is_caught_and_its_followers_are_not() -> None:
    moved = [(s, -30.0 if s == 1040 else m) for s, m in CLEAN]
    assert _caught(moved) == {1040}


def test_a_device_restart_is_not_a_clock_error() -> None:
    restarted = [*CLEAN[:30], *[(k, 30.0 + k) for k in range(30)]]
    assert _caught(restarted) == set()


def test_the_committed_history_judges_a_new_batch() -> None:
    # The batch holds one reading numbered before the last committed one but stamped after.
    assert _caught([(1050, 70.0), (1060, 71.0)], history=tuple(CLEAN)) == {1050}
    assert _caught([(1060, 60.0), (1061, 61.0)], history=tuple(CLEAN)) == set()
