"""The ESG data pack: monthly energy by source and emissions per branch, per city, per state
and for the tenant, over any span of days, as CSV and Parquet, with the same record as a
BRSR report (the factors used for each month's financial year, the table versions read).

Columns of every table (``COLUMNS``): the grouping keys, ``month`` and ``fy``; the activity
data (grid import and export, solar generated and consumed on site, diesel litres, the DG's
kWh, shown and not counted); energy in GJ by source (grid electricity, solar electricity,
diesel) and in total; Scope 1 and Scope 2 in t CO2e; the estimated part of each; coverage
per device kind; ``proxy_factor`` when a factor of another year was used for the month.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from analytics.access import Session
from contracts import ContractRegistry
from durable.files import atomic_file
from lake.storage import Store
from reporting.brsr import YearFactors, factor_rows, year_factors
from reporting.factors import FactorTable, fy_of
from reporting.mart import build_mart
from reporting.record import header

__all__ = ["COLUMNS", "LEVELS", "esg_document", "write_esg_files"]

# table name -> its grouping keys (besides month and fy)
LEVELS: dict[str, list[str]] = {
    "branch": ["branch_id", "site_name", "city", "state"],
    "city": ["city", "state"],
    "state": ["state"],
    "tenant": [],
}
COLUMNS = [
    "grid_import_kwh",
    "grid_export_kwh",
    "solar_kwh",
    "solar_consumed_kwh",
    "diesel_l",
    "dg_kwh_not_counted",
    "grid_electricity_gj",
    "solar_electricity_gj",
    "diesel_gj",
    "total_gj",
    "scope1_t_co2e",
    "scope2_t_co2e",
    "estimated_total_gj",
    "estimated_scope1_t_co2e",
    "estimated_scope2_t_co2e",
    "coverage_meter",
    "coverage_solar",
    "coverage_dg",
    "proxy_factor",
]


def _factor_frame(factors: dict[str, YearFactors]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "fy": list(factors),
            "_gj_per_kwh": [f.gj_per_kwh.value for f in factors.values()],
            "_grid_t_per_mwh": [f.grid.value for f in factors.values()],
            "_diesel_gj_per_l": [f.diesel.gj_per_l for f in factors.values()],
            "_diesel_kg_per_l": [f.diesel.co2e_kg_per_l for f in factors.values()],
            "proxy_factor": [any(u.proxy for u in f.uses) for f in factors.values()],
        }
    )


def _figures(frame: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    c = pl.col
    solar_share = (
        pl.when(c("solar_kwh") > 0).then(c("est_solar_kwh") / c("solar_kwh")).otherwise(0.0)
    )
    out = frame.join(factors, on="fy", how="left").with_columns(
        pl.max_horizontal(c("solar_kwh") - c("grid_export_kwh"), pl.lit(0.0)).alias(
            "solar_consumed_kwh"
        ),
        c("dg_kwh").alias("dg_kwh_not_counted"),
    )
    out = out.with_columns(
        (c("grid_import_kwh") * c("_gj_per_kwh")).alias("grid_electricity_gj"),
        (c("solar_consumed_kwh") * c("_gj_per_kwh")).alias("solar_electricity_gj"),
        (c("diesel_l") * c("_diesel_gj_per_l")).alias("diesel_gj"),
        (c("diesel_l") * c("_diesel_kg_per_l") / 1000.0).alias("scope1_t_co2e"),
        (c("grid_import_kwh") / 1000.0 * c("_grid_t_per_mwh")).alias("scope2_t_co2e"),
        (
            c("est_grid_import_kwh") * c("_gj_per_kwh")
            + c("solar_consumed_kwh") * solar_share * c("_gj_per_kwh")
            + c("est_diesel_l") * c("_diesel_gj_per_l")
        ).alias("estimated_total_gj"),
        (c("est_diesel_l") * c("_diesel_kg_per_l") / 1000.0).alias("estimated_scope1_t_co2e"),
        (c("est_grid_import_kwh") / 1000.0 * c("_grid_t_per_mwh")).alias("estimated_scope2_t_co2e"),
    )
    out = out.with_columns(
        (c("grid_electricity_gj") + c("solar_electricity_gj") + c("diesel_gj")).alias("total_gj")
    )
    return out


def esg_document(
    session: Session,
    store: Store,
    registry: ContractRegistry,
    tenant: str,
    start: date,
    end: date,
    *,
    allow_proxy: bool = False,
    factor_version: int | None = None,
) -> dict[str, Any]:
    """The pack of IST days ``[start, end)`` as one document (its tables as rows)."""
    table = FactorTable.load(store, registry, factor_version)
    years = sorted({fy_of(start + timedelta(days=n)) for n in range((end - start).days)})
    factors = {y: year_factors(table, y, allow_proxy=allow_proxy) for y in years}
    mart = build_mart(session, start, end)
    frame = _factor_frame(factors)
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, keys in LEVELS.items():
        rolled = _figures(mart.periods([*keys, "fy"], "month"), frame)
        rolled = rolled.select(*keys, "month", "fy", *COLUMNS).sort([*keys, "month"])
        rows = rolled.to_dicts()
        for row in rows:
            for k, v in row.items():
                if isinstance(v, float):
                    row[k] = round(v, 6)
        tables[name] = rows
    return header(session, "esg", tenant, start, end) | {
        "parameters": {"allow_proxy_factor": allow_proxy},
        "columns": COLUMNS,
        "tables": tables,
        "factors": factor_rows(factors),
        "factor_table": {"table": table.rel, "version": table.version},
        "inputs": [{"table": rel, "version": v} for rel, v in session.read_versions().items()],
    }


def write_esg_files(doc: dict[str, Any], folder: Path) -> list[Path]:
    """Each table of the pack as ``esg-<level>-month.csv`` and ``.parquet``."""
    paths: list[Path] = []
    for name, keys in LEVELS.items():
        schema: dict[str, Any] = {k: pl.String for k in [*keys, "month", "fy"]}
        schema |= {c: pl.Float64 for c in COLUMNS if c != "proxy_factor"}
        schema["proxy_factor"] = pl.Boolean
        frame = pl.DataFrame(doc["tables"][name], schema=schema)
        csv_path = folder / f"esg-{name}-month.csv"
        with atomic_file(csv_path) as handle:
            frame.write_csv(handle)
        parquet_path = folder / f"esg-{name}-month.parquet"
        with atomic_file(parquet_path) as handle:
            pq.write_table(frame.to_arrow(), handle)
        paths += [csv_path, parquet_path]
    return paths
