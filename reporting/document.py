"""A BRSR report as a document: the figures, the tables behind them, the factors and the
versions read, as one JSON-able mapping (``report.json``), and its bundle on disk.

The document is the report's record of truth: the HTML, PDF and CSV files are rendered from
it, ``report verify`` recomputes it from the versions it names, and ``report explain`` breaks
its figures down. Field by field (format ``energylake.report.brsr/1``):

- ``tenant``, ``fy``, ``previous_fy``, ``generated_at``, ``principal``, ``purpose``,
  ``session`` (the access session's id), ``parameters`` (denominators, proxy allowed);
- ``facts``: every figure of both years (``brsr.Figure.as_dict``: concept, unit, decimals,
  proxy, estimated part, formula);
- ``quantities``: per year, the activity data (kWh, litres) and their estimated parts;
- ``branches`` (per branch and year) and ``months`` (per month): quantities, GJ, t CO2e,
  coverage, estimated steps, counter resets;
- ``factors``: each factor row used (version, variant, year, value, unit, source, proxy),
  and ``factor_table``: the table and version they were read at;
- ``inputs``: every lake table the session read, at its version (None: absent);
- ``method``: the accounting in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from analytics.access import Session
from contracts import ContractRegistry
from lake.storage import Store
from reporting.brsr import (
    Denominators,
    YearFactors,
    branch_rows,
    brsr_figures,
    factor_rows,
    month_rows,
    year_factors,
)
from reporting.factors import FactorTable, fy_bounds
from reporting.mart import QUANTITIES, Mart, build_mart
from reporting.record import header

__all__ = ["FORMAT", "BrsrRequest", "brsr_document", "previous_fy"]

FORMAT = "energylake.report.brsr/1"

METHOD = [
    "Energy comes from the devices' cumulative counters (reset-aware, never negative), per"
    " device and day in Asia/Kolkata; the financial year runs 1 April to 31 March (IST).",
    "Grid electricity imported (the meter at the grid incomer) is non-renewable electricity"
    " (D) and location-based Scope 2 at the year's grid emission factor.",
    "Diesel burnt by the DG sets (falls of the tank level times the tank's litres; a rise is a"
    " refill) is non-renewable fuel (E) at the diesel energy factor and Scope 1 at the diesel"
    " emission factor. The kWh the DG sets generated are not counted again: the diesel is"
    " their energy.",
    "On-site solar consumed on site (generation less what the meter exported to the grid) is"
    " renewable electricity (A). Renewable fuel (B) and other sources (C, F) are not measured"
    " by the platform and are reported as 0.",
    "Intensities are recomputed from the totals: per rupee of turnover, per rupee of turnover"
    " adjusted for PPP (turnover divided by the PPP conversion factor), per unit of physical"
    " output; left empty when the denominator is not given.",
    "Coverage is readings present over readings expected from each device's cadence since it"
    " was installed. Missing readings are never filled: a counter difference across a gap that"
    " crosses midnight is split over the days by time and that part is marked as an estimate;"
    " energy lost to a counter reset during a gap is not invented.",
    "A figure marked proxy used a factor published for another year (--allow-proxy-factor).",
]


def previous_fy(fy: str) -> str:
    start, _ = fy_bounds(fy)
    return f"{start.year - 1}-{start.year % 100:02d}"


@dataclass(frozen=True, slots=True)
class BrsrRequest:
    tenant: str
    fy: str
    denominators: Denominators = field(default_factory=Denominators)
    allow_proxy: bool = False
    factor_version: int | None = None  # the factor table's version (None: latest)


def brsr_document(
    session: Session, store: Store, registry: ContractRegistry, request: BrsrRequest
) -> tuple[dict[str, Any], Mart]:
    """The BRSR document of ``request`` read through ``session`` (its tenant only), and the
    mart it was computed from."""
    fy, prev = request.fy, previous_fy(request.fy)
    start, _ = fy_bounds(prev)
    _, end = fy_bounds(fy)
    table = FactorTable.load(store, registry, request.factor_version)
    factors: dict[str, YearFactors] = {
        y: year_factors(table, y, allow_proxy=request.allow_proxy) for y in (prev, fy)
    }
    mart = build_mart(session, start, end)
    facts = brsr_figures(mart, factors, request.denominators)
    by_fy = mart.periods([], "fy")
    quantities: dict[str, dict[str, float]] = {}
    for y in (prev, fy):
        row = by_fy.filter(pl.col("fy") == y)
        quantities[y] = {
            k: round(float(row[k][0]) if row.height else 0.0, 6)
            for q in QUANTITIES
            for k in (q, f"est_{q}")
        }
    d = request.denominators
    doc: dict[str, Any] = header(session, "brsr", request.tenant, start, end) | {
        "fy": fy,
        "previous_fy": prev,
        "parameters": {
            "turnover_inr": d.turnover_inr,
            "ppp_factor": d.ppp_factor,
            "physical_output": d.physical_output,
            "output_unit": d.output_unit,
            "allow_proxy_factor": request.allow_proxy,
        },
        "facts": [f.as_dict() for f in facts],
        "quantities": quantities,
        "dg_kwh_not_counted": {y: quantities[y]["dg_kwh"] for y in (prev, fy)},
        "branches": branch_rows(mart, factors),
        "months": month_rows(mart, factors),
        "factors": factor_rows(factors),
        "factor_table": {"table": table.rel, "version": table.version},
        "inputs": [{"table": rel, "version": v} for rel, v in session.read_versions().items()],
        "method": METHOD,
    }
    return doc, mart
