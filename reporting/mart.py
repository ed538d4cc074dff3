"""The consumption mart: energy and fuel per device, branch and day in Asia/Kolkata, from the
cumulative counters, with coverage, read through a governed session.

Quantities (each from a counter; ``lake.consumption`` is the one rule for steps):

- ``grid_import_kwh`` / ``grid_export_kwh``: the meter's import and export counters (the meter
  sits at the grid incomer; it reads zero while the DG carries the load);
- ``solar_kwh``: the inverter's generation counter;
- ``diesel_l``: falls of the DG's tank level x its tank litres (a rise is a refill);
- ``dg_kwh``: the DG's generated-energy counter (shown, never counted as energy consumed: the
  diesel is).

A reading at ``ts`` closes the interval since the device's previous reading; its counter step
belongs to that interval ``(previous ts, ts]``. An interval inside one IST day goes to that
day (exact, whatever its length). One that crosses midnight is split by time over the days it
covers; when it is longer than ``gap_factor`` x the device's cadence (at least
``_MIN_GAP_S``) the split is an *estimate*: each quantity's ``est_`` column holds the part of
it that is estimated, ``estimated_steps`` counts them, and every report shows them. A counter
reset (a fall of 10 % or more) counts the new value only, so energy lost to a reset during a
gap is missing, never invented;
coverage (readings present / readings expected from the cadence, from the day the device was
installed) shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa

from analytics.access import Session
from lake.consumption import counter_step_sql, fuel_used_sql, reset_sql

__all__ = [
    "IST",
    "QUANTITIES",
    "Mart",
    "build_mart",
    "ist_day_start",
    "read_window",
]

IST = ZoneInfo("Asia/Kolkata")
TZ_NAME = "Asia/Kolkata"
QUANTITIES = ("grid_import_kwh", "grid_export_kwh", "solar_kwh", "diesel_l", "dg_kwh")
_MARGIN = timedelta(days=7)  # readings before the window: the first step's previous reading
_MIN_GAP_S = 900.0
_KINDS = {"meter_readings": "meter", "solar_readings": "solar", "dg_readings": "dg"}
_DAY_S = 86400.0
_DAY_US = 86_400_000_000
_IST_OFFSET_US = 19_800_000_000  # +05:30


def ist_day_start(day: date) -> datetime:
    """Midnight IST of ``day``, in UTC."""
    return datetime.combine(day, time(0, 0), tzinfo=IST).astimezone(UTC)


def read_window(start: date, end: date) -> tuple[datetime, datetime]:
    """The UTC window a mart of IST days ``[start, end)`` reads: a margin before ``start``
    (the previous reading of each device's first step) and a day after ``end`` (a reading
    after midnight closes an interval that began before it)."""
    return ist_day_start(start) - _MARGIN, ist_day_start(end) + timedelta(days=1)


# (dataset, counter column -> quantity) read from each readings view
_SOURCES: dict[str, dict[str, str]] = {
    "meter_readings": {
        "energy_import_kwh": "grid_import_kwh",
        "energy_export_kwh": "grid_export_kwh",
    },
    "solar_readings": {"energy_generated_kwh": "solar_kwh"},
    "dg_readings": {"energy_generated_kwh": "dg_kwh"},
}


@dataclass(slots=True)
class Mart:
    """Device-days (one row per device and IST day of the window, readings or not) and the
    branches' attributes. ``device_days`` columns: client_id, branch_id, device_id, kind,
    day, readings, expected, each quantity and its ``est_`` part, counter_resets,
    estimated_steps."""

    start: date
    end: date
    device_days: pl.DataFrame
    branches: pl.DataFrame  # branch_id, site_name, city, state, ncr

    def branch_days(self) -> pl.DataFrame:
        """Per branch and day: each quantity (measured + estimated), its estimated part,
        readings, expected and coverage per device kind."""
        return _rollup(self.device_days, ["client_id", "branch_id", "day"])

    def periods(self, by: list[str], grain: str) -> pl.DataFrame:
        """Rolled up by ``by`` (e.g. ["branch_id"], ["city"], []) and ``grain`` ("day",
        "month": YYYY-MM, "fy": YYYY-YY), with branch attributes joined for city/state."""
        frame = self.device_days.join(self.branches, on="branch_id", how="left")
        # the month and FY labels of each distinct day, joined (formatting them once per
        # device-day was a third of a year's roll-ups)
        days = (
            self.device_days.select("day")
            .unique()
            .with_columns(
                pl.col("day").dt.strftime("%Y-%m").alias("month"),
                _fy_expr(pl.col("day")).alias("fy"),
            )
        )
        return _rollup(frame.join(days, on="day", how="left"), [*by, grain])


def _fy_expr(day: pl.Expr) -> pl.Expr:
    start = pl.when(day.dt.month() >= 4).then(day.dt.year()).otherwise(day.dt.year() - 1)
    return pl.format("{}-{}", start, ((start + 1) % 100).cast(pl.String).str.zfill(2))


def _rollup(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    sums = [
        *(pl.col(q).sum() for q in QUANTITIES),
        *(pl.col(f"est_{q}").sum() for q in QUANTITIES),
        pl.col("counter_resets").sum(),
        pl.col("estimated_steps").sum(),
    ]
    per_kind = [
        pl.col(c).filter(pl.col("kind") == kind).sum().alias(f"{c}_{kind}")
        for kind in ("meter", "solar", "dg")
        for c in ("readings", "expected")
    ]
    out = frame.group_by(keys).agg([*sums, *per_kind]) if keys else frame.select([*sums, *per_kind])
    cover = [
        pl.when(pl.col(f"expected_{k}") > 0)
        .then(pl.col(f"readings_{k}") / pl.col(f"expected_{k}"))
        .otherwise(None)
        .alias(f"coverage_{k}")
        for k in ("meter", "solar", "dg")
    ]
    out = out.with_columns(cover)
    return out.sort(keys) if keys else out


def build_mart(session: Session, start: date, end: date, *, gap_factor: float = 3.0) -> Mart:
    """The mart of IST days ``[start, end)`` of the session's tenants (read through the
    session: its grant's branches, purpose and access records)."""
    devices = _frame(
        session.sql(
            "SELECT client_id, branch_id, device_id, kind, cadence_s, tank_capacity_l,"
            " installed_on FROM devices"
        )
    )
    branches = _frame(
        session.sql("SELECT branch_id, site_name, city, state, ncr FROM branches")
    ).unique("branch_id", keep="first")
    lo, hi = read_window(start, end)
    steps: list[pl.DataFrame] = []
    counts: list[pl.DataFrame] = []
    seen: list[pl.DataFrame] = []  # devices with readings (client_id, device_id, branch_id, kind)
    cadence = devices.select("device_id", "cadence_s")
    for dataset, counters in _SOURCES.items():
        if dataset not in session.views:
            continue
        quantities = [*counters.values(), *(["diesel_l"] if dataset == "dg_readings" else [])]
        parts = _frame(session.sql(_steps_sql(dataset, counters, lo, hi, start, end)))
        if parts.height == 0:
            continue
        n, single, crossing = _parts(parts, quantities, start, end)
        seen.append(
            n.select("client_id", "device_id", "branch_id")
            .unique("device_id", keep="last")  # its branch on the last day it reported
            .with_columns(pl.lit(_KINDS[dataset]).alias("kind"))
        )
        counts.append(
            n.select(
                "device_id",
                "day",
                pl.col("readings").cast(pl.Int64),
                pl.col("resets").cast(pl.Int64).alias("counter_resets"),
            )
        )
        steps.append(single)
        if crossing.height:  # a device no longer in the registry: no cadence, never "long"
            crossing = crossing.join(cadence, on="device_id", how="left")
            steps.append(_assign(crossing, quantities, gap_factor))
    if seen:
        unregistered = (
            pl.concat(seen)
            .unique("device_id", keep="first")
            .join(devices.select("device_id"), on="device_id", how="anti")
        )
        if unregistered.height:
            devices = pl.concat(
                [devices, unregistered],
                how="diagonal_relaxed",
            )
    device_days = _device_days(devices, start, end, steps, counts)
    return Mart(start, end, device_days, branches)


def _parts(
    grouped: pl.DataFrame, quantities: list[str], start: date, end: date
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """From ``_steps_sql``'s groups: readings and resets per device and IST day of
    ``[start, end)`` (and the branch it reported from); the sums of the steps whose
    interval lies within one such day; and each step whose interval crosses IST midnight
    (device, prev_ts, ts, quantities) for ``_assign``."""
    in_range = (pl.col("day") >= start) & (pl.col("day") < end)
    n = (
        grouped.filter(in_range)
        .group_by("client_id", "device_id", "day")
        .agg(
            pl.col("branch_id").first(),
            pl.col("readings").sum(),
            pl.col("resets").sum(),
        )
        .sort("client_id", "device_id", "day")
    )
    day = pl.col("first_day")
    single = (
        grouped.filter(
            day.is_not_null() & (day == pl.col("last_day")) & (day >= start) & (day < end)
        )
        .group_by("device_id", "first_day")
        .agg(  # a sum of nothing but nulls stays null, as SQL's
            *(
                pl.when(pl.col(q).count() > 0).then(pl.col(q).sum()).cast(pl.Float64).alias(q)
                for q in quantities
            )
        )
        .rename({"first_day": "day"})
        .with_columns(
            *(pl.lit(0.0).alias(f"est_{q}") for q in quantities),
            pl.lit(0, dtype=pl.UInt32).alias("estimated_steps"),
        )
    )
    crossing = grouped.filter(
        pl.col("xts").is_not_null() & (pl.col("last_day") >= start) & (day < end)
    ).select("device_id", "prev_ts", pl.col("xts").alias("ts"), *quantities)
    return n, single, crossing


def _steps_sql(
    dataset: str, counters: dict[str, str], lo: datetime, hi: datetime, start: date, end: date
) -> str:
    """One statement over a readings view, aggregated where the rows are (DuckDB): each
    reading's step per quantity (``lake.consumption``'s rules in SQL) between consecutive
    readings of a device, then one aggregation in a single pass, by client, device, the
    IST day of the reading, the IST days of the first and last moment of the interval it
    closes, and ``xts`` (the reading's time when that interval crosses IST midnight, so
    each crossing step is a group of its own, to be split by ``_assign``). ``_parts``
    takes the readings per day, the in-day steps per day and the crossing steps from it.
    """
    level = dataset == "dg_readings"
    columns = [*counters, *(["fuel_level_pct"] if level else [])]
    # IGNORE NULLS: a reading without a counter (a message of other quantities) is stepped
    # over, as lake.consumption does
    lags = ", ".join(f"lag(x.{c} IGNORE NULLS) OVER w AS _p_{c}" for c in columns)
    values = [f"{counter_step_sql(c, f'_p_{c}')} AS {q}" for c, q in counters.items()]
    if level:
        values.append(
            f"{fuel_used_sql('fuel_level_pct', '_p_fuel_level_pct', '_tank')} AS diesel_l"
        )
    quantities = [*counters.values(), *(["diesel_l"] if level else [])]
    reset = " OR ".join(reset_sql(c, f"_p_{c}") for c in counters)
    tank = (
        " LEFT JOIN (SELECT device_id AS _d, any_value(tank_capacity_l) AS _tank FROM devices"
        " GROUP BY device_id) t ON t._d = r.device_id"
        if level
        else ""
    )
    # the IST day of a moment: Asia/Kolkata is UTC+05:30 all year (no DST since 1945), so
    # integer arithmetic on epoch microseconds, not a time-zone lookup per row (3x faster)
    local = (
        "(DATE '1970-01-01'"
        f" + CAST(floor((epoch_us({{}}) + {_IST_OFFSET_US}) / {_DAY_US}) AS INTEGER))"
    )
    sums = ", ".join(f"sum({q}) AS {q}" for q in quantities)
    first, last = f"DATE '{start.isoformat()}'", f"DATE '{end.isoformat()}'"
    return f"""
WITH r AS (
  SELECT x.client_id, x.device_id, x.branch_id, x.ts, {", ".join(f"x.{c}" for c in columns)},
         lag(x.ts) OVER w AS prev_ts, {lags}
  FROM {dataset} x
  WHERE x.ts >= TIMESTAMPTZ '{lo.isoformat()}' AND x.ts < TIMESTAMPTZ '{hi.isoformat()}'
  WINDOW w AS (PARTITION BY x.device_id ORDER BY x.ts, x.seq)
), s AS (
  SELECT client_id, device_id, branch_id, ts, prev_ts, {", ".join(values)},
         CAST(COALESCE({reset}, false) AS INTEGER) AS reset,
         {local.format("ts")} AS day,
         {local.format("prev_ts + INTERVAL 1 MICROSECOND")} AS first_day,
         {local.format("ts - INTERVAL 1 MICROSECOND")} AS last_day
  FROM r{tank}
)
SELECT client_id, device_id, day, first_day, last_day,
       CASE WHEN first_day <> last_day THEN ts END AS xts,
       any_value(branch_id) AS branch_id, any_value(prev_ts) AS prev_ts,
       count(*) AS readings, sum(reset) AS resets, {sums}
FROM s
WHERE (day >= {first} AND day < {last})
   OR (first_day IS NOT NULL AND last_day >= {first} AND first_day < {last})
GROUP BY client_id, device_id, day, first_day, last_day, xts
"""  # noqa: S608 - our view names and our own literals


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _ist_day(col: pl.Expr) -> pl.Expr:
    return col.dt.convert_time_zone(TZ_NAME).dt.date()


def _assign(stepped: pl.DataFrame, quantities: list[str], gap_factor: float) -> pl.DataFrame:
    """Each step's quantities to the IST days its interval ``(prev_ts, ts]`` covers: long
    form (device_id, day, quantity columns, est_ columns, estimated_steps)."""
    eps = timedelta(microseconds=1)
    frame = (
        stepped.filter(pl.col("prev_ts").is_not_null())
        .with_columns(
            ((pl.col("ts") - pl.col("prev_ts")).dt.total_microseconds() / 1e6).alias("_len_s"),
            _ist_day(pl.col("prev_ts") + eps).alias("_first"),
            _ist_day(pl.col("ts") - eps).alias("_last"),
        )
        .with_columns(
            (
                pl.col("_len_s")
                > pl.max_horizontal(pl.col("cadence_s").cast(pl.Float64) * gap_factor, _MIN_GAP_S)
            ).alias("_long")
        )
    )
    single = frame.filter(pl.col("_first") == pl.col("_last")).select(
        "device_id",
        pl.col("_first").alias("day"),
        *(pl.col(q) for q in quantities),
        *(pl.lit(0.0).alias(f"est_{q}") for q in quantities),
        pl.lit(0, dtype=pl.UInt32).alias("estimated_steps"),
    )
    parts = [single]
    split = frame.filter(pl.col("_first") != pl.col("_last"))
    if split.height:
        parts.append(_split_rows(split, quantities))
    return pl.concat(parts, how="vertical_relaxed")


def _split_rows(split: pl.DataFrame, quantities: list[str]) -> pl.DataFrame:
    """Steps whose interval crosses IST midnight, split by time (few: one per device and day
    at most, plus the gaps)."""
    rows: list[dict[str, Any]] = []
    for row in split.iter_rows(named=True):
        a: datetime = row["prev_ts"]
        b: datetime = row["ts"]
        total = (b - a).total_seconds()
        day = row["_first"]
        long = bool(row["_long"])
        while day <= row["_last"]:
            lo = max(a, ist_day_start(day))
            hi = min(b, ist_day_start(day + timedelta(days=1)))
            share = max((hi - lo).total_seconds(), 0.0) / total if total > 0 else 0.0
            out: dict[str, Any] = {"device_id": row["device_id"], "day": day}
            for q in quantities:
                value = float(row[q] or 0.0) * share
                out[q] = value
                out[f"est_{q}"] = value if long else 0.0
            out["estimated_steps"] = 1 if long and day == row["_first"] else 0  # once
            rows.append(out)
            day += timedelta(days=1)
    schema: dict[str, Any] = {"device_id": pl.String, "day": pl.Date}
    schema |= {q: pl.Float64 for q in quantities} | {f"est_{q}": pl.Float64 for q in quantities}
    schema["estimated_steps"] = pl.UInt32
    return pl.DataFrame(rows, schema=schema)


def _device_days(
    devices: pl.DataFrame,
    start: date,
    end: date,
    steps: list[pl.DataFrame],
    counts: list[pl.DataFrame],
) -> pl.DataFrame:
    days = pl.DataFrame({"day": pl.date_range(start, end, "1d", closed="left", eager=True)})
    grid = devices.join(days, how="cross").with_columns(
        pl.when(pl.col("cadence_s").is_not_null() & (pl.col("day") >= pl.col("installed_on")))
        .then(_DAY_S / pl.col("cadence_s").cast(pl.Float64))
        .otherwise(0.0)
        .alias("expected")
    )
    zero = {q: 0.0 for q in QUANTITIES} | {f"est_{q}": 0.0 for q in QUANTITIES}
    if steps:
        summed = (
            pl.concat(steps, how="diagonal_relaxed")
            .filter((pl.col("day") >= start) & (pl.col("day") < end))
            .group_by("device_id", "day")
            .agg(
                *(pl.col(c).sum() for c in zero if c in _columns(steps)),
                pl.col("estimated_steps").sum(),
            )
        )
        grid = grid.join(summed, on=["device_id", "day"], how="left")
    if counts:
        grid = grid.join(pl.concat(counts), on=["device_id", "day"], how="left")
    for name in (*zero, "readings", "counter_resets", "estimated_steps"):
        if name not in grid.columns:
            grid = grid.with_columns(pl.lit(0).alias(name))
    return grid.with_columns(
        *(pl.col(c).fill_null(0.0).cast(pl.Float64) for c in zero),
        pl.col("readings").fill_null(0).cast(pl.Int64),
        pl.col("counter_resets").fill_null(0).cast(pl.Int64),
        pl.col("estimated_steps").fill_null(0).cast(pl.Int64),
    ).select(
        "client_id",
        "branch_id",
        "device_id",
        "kind",
        "day",
        "readings",
        "expected",
        *QUANTITIES,
        *(f"est_{q}" for q in QUANTITIES),
        "counter_resets",
        "estimated_steps",
    )


def _columns(frames: list[pl.DataFrame]) -> set[str]:
    return {c for f in frames for c in f.columns}
