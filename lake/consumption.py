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

__all__ = ["RESET_DROP", "counter_steps", "fuel_used"]

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
        prev = pl.col(name).shift(1).over(by)
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
