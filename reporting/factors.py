"""Emission and conversion factors: the versioned reference table ``platform/emission_factors``
(contract ``emission_factors``) and the choice of a factor for a financial year.

A factor row is (factor, version, variant, fy, value, unit, source, published_on). ``fy``
empty means valid for every year (a physical constant, an IPCC default). For a report of FY
*Y* each factor is taken from the rows of *Y* (the latest publication among them), else from
the year-independent rows; when neither exists the report is refused
(:class:`MissingFactorError`) unless a proxy is allowed: then the latest published year's
row is used and every figure it touches is marked as computed with a proxy.

Diesel per litre comes from a direct row (``diesel_energy_per_litre`` GJ/L,
``diesel_co2e_per_litre`` kg CO2e/L) when the table has one, else it is derived:
GJ/L = NCV (MJ/kg) x density (kg/L) / 1000, and kg CO2e/L = TJ/L x (CO2 + CH4 x GWP(CH4) +
N2O x GWP(N2O)) in kg/TJ, each input a named factor row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa

from contracts import ContractRegistry
from contracts.errors import ConfigError
from lake.reference import read_platform_reference
from lake.storage import Store
from reporting.errors import MissingFactorError, ReportError

__all__ = [
    "DATASET",
    "FACTORS",
    "DieselFactors",
    "FactorTable",
    "FactorUse",
    "fy_bounds",
    "fy_of",
]

DATASET = "emission_factors"
# factor -> the unit its rows must carry (a row in another unit is refused, never converted)
FACTORS: dict[str, str] = {
    "electricity_energy": "GJ/kWh",
    "grid_co2": "t CO2/MWh",
    "diesel_ncv": "MJ/kg",
    "diesel_density": "kg/L",
    "diesel_co2": "kg CO2/TJ",
    "diesel_ch4": "kg CH4/TJ",
    "diesel_n2o": "kg N2O/TJ",
    "gwp_ch4": "kg CO2e/kg",
    "gwp_n2o": "kg CO2e/kg",
    "diesel_energy_per_litre": "GJ/L",
    "diesel_co2e_per_litre": "kg CO2e/L",
}


def fy_of(day: date) -> str:
    """The Indian financial year (1 April to 31 March) of a day, as ``YYYY-YY``."""
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def fy_bounds(fy: str) -> tuple[date, date]:
    """First day and the day after the last of a financial year ``YYYY-YY``."""
    try:
        start = int(fy[:4])
        ok = len(fy) == 7 and fy[4] == "-" and int(fy[5:]) == (start + 1) % 100
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"financial year {fy!r} must be written YYYY-YY, e.g. 2025-26 (1 April 2025 to"
            " 31 March 2026)",
            setting="--fy",
            value=fy,
        )
    return date(start, 4, 1), date(start + 1, 4, 1)


@dataclass(frozen=True, slots=True)
class FactorUse:
    """One factor row as a report used it, for the year ``for_fy``."""

    factor: str
    version: str
    variant: str
    fy: str | None  # the row's year (None: every year)
    value: float
    unit: str
    source: str
    for_fy: str
    proxy: bool  # the row is another year's: the figures it touches are marked

    def as_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "version": self.version,
            "variant": self.variant,
            "fy": self.fy,
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "for_fy": self.for_fy,
            "proxy": self.proxy,
        }


@dataclass(frozen=True, slots=True)
class DieselFactors:
    gj_per_l: float
    co2e_kg_per_l: float
    uses: tuple[FactorUse, ...]
    derived: bool  # from NCV, density and emission factors (False: direct per-litre rows)


class FactorTable:
    """The factor table at one version of ``platform/emission_factors``."""

    def __init__(self, rows: pa.Table, version: int | None, rel: str) -> None:
        self.version = version
        self.rel = rel
        self._rows: list[dict[str, Any]] = rows.to_pylist()
        for row in self._rows:
            want = FACTORS.get(row["factor"])
            if want is None:
                raise ReportError(
                    f"{rel}: unknown factor {row['factor']!r} (known: {', '.join(FACTORS)})"
                )
            if row["unit"] != want:
                raise ReportError(
                    f"{rel}: factor {row['factor']} ({row['version']}) is in {row['unit']!r};"
                    f" reports take it in {want!r}: convert the row and load it again"
                )

    @classmethod
    def load(
        cls, store: Store, registry: ContractRegistry, version: int | None = None
    ) -> FactorTable:
        contract = registry.get(DATASET)
        rows, read = read_platform_reference(store, contract, version)
        return cls(rows, read, f"platform/{DATASET}")

    def has(self, factor: str) -> bool:
        return any(r["factor"] == factor for r in self._rows)

    def pick(self, factor: str, fy: str, *, allow_proxy: bool) -> FactorUse:
        """The row of ``factor`` for ``fy`` (see the module doc)."""
        rows = [r for r in self._rows if r["factor"] == factor]
        own = [r for r in rows if r["fy"] == fy] or [r for r in rows if r["fy"] is None]
        if own:
            row = max(own, key=lambda r: (r["published_on"], r["version"]))
            return _use(row, fy, proxy=False)
        years = sorted({str(r["fy"]) for r in rows if r["fy"] is not None})
        if not allow_proxy or not years:
            raise MissingFactorError(factor, fy, years)
        latest = [r for r in rows if r["fy"] == years[-1]]
        row = max(latest, key=lambda r: (r["published_on"], r["version"]))
        return _use(row, fy, proxy=True)

    def diesel(self, fy: str, *, allow_proxy: bool) -> DieselFactors:
        """GJ and kg CO2e per litre: each from its direct row when the table has one, else
        derived from NCV, density and the emission factors (module doc)."""
        uses: list[FactorUse] = []
        derived = False
        if self.has("diesel_energy_per_litre"):
            energy = self.pick("diesel_energy_per_litre", fy, allow_proxy=allow_proxy)
            gj_per_l = energy.value
            uses.append(energy)
        else:
            ncv = self.pick("diesel_ncv", fy, allow_proxy=allow_proxy)
            density = self.pick("diesel_density", fy, allow_proxy=allow_proxy)
            gj_per_l = ncv.value * density.value / 1000.0
            uses += [ncv, density]
            derived = True
        if self.has("diesel_co2e_per_litre"):
            co2e = self.pick("diesel_co2e_per_litre", fy, allow_proxy=allow_proxy)
            kg_per_l = co2e.value
            uses.append(co2e)
        else:
            if not derived:  # the litres' energy came from a direct row; CO2 needs NCV x density
                ncv = self.pick("diesel_ncv", fy, allow_proxy=allow_proxy)
                density = self.pick("diesel_density", fy, allow_proxy=allow_proxy)
                uses += [ncv, density]
                tj_per_l = ncv.value * density.value / 1e6
            else:
                tj_per_l = gj_per_l / 1000.0
            names = ("diesel_co2", "diesel_ch4", "diesel_n2o", "gwp_ch4", "gwp_n2o")
            co2, ch4, n2o, gwp_ch4, gwp_n2o = (
                self.pick(n, fy, allow_proxy=allow_proxy) for n in names
            )
            kg_per_tj = co2.value + ch4.value * gwp_ch4.value + n2o.value * gwp_n2o.value
            kg_per_l = tj_per_l * kg_per_tj
            uses += [co2, ch4, n2o, gwp_ch4, gwp_n2o]
            derived = True
        return DieselFactors(gj_per_l, kg_per_l, tuple(uses), derived=derived)


def _use(row: dict[str, Any], fy: str, *, proxy: bool) -> FactorUse:
    return FactorUse(
        factor=str(row["factor"]),
        version=str(row["version"]),
        variant=str(row["variant"]),
        fy=None if row["fy"] is None else str(row["fy"]),
        value=float(row["value"]),
        unit=str(row["unit"]),
        source=str(row["source"]),
        for_fy=fy,
        proxy=proxy,
    )
