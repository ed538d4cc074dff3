"""BRSR Principle 6: Essential Indicator 1 (energy, GJ) and Essential Indicator 7 (Scope 1
and Scope 2, t CO2e) for a financial year and the previous one, from the consumption mart.

Accounting for a branch (docs/REPORTING.md):

- grid import kWh -> non-renewable electricity (D) and location-based Scope 2 (grid factor of
  the year);
- DG diesel litres -> non-renewable fuel (E) and Scope 1; the kWh the DG generated are shown
  and never counted again (they are the diesel's energy);
- on-site solar kWh consumed on site (generation less what the meter exported) -> renewable
  electricity (A);
- B, C and F have no measured source on the platform: reported as 0 with that said.

Intensities are recomputed from the totals and the denominators given: per rupee of
turnover, per rupee adjusted for PPP (turnover / PPP conversion factor), per unit of physical
output. Every figure carries its XBRL concept, unit, decimals, whether a proxy factor touched
it and the part of it that comes from estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from reporting.factors import DieselFactors, FactorTable, FactorUse
from reporting.mart import QUANTITIES, Mart

__all__ = [
    "CONCEPTS",
    "Denominators",
    "Figure",
    "branch_rows",
    "brsr_figures",
    "factor_rows",
    "month_rows",
]


@dataclass(frozen=True, slots=True)
class Denominators:
    """What intensities are divided by, per financial year (None: not given)."""

    turnover_inr: dict[str, float] = field(default_factory=dict)
    ppp_factor: float | None = None  # INR per international dollar (PPP conversion factor)
    physical_output: dict[str, float] = field(default_factory=dict)
    output_unit: str | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    key: str  # A, B, C, ABC, D, E, F, DEF, total, EI_turnover, ..., S1, S2, ...
    concept: str
    label: str
    fy: str
    value: float | None
    unit: str
    decimals: int
    proxy: bool = False
    estimated: float = 0.0  # the part of value computed from estimated quantities
    formula: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "concept": self.concept,
            "label": self.label,
            "fy": self.fy,
            "value": None if self.value is None else round(self.value, self.decimals),
            "unit": self.unit,
            "decimals": self.decimals,
            "proxy": self.proxy,
            "estimated": round(self.estimated, self.decimals),
            "formula": self.formula,
        }


# key -> (XBRL concept as filed, label)
CONCEPTS: dict[str, tuple[str, str]] = {
    "A": ("TotalElectricityConsumptionFromRenewableSources", "Total electricity consumption (A)"),
    "B": ("TotalFuelConsumptionFromRenewableSources", "Total fuel consumption (B)"),
    "C": (
        "EnergyConsumptionThroughOtherSourcesFromRenewableSources",
        "Energy consumption through other sources (C)",
    ),
    "ABC": (
        "TotalEnergyConsumptionFromRenewableSources",
        "Total energy consumed from renewable sources (A+B+C)",
    ),
    "D": (
        "TotalElectricityConsumptionFromNonRenewableSources",
        "Total electricity consumption (D)",
    ),
    "E": ("TotalFuelConsumptionFromNonRenewableSources", "Total fuel consumption (E)"),
    "F": (
        "EnergyConsumptionThroughOtherSourcesFromNonRenewableSources",
        "Energy consumption through other sources (F)",
    ),
    "DEF": (
        "TotalEnergyConsumptionFromNonRenewableSources",
        "Total energy consumed from non-renewable sources (D+E+F)",
    ),
    "total": (
        "TotalEnergyConsumedFromRenewableAndNonRenewableSources",
        "Total energy consumed (A+B+C+D+E+F)",
    ),
    "EI_turnover": (
        "EnergyIntensityPerRupeeOfTurnover",
        "Energy intensity per rupee of turnover",
    ),
    "EI_ppp": (
        "EnergyIntensityPerRupeeOfTurnoverAdjustedForPurchasingPowerParity",
        "Energy intensity per rupee of turnover adjusted for PPP",
    ),
    "EI_output": (
        "EnergyIntensityInTermOfPhysicalOutput",
        "Energy intensity in terms of physical output",
    ),
    "S1": ("TotalScope1Emissions", "Total Scope 1 emissions"),
    "S2": ("TotalScope2Emissions", "Total Scope 2 emissions"),
    "SI_turnover": (
        "TotalScope1AndScope2EmissionsPerRupeeOfTurnover",
        "Total Scope 1 and Scope 2 emissions per rupee of turnover",
    ),
    "SI_ppp": (
        "TotalScope1AndScope2EmissionIntensityPerRupeeOfTurnoverAdjustedForPurchasingPowerParity",
        "Total Scope 1 and Scope 2 emission intensity per rupee of turnover adjusted for PPP",
    ),
    "SI_output": (
        "TotalScope1AndScope2EmissionIntensityInTermOfPhysicalOutput",
        "Total Scope 1 and Scope 2 emission intensity in terms of physical output",
    ),
}
_GJ, _T = 2, 3  # decimals of energy (GJ) and emissions (t CO2e) as filed
_INTENSITY = 12  # per rupee figures are small: decimals enough to keep them


@dataclass(frozen=True, slots=True)
class YearFactors:
    fy: str
    gj_per_kwh: FactorUse
    grid: FactorUse
    diesel: DieselFactors

    @property
    def uses(self) -> list[FactorUse]:
        return [self.gj_per_kwh, self.grid, *self.diesel.uses]


def factor_rows(factors: dict[str, YearFactors]) -> list[dict[str, Any]]:
    """Every factor row a report used, once per year it was used for, in a stable order."""
    uses = {
        (u.factor, u.version, u.variant, u.fy, u.for_fy): u.as_dict()
        for f in factors.values()
        for u in f.uses
    }
    return sorted(uses.values(), key=lambda u: (u["for_fy"], u["factor"]))


def year_factors(table: FactorTable, fy: str, *, allow_proxy: bool) -> YearFactors:
    return YearFactors(
        fy,
        table.pick("electricity_energy", fy, allow_proxy=allow_proxy),
        table.pick("grid_co2", fy, allow_proxy=allow_proxy),
        table.diesel(fy, allow_proxy=allow_proxy),
    )


def _totals(frame: pl.DataFrame) -> dict[str, float]:
    row = frame.row(0, named=True) if frame.height else {}
    return {k: float(row.get(k) or 0.0) for q in QUANTITIES for k in (q, f"est_{q}")}


def solar_consumed(q: dict[str, float]) -> tuple[float, float]:
    """On-site solar consumed (generation less export, never negative) and its estimated
    part (in proportion)."""
    consumed = max(q["solar_kwh"] - q["grid_export_kwh"], 0.0)
    share = q["est_solar_kwh"] / q["solar_kwh"] if q["solar_kwh"] > 0 else 0.0
    return consumed, consumed * share


def energy_and_emissions(q: dict[str, float], f: YearFactors) -> dict[str, float]:
    """The figures of one scope (a tenant, a branch, a month) from its quantities."""
    e = f.gj_per_kwh.value
    solar, solar_est = solar_consumed(q)
    out = {
        "A": solar * e,
        "A_est": solar_est * e,
        "D": q["grid_import_kwh"] * e,
        "D_est": q["est_grid_import_kwh"] * e,
        "E": q["diesel_l"] * f.diesel.gj_per_l,
        "E_est": q["est_diesel_l"] * f.diesel.gj_per_l,
        "S1": q["diesel_l"] * f.diesel.co2e_kg_per_l / 1000.0,
        "S1_est": q["est_diesel_l"] * f.diesel.co2e_kg_per_l / 1000.0,
        "S2": q["grid_import_kwh"] / 1000.0 * f.grid.value,
        "S2_est": q["est_grid_import_kwh"] / 1000.0 * f.grid.value,
    }
    return out


def brsr_figures(
    mart: Mart, factors: dict[str, YearFactors], denominators: Denominators
) -> list[Figure]:
    """Every figure of EI 1 and EI 7 for each financial year of ``factors``."""
    by_fy = mart.periods([], "fy")
    figures: list[Figure] = []
    for fy, f in factors.items():
        q = _totals(by_fy.filter(pl.col("fy") == fy))
        v = energy_and_emissions(q, f)
        grid_proxy = f.grid.proxy
        energy_proxy = f.gj_per_kwh.proxy or any(u.proxy for u in f.diesel.uses)

        def fig(
            key: str, value: float | None, unit: str, dec: int, fy: str = fy, **kw: Any
        ) -> Figure:
            concept, label = CONCEPTS[key]
            return Figure(key, concept, label, fy, value, unit, dec, **kw)

        abc = v["A"]
        def_ = v["D"] + v["E"]
        total = abc + def_
        total_est = v["A_est"] + v["D_est"] + v["E_est"]
        s12 = v["S1"] + v["S2"]
        s12_est = v["S1_est"] + v["S2_est"]
        figures += [
            fig("A", v["A"], "GJ", _GJ, proxy=f.gj_per_kwh.proxy, estimated=v["A_est"],
                formula="(solar generated - exported) kWh x electricity_energy"),
            fig("B", 0.0, "GJ", _GJ, formula="no renewable fuel is measured: 0"),
            fig("C", 0.0, "GJ", _GJ, formula="no other renewable source is measured: 0"),
            fig("ABC", abc, "GJ", _GJ, proxy=f.gj_per_kwh.proxy, estimated=v["A_est"],
                formula="A + B + C"),
            fig("D", v["D"], "GJ", _GJ, proxy=f.gj_per_kwh.proxy, estimated=v["D_est"],
                formula="grid import kWh x electricity_energy"),
            fig("E", v["E"], "GJ", _GJ, proxy=energy_proxy, estimated=v["E_est"],
                formula="DG diesel litres x diesel GJ/L"),
            fig("F", 0.0, "GJ", _GJ, formula="no other non-renewable source is measured: 0"),
            fig("DEF", def_, "GJ", _GJ, proxy=energy_proxy, estimated=v["D_est"] + v["E_est"],
                formula="D + E + F"),
            fig("total", total, "GJ", _GJ, proxy=energy_proxy, estimated=total_est,
                formula="A + B + C + D + E + F"),
        ]  # fmt: skip
        turnover = denominators.turnover_inr.get(fy)
        output = denominators.physical_output.get(fy)
        ppp = denominators.ppp_factor
        per_inr = "GJ/INR"
        figures += [
            fig("EI_turnover", _div(total, turnover), per_inr, _INTENSITY, proxy=energy_proxy,
                estimated=_div(total_est, turnover) or 0.0, formula="total / turnover (INR)"),
            fig("EI_ppp", _div(total, _ppp(turnover, ppp)), "GJ/INR (PPP-adjusted)", _INTENSITY,
                proxy=energy_proxy, estimated=_div(total_est, _ppp(turnover, ppp)) or 0.0,
                formula="total / (turnover / PPP conversion factor)"),
            fig("EI_output", _div(total, output),
                f"GJ/{denominators.output_unit}" if denominators.output_unit else "GJ/unit",
                6, proxy=energy_proxy, estimated=_div(total_est, output) or 0.0,
                formula="total / physical output"),
            fig("S1", v["S1"], "t CO2e", _T, proxy=any(u.proxy for u in f.diesel.uses),
                estimated=v["S1_est"], formula="diesel litres x kg CO2e/L / 1000"),
            fig("S2", v["S2"], "t CO2e", _T, proxy=grid_proxy, estimated=v["S2_est"],
                formula="grid import MWh x grid t CO2/MWh (location-based)"),
            fig("SI_turnover", _div(s12, turnover), "t CO2e/INR", _INTENSITY,
                proxy=grid_proxy, estimated=_div(s12_est, turnover) or 0.0,
                formula="(Scope 1 + Scope 2) / turnover (INR)"),
            fig("SI_ppp", _div(s12, _ppp(turnover, ppp)), "t CO2e/INR (PPP-adjusted)",
                _INTENSITY, proxy=grid_proxy, estimated=_div(s12_est, _ppp(turnover, ppp)) or 0.0,
                formula="(Scope 1 + Scope 2) / (turnover / PPP conversion factor)"),
            fig("SI_output", _div(s12, output),
                f"t CO2e/{denominators.output_unit}" if denominators.output_unit else "t CO2e/unit",
                6, proxy=grid_proxy, estimated=_div(s12_est, output) or 0.0,
                formula="(Scope 1 + Scope 2) / physical output"),
        ]  # fmt: skip
    return figures


def _div(value: float, by: float | None) -> float | None:
    return None if by is None or by == 0 else value / by


def _ppp(turnover: float | None, ppp: float | None) -> float | None:
    return None if turnover is None or ppp is None else turnover / ppp


def _rows(
    frame: pl.DataFrame, factors: dict[str, YearFactors], keys: list[str]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in frame.iter_rows(named=True):
        f = factors.get(str(row["fy"]))
        if f is None:
            continue
        q = {k: float(row.get(k) or 0.0) for qq in QUANTITIES for k in (qq, f"est_{qq}")}
        v = energy_and_emissions(q, f)
        solar, _ = solar_consumed(q)
        entry: dict[str, Any] = {k: row[k] for k in keys}
        entry |= {k: round(q[k], 6) for k in q}
        entry["solar_consumed_kwh"] = round(solar, 6)
        entry |= {k: round(v[k], 6) for k in ("A", "D", "E", "S1", "S2")}
        entry["total_gj"] = round(v["A"] + v["D"] + v["E"], 6)
        entry |= {
            f"coverage_{k}": None
            if row[f"coverage_{k}"] is None
            else round(row[f"coverage_{k}"], 6)
            for k in ("meter", "solar", "dg")
        }
        entry["estimated_steps"] = int(row["estimated_steps"])
        entry["counter_resets"] = int(row["counter_resets"])
        out.append(entry)
    return out


def branch_rows(mart: Mart, factors: dict[str, YearFactors]) -> list[dict[str, Any]]:
    """Per branch and financial year: quantities, figures and coverage."""
    frame = mart.periods(["branch_id", "site_name", "city", "state"], "fy")
    return _rows(frame, factors, ["branch_id", "site_name", "city", "state", "fy"])


def month_rows(mart: Mart, factors: dict[str, YearFactors]) -> list[dict[str, Any]]:
    """Per month (the tenant's branches together): quantities, figures and coverage."""
    frame = mart.periods(["fy"], "month")
    return _rows(frame, factors, ["month", "fy"])
