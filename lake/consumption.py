"""Consumption from cumulative counters, reset- and rollover-aware: never a negative total.

Counters (kWh, run hours) are the source of truth for energy; consumption over a period is
the sum of each device's positive steps between consecutive readings (ordered by event
time, then seq). A step down is one of:

- a *reset* (the counter fell by ``RESET_DROP`` or more of its previous value): the device
  restarted counting from zero, so the new value itself is the step;
- a *rollover* (the previous value was within 10 % of the counter's ceiling): the step is
  ``ceiling - previous + new``;
- *noise* (a small fall): the step is zero.

Fuel used comes from the fall of the tank level (percent x tank litres); a rise is a refill
and counts nothing. Derived at read time from whatever rows the lake holds, so late and
out-of-order readings are simply sorted into place.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

__all__ = [
    "RESET_DROP",
    "counter_step_sql",
    "counter_steps",
    "fuel_used",
    "fuel_used_sql",
    "reset_sql",
]

RESET_DROP = 0.10


def counter_steps(
    frame: pl.DataFrame | pl.LazyFrame,
    counters: Sequence[str],
    *,
    ceilings: dict[str, float] | None = None,
    by: str = "device_id",
) -> pl.LazyFrame:
    """Per-row non-negative steps ``<counter>_step`` for each counter, per device."""
    lazy = frame.lazy().sort([by, "ts", "seq"])
    exprs = []
    for name in counters:
        # the device's previous value of this counter: a reading without it (a message
        # carrying other quantities) is stepped over, never read as a fall to nothing
        prev = pl.col(name).shift(1).forward_fill().over(by)
        cur = pl.col(name)
        diff = cur - prev
        ceiling = (ceilings or {}).get(name)
        reset = (prev > 0) & (cur < prev * (1 - RESET_DROP))
        rollover = reset & (prev >= 0.9 * ceiling) if ceiling is not None else pl.lit(False)
        wrapped = (ceiling - prev + cur) if ceiling is not None else cur
        step = (
            pl.when(prev.is_null() | cur.is_null())
            .then(0.0)
            .when(diff >= 0)
            .then(diff)
            .when(rollover)
            .then(wrapped)
            .when(reset)
            .then(cur)
            .otherwise(0.0)
        )
        exprs.append(step.alias(f"{name}_step"))
    return lazy.with_columns(exprs)


def fuel_used(
    frame: pl.DataFrame | pl.LazyFrame,
    tanks: pl.DataFrame,
    *,
    level: str = "fuel_level_pct",
    by: str = "device_id",
) -> pl.LazyFrame:
    """Per-row litres burnt since the previous reading: falls of the level only."""
    # Join first, then sort: a join does not keep row order (polars), and the level's fall
    # is taken between consecutive rows.
    lazy = (
        frame.lazy()
        .join(tanks.lazy().select(by, "tank_capacity_l").unique(by), on=by, how="left")
        .sort([by, "ts", "seq"])
    )
    fall = pl.col(level).shift(1).over(by) - pl.col(level)
    litres = pl.when(fall > 0).then(fall * pl.col("tank_capacity_l") / 100.0).otherwise(0.0)
    return lazy.with_columns(litres.fill_null(0.0).alias("fuel_used_l"))


# -- the same rules in SQL (DuckDB), for queries that aggregate where the rows are ------------
# Twins of counter_steps and fuel_used: tests/lake/test_consumption.py checks that both give
# the same steps on the same readings.


def reset_sql(cur: str, prev: str) -> str:
    """True where ``cur`` (a counter) fell from ``prev`` by ``RESET_DROP`` or more."""
    return f"({prev} > 0 AND {cur} < {prev} * {1 - RESET_DROP!r})"


def counter_step_sql(cur: str, prev: str, ceiling: float | None = None) -> str:
    """The non-negative step of a counter from ``prev`` (its previous reading, e.g. a
    ``lag``) to ``cur``, by the rule of :func:`counter_steps`."""
    rollover = ""
    if ceiling is not None:
        rollover = (
            f" WHEN {reset_sql(cur, prev)} AND {prev} >= {0.9 * ceiling!r}"
            f" THEN {ceiling!r} - {prev} + {cur}"
        )
    return (
        f"CASE WHEN {prev} IS NULL OR {cur} IS NULL THEN 0.0"
        f" WHEN {cur} >= {prev} THEN {cur} - {prev}{rollover}"
        f" WHEN {reset_sql(cur, prev)} THEN {cur} ELSE 0.0 END"
    )


def fuel_used_sql(cur: str, prev: str, tank_l: str) -> str:
    """Litres burnt from the previous tank level ``prev`` (percent) to ``cur``, by the rule
    of :func:`fuel_used`: a fall only, times the tank's litres."""
    return (
        f"CASE WHEN {prev} - {cur} > 0 THEN COALESCE(({prev} - {cur}) * {tank_l} / 100.0, 0.0)"
        " ELSE 0.0 END"
    )
