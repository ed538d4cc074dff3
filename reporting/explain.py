"""``report explain``: a figure of a report broken down, level by level, read at the versions
the report recorded (so the parts add up to the figure as filed):

1. the figure, its formula and the factors it used; then every branch's part of it;
2. ``branch``: each device of that branch, month by month (quantity, estimated part,
   readings present and expected);
3. ``branch`` and ``day`` (IST): each reading of that day (time, seq, counter, its step and
   the interval it closes), and the landing segments that carried the branch's rows of that
   day into the lake (lineage: the pipeline runs that wrote them, and the segments they read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl

from analytics.access import Session
from lake.consumption import counter_steps
from lineage.store import LineageStore
from reporting.errors import ReportError
from reporting.factors import fy_bounds
from reporting.mart import build_mart, ist_day_start
from reporting.record import DOCUMENT

__all__ = ["FIGURE_FACTORS", "FIGURE_QUANTITIES", "Explanation", "explain"]

# figure -> the quantities it is computed from (docs/REPORTING.md)
FIGURE_QUANTITIES: dict[str, tuple[str, ...]] = {
    "A": ("solar_kwh", "grid_export_kwh"),
    "ABC": ("solar_kwh", "grid_export_kwh"),
    "D": ("grid_import_kwh",),
    "E": ("diesel_l",),
    "DEF": ("grid_import_kwh", "diesel_l"),
    "total": ("grid_import_kwh", "diesel_l", "solar_kwh", "grid_export_kwh"),
    "S1": ("diesel_l",),
    "S2": ("grid_import_kwh",),
}
_ENERGY_DIESEL = {"diesel_ncv", "diesel_density", "diesel_energy_per_litre"}
_CO2E_DIESEL = {"diesel_ncv", "diesel_density", "diesel_co2", "diesel_ch4", "diesel_n2o"}
_CO2E_DIESEL |= {"gwp_ch4", "gwp_n2o", "diesel_co2e_per_litre"}
# figure -> the factors it uses
FIGURE_FACTORS: dict[str, set[str]] = {
    "A": {"electricity_energy"},
    "ABC": {"electricity_energy"},
    "D": {"electricity_energy"},
    "E": _ENERGY_DIESEL,
    "DEF": {"electricity_energy", *_ENERGY_DIESEL},
    "total": {"electricity_energy", *_ENERGY_DIESEL},
    "S1": _CO2E_DIESEL,
    "S2": {"grid_co2"},
}
# quantity -> (readings dataset, counter column)
_COUNTERS: dict[str, tuple[str, str]] = {
    "grid_import_kwh": ("meter_readings", "energy_import_kwh"),
    "grid_export_kwh": ("meter_readings", "energy_export_kwh"),
    "solar_kwh": ("solar_readings", "energy_generated_kwh"),
    "diesel_l": ("dg_readings", "fuel_level_pct"),
}
# the branch rows' column for a figure's branch part
_BRANCH_PART = {"A": "A", "ABC": "A", "D": "D", "E": "E", "DEF": None, "total": "total_gj"}
_BRANCH_PART |= {"S1": "S1", "S2": "S2"}


@dataclass(slots=True)
class Explanation:
    figure: dict[str, Any]
    factors: list[dict[str, Any]]
    quantities: tuple[str, ...]
    branches: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    segments: dict[str, list[str]] = field(default_factory=dict)  # pipeline run -> segments


def explain(
    doc: dict[str, Any],
    session: Session,
    figure: str,
    *,
    fy: str | None = None,
    branch: str | None = None,
    day: date | None = None,
    lineage: LineageStore | None = None,
) -> Explanation:
    fy = fy or str(doc["fy"])
    fact = next((f for f in doc["facts"] if f["key"] == figure and f["fy"] == fy), None)
    if fact is None:
        keys = ", ".join(dict.fromkeys(f["key"] for f in doc["facts"]))
        raise ReportError(f"{DOCUMENT} has no figure {figure!r} for FY {fy}; figures: {keys}")
    quantities = FIGURE_QUANTITIES.get(figure)
    if quantities is None or figure not in FIGURE_FACTORS:
        raise ReportError(
            f"figure {figure!r} is not computed from readings (an intensity or a row the"
            f" platform does not measure); explain one of {', '.join(FIGURE_QUANTITIES)}"
        )
    used = FIGURE_FACTORS[figure]
    factors = [u for u in doc["factors"] if u["for_fy"] == fy and u["factor"] in used]
    out = Explanation(fact, factors, quantities)
    part = _BRANCH_PART.get(figure)
    for row in doc["branches"]:
        if row["fy"] != fy:
            continue
        entry = {k: row[k] for k in ("branch_id", "site_name", "city", "state")}
        entry |= {q: row[q] for q in quantities} | {f"est_{q}": row[f"est_{q}"] for q in quantities}
        entry["part"] = row["D"] + row["E"] if part is None else row[part]
        entry["coverage_meter"] = row["coverage_meter"]
        out.branches.append(entry)
    out.branches.sort(key=lambda r: -float(r["part"] or 0.0))
    if branch is None:
        return out
    if branch not in {r["branch_id"] for r in out.branches}:
        raise ReportError(f"branch {branch!r} is not in the report for FY {fy}")
    start, end = fy_bounds(fy)
    mart = build_mart(session, start, end)
    frame = (
        mart.device_days.filter(pl.col("branch_id") == branch)
        .with_columns(pl.col("day").dt.strftime("%Y-%m").alias("month"))
        .group_by("device_id", "kind", "month")
        .agg(
            *(pl.col(q).sum() for q in quantities),
            *(pl.col(f"est_{q}").sum() for q in quantities),
            pl.col("readings").sum(),
            pl.col("expected").sum(),
        )
        .sort("device_id", "month")
    )
    out.devices = frame.to_dicts()
    if day is None:
        return out
    if not start <= day < end:
        raise ReportError(f"{day} is not in FY {fy}")
    out.readings = _readings(session, branch, day, quantities)
    if lineage is not None:
        utc_days = sorted({(ist_day_start(day) + timedelta(hours=h)).date() for h in (0, 23)})
        runs = sorted(
            {str(r["run_id"]) for d in utc_days for r in lineage.where(branch, d.isoformat())}
        )
        out.segments = lineage.segments_of(runs)
    return out


def _readings(
    session: Session, branch: str, day: date, quantities: tuple[str, ...]
) -> list[dict[str, Any]]:
    lo, hi = ist_day_start(day), ist_day_start(day + timedelta(days=1))
    rows: list[dict[str, Any]] = []
    by_dataset: dict[str, list[str]] = {}
    for q in quantities:
        dataset, column = _COUNTERS[q]
        by_dataset.setdefault(dataset, []).append(column)
    for dataset, columns in by_dataset.items():
        if dataset not in session.views:
            continue
        cols = ", ".join(dict.fromkeys(columns))
        # the day's readings and each device's last one before it (the first step's start)
        table = session.sql(
            f"""SELECT device_id, ts, seq, received_at, {cols},
                       lag(ts) OVER w AS previous_ts
                FROM {dataset}
                WHERE branch_id = '{_quote(branch)}'
                  AND ts >= TIMESTAMPTZ '{(lo - timedelta(days=2)).isoformat()}'
                  AND ts < TIMESTAMPTZ '{hi.isoformat()}'
                WINDOW w AS (PARTITION BY device_id ORDER BY ts, seq)
                ORDER BY device_id, ts, seq"""  # noqa: S608 - our view names, quoted branch
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        counters = [c for c in dict.fromkeys(columns) if c != "fuel_level_pct"]
        if counters:  # the step each reading adds (reset-aware, the mart's rule)
            frame = counter_steps(frame, counters).collect()
        if "fuel_level_pct" in columns:  # a fall burns fuel; a rise is a refill
            fall = pl.col("fuel_level_pct").shift(1).over("device_id") - pl.col("fuel_level_pct")
            frame = frame.with_columns(
                pl.when(fall > 0).then(fall).otherwise(0.0).alias("fuel_level_pct_fall")
            )
        frame = frame.filter(pl.col("ts") >= lo)
        for row in frame.to_dicts():
            rows.append({"dataset": dataset, **row})
    return rows


def _quote(value: str) -> str:
    return value.replace("'", "''")
