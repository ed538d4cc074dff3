"""Queries over the lake: its telemetry tables, a table as a frame, per-branch totals and
table counts. Plain values in (a ``Store``, a contract registry), no settings."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from contracts import ContractRegistry, load_registry
from lake.consumption import counter_steps, fuel_used
from lake.delta import files_per_partition, read_table, table_exists
from lake.layout import UNASSIGNED_TENANT, table_rel, tenants
from lake.storage import Store

__all__ = ["BranchTotals", "branch_totals", "lake_tables", "read_frame", "table_counts"]

_QUARANTINE = "quarantine"


def lake_tables(store: Store, registry: ContractRegistry | None = None) -> list[tuple[str, str]]:
    """(tenant, dataset) of every telemetry table present (the registry's readings datasets
    and the quarantine; the packaged contracts by default), unassigned quarantine included."""
    telemetry = (*(registry or load_registry()).readings_datasets, _QUARANTINE)
    out = [
        (t, d) for t in tenants(store) for d in telemetry if table_exists(store, table_rel(t, d))
    ]
    if table_exists(store, table_rel(UNASSIGNED_TENANT, _QUARANTINE)):
        out.append((UNASSIGNED_TENANT, _QUARANTINE))
    return out


def read_frame(
    store: Store, tenant: str, dataset: str, columns: list[str] | None = None
) -> pl.DataFrame:
    """A table of the lake as a frame (empty when the table does not exist)."""
    rel = table_rel(tenant, dataset)
    if not table_exists(store, rel):
        return pl.DataFrame()
    frame = pl.from_arrow(read_table(store, rel, columns=columns))
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass(frozen=True, slots=True)
class BranchTotals:
    branch_id: str
    grid_import_kwh: float
    solar_kwh: float
    dg_fuel_l: float
    dg_run_hours: float


def branch_totals(store: Store) -> dict[str, BranchTotals]:
    """Per-branch totals from the counters in the lake (reset-aware; never negative)."""
    sums: dict[str, dict[str, float]] = {}

    def add(frame: pl.DataFrame, key: str, column: str) -> None:
        for branch, value in frame.group_by("branch_id").agg(pl.sum(column)).iter_rows():
            sums.setdefault(str(branch), {})[key] = float(value)

    for tenant in tenants(store):
        meter = read_frame(
            store,
            tenant,
            "meter_readings",
            ["branch_id", "device_id", "seq", "ts", "energy_import_kwh"],
        )
        if meter.height:
            add(
                counter_steps(meter, ["energy_import_kwh"]).collect(),
                "grid_import_kwh",
                "energy_import_kwh_step",
            )
        solar = read_frame(
            store,
            tenant,
            "solar_readings",
            ["branch_id", "device_id", "seq", "ts", "energy_generated_kwh"],
        )
        if solar.height:
            add(
                counter_steps(solar, ["energy_generated_kwh"]).collect(),
                "solar_kwh",
                "energy_generated_kwh_step",
            )
        dg = read_frame(
            store,
            tenant,
            "dg_readings",
            ["branch_id", "device_id", "seq", "ts", "run_hours_h", "fuel_level_pct"],
        )
        if dg.height:
            add(counter_steps(dg, ["run_hours_h"]).collect(), "dg_run_hours", "run_hours_h_step")
            tanks = read_frame(store, tenant, "devices", ["device_id", "tank_capacity_l"])
            add(fuel_used(dg, tanks).collect(), "dg_fuel_l", "fuel_used_l")
    return {
        b: BranchTotals(
            branch_id=b,
            grid_import_kwh=v.get("grid_import_kwh", 0.0),
            solar_kwh=v.get("solar_kwh", 0.0),
            dg_fuel_l=v.get("dg_fuel_l", 0.0),
            dg_run_hours=v.get("dg_run_hours", 0.0),
        )
        for b, v in sorted(sums.items())
    }


def table_counts(
    store: Store, registry: ContractRegistry | None = None
) -> list[tuple[str, int, int]]:
    """(table, rows, active files) of every telemetry table."""
    out = []
    for tenant, dataset in lake_tables(store, registry):
        rel = table_rel(tenant, dataset)
        frame = read_frame(store, tenant, dataset, ["branch_id"])
        files = sum(files_per_partition(store, rel).values())
        out.append((rel, frame.height, files))
    return out
