"""Golden BRSR cases from hand-written readings (issue 16, point 5): the worked example (one
branch-year), the financial-year boundary, a counter reset, a DG run across midnight, a
month of missing data, and a missing factor."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from reporting.brsr import Denominators
from reporting.document import BrsrRequest, brsr_document
from reporting.errors import MissingFactorError
from reporting.mart import build_mart
from tests.reporting.golden_lake import (
    GOLDEN,
    TENANT,
    Branch,
    Device,
    GoldenLake,
    counter_series,
    ist,
)

FY = "2023-24"
FY_START, FY_END = date(2023, 4, 1), date(2024, 4, 1)


def _facts(doc: dict[str, Any], fy: str) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in doc["facts"] if f["fy"] == fy}


def _dg_runs(device: str, branch: str, months: int) -> list[dict[str, Any]]:
    """A DG read every 15 min all year: its tank at 80 %, and on the 10th of each month a run
    from 10:00 to 12:00 IST burning 50 % of 200 L (100 L), refilled at 12:15; 50 kWh a run."""
    rows: list[dict[str, Any]] = []
    start, end = ist(FY_START), ist(FY_END)
    run_days = [date(2023 + (3 + m) // 12, (3 + m) % 12 + 1, 10) for m in range(months)]
    runs = [(ist(d, 10), ist(d, 12)) for d in run_days]
    t, generated = start, 0.0
    while t <= end:
        level = 80.0
        for a, b in runs:
            if a <= t <= b:
                level = 80.0 - 50.0 * (t - a) / (b - a)
                generated = 50.0 * runs.index((a, b)) + 50.0 * (t - a) / (b - a)
            elif t > b:
                generated = max(generated, 50.0 * (runs.index((a, b)) + 1))
        rows.append(
            {"device_id": device, "branch_id": branch, "ts": t, "fuel_level_pct": level,
             "energy_generated_kwh": generated, "status": "stopped"}
        )  # fmt: skip
        t += timedelta(minutes=15)
    return rows


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> GoldenLake:
    lake = GoldenLake(
        tmp_path_factory.mktemp("worked"), factors=GOLDEN / "factors-worked-example.csv"
    )
    lake.reference(
        [Branch("kaveri-b1")],
        [
            Device("em-1", "kaveri-b1", "meter"),
            Device("pv-1", "kaveri-b1", "solar"),
            Device("dg-1", "kaveri-b1", "dg", tank_capacity_l=200.0),
        ],
    )
    start, end = ist(FY_START), ist(FY_END)
    grid = counter_series("em-1", "kaveri-b1", start, end, 900, 60_000.0, "energy_import_kwh")
    for r in grid:
        r["energy_export_kwh"] = 0.0
    lake.readings("meter_readings", grid)
    lake.readings(
        "solar_readings",
        counter_series("pv-1", "kaveri-b1", start, end, 900, 8_000.0, "energy_generated_kwh"),
    )
    lake.readings("dg_readings", _dg_runs("dg-1", "kaveri-b1", 12))
    return lake


def test_the_worked_example_gives_the_golden_figures(worked: GoldenLake) -> None:
    expected = json.loads((GOLDEN / "worked-example.expected.json").read_text())
    with worked.session() as session:
        doc, _ = brsr_document(
            session,
            worked.store,
            worked.registry,
            BrsrRequest(TENANT, FY, allow_proxy=True),
        )
    facts = _facts(doc, FY)
    for key, (value, unit) in expected["facts"].items():
        assert facts[key]["value"] == pytest.approx(value, abs=1e-9), key
        assert facts[key]["unit"] == unit
        assert facts[key]["estimated"] == 0.0, key
    for name, value in expected["quantities"].items():
        assert doc["quantities"][FY][name] == pytest.approx(value, rel=1e-9), name
    # the DG's kWh are shown, never counted: the total is A + D + E only
    assert doc["dg_kwh_not_counted"][FY] == pytest.approx(600.0)
    assert facts["total"]["value"] == pytest.approx(28.8 + 216.0 + 1200 * 0.035905, abs=0.005)
    # this year's own grid factor (CEA v20.0, FY 2023-24): no proxy on Scope 2 ...
    assert not facts["S2"]["proxy"]
    used = {(u["factor"], u["for_fy"]): u for u in doc["factors"]}
    assert used[("grid_co2", FY)]["version"] == "CEA CO2 Baseline Database v20.0"
    assert used[("diesel_co2e_per_litre", FY)]["value"] == 2.68
    # ... while FY 2022-23 has none: its Scope 2 used the latest published one, marked
    assert _facts(doc, "2022-23")["S2"]["proxy"]
    assert used[("grid_co2", "2022-23")]["proxy"]
    # full coverage: 96 readings a day, every day, on every device
    branch = next(b for b in doc["branches"] if b["fy"] == FY)
    for kind in ("meter", "solar", "dg"):
        assert branch[f"coverage_{kind}"] == pytest.approx(1.0, abs=1e-4), kind
    assert len([m for m in doc["months"] if m["fy"] == FY]) == 12


def test_intensities_are_recomputed_from_the_totals(worked: GoldenLake) -> None:
    denominators = Denominators(
        turnover_inr={FY: 2.0e9}, ppp_factor=20.0, physical_output={FY: 1000.0},
        output_unit="transactions",
    )  # fmt: skip
    with worked.session() as session:
        doc, _ = brsr_document(
            session, worked.store, worked.registry,
            BrsrRequest(TENANT, FY, denominators=denominators, allow_proxy=True),
        )  # fmt: skip
    facts = _facts(doc, FY)
    total = facts["total"]["value"]
    assert facts["EI_turnover"]["value"] == pytest.approx(total / 2.0e9, rel=1e-3)
    assert facts["EI_ppp"]["value"] == pytest.approx(total / (2.0e9 / 20.0), rel=1e-3)
    assert facts["EI_output"]["value"] == pytest.approx(total / 1000.0, rel=1e-3)
    assert facts["EI_output"]["unit"] == "GJ/transactions"
    s12 = facts["S1"]["value"] + facts["S2"]["value"]
    assert facts["SI_turnover"]["value"] == pytest.approx(s12 / 2.0e9, rel=1e-3)
    # no denominator for the previous year: its intensities are left empty, not zero
    assert _facts(doc, "2022-23")["EI_turnover"]["value"] is None


def test_the_financial_year_boundary_is_midnight_ist(tmp_path: Path) -> None:
    """31 March 23:59 IST is 18:29 UTC: a reading at that time is the old year's, and the
    interval that ends at 00:00 IST on 1 April is the old year's too."""
    lake = GoldenLake(tmp_path)
    lake.reference([Branch("kaveri-b1")], [Device("em-1", "kaveri-b1", "meter", cadence_s=60)])
    last = date(2024, 3, 31)
    assert ist(last, 23, 59).strftime("%H:%M") == "18:29"  # UTC
    rows = counter_series(
        "em-1", "kaveri-b1", ist(last, 23, 50), ist(date(2024, 4, 1), 0, 10), 60, 20.0,
        "energy_import_kwh", base=1000.0,
    )  # fmt: skip
    # and one reading straddling midnight by 30 s each side: its step is split by time
    rows.append(
        {"device_id": "em-1", "branch_id": "kaveri-b1", "ts": ist(date(2024, 4, 1), 0, 10, 30),
         "energy_import_kwh": 1021.0}
    )  # fmt: skip
    lake.readings("meter_readings", rows)
    with lake.session() as session:
        mart = build_mart(session, date(2024, 3, 31), date(2024, 4, 2))
    fy = mart.periods([], "fy")
    by_fy = dict(zip(fy["fy"].to_list(), fy["grid_import_kwh"].to_list(), strict=True))
    assert by_fy["2023-24"] == pytest.approx(10.0)  # 23:50 -> 00:00, ten steps of 1 kWh
    assert by_fy["2024-25"] == pytest.approx(11.0)  # 00:00 -> 00:10:30
    assert fy["est_grid_import_kwh"].sum() == 0.0


def test_a_counter_reset_mid_year_counts_both_runs_and_is_counted(tmp_path: Path) -> None:
    lake = GoldenLake(tmp_path)
    lake.reference([Branch("kaveri-b1")], [Device("em-1", "kaveri-b1", "meter", cadence_s=3600)])
    mid = ist(date(2023, 10, 1))
    first = counter_series(
        "em-1", "kaveri-b1", ist(FY_START), mid, 3600, 30_000.0, "energy_import_kwh",
        base=512_000.0,
    )  # fmt: skip
    # the meter is replaced: the next reading starts again near zero
    second = counter_series(
        "em-1", "kaveri-b1", mid + timedelta(hours=1), ist(FY_END), 3600, 30_000.0,
        "energy_import_kwh", base=2.0,
    )  # fmt: skip
    lake.readings("meter_readings", first + second)
    with lake.session() as session:
        doc, mart = brsr_document(
            session, lake.store, lake.registry, BrsrRequest(TENANT, FY, allow_proxy=True)
        )
    assert doc["quantities"][FY]["grid_import_kwh"] == pytest.approx(60_002.0, rel=1e-9)
    assert mart.device_days["counter_resets"].sum() == 1
    branch = next(b for b in doc["branches"] if b["fy"] == FY)
    assert branch["counter_resets"] == 1
    assert all(v >= 0 for v in mart.device_days["grid_import_kwh"].to_list())  # never negative


def test_a_dg_run_across_midnight_is_split_between_the_days(tmp_path: Path) -> None:
    lake = GoldenLake(tmp_path)
    lake.reference(
        [Branch("kaveri-b1")],
        [Device("dg-1", "kaveri-b1", "dg", cadence_s=600, tank_capacity_l=100.0)],
    )
    day = date(2023, 6, 10)
    rows = []
    t = ist(day, 22, 0)
    while t <= ist(day + timedelta(days=1), 2, 0):
        running = ist(day, 23, 0) <= t <= ist(day + timedelta(days=1), 1, 0)
        burnt = (t - ist(day, 23, 0)).total_seconds() / 7200 * 40.0 if running else 0.0
        if t > ist(day + timedelta(days=1), 1, 0):
            burnt = 40.0
        rows.append(
            {"device_id": "dg-1", "branch_id": "kaveri-b1", "ts": t,
             "fuel_level_pct": 90.0 - burnt, "status": "running" if running else "stopped"}
        )  # fmt: skip
        t += timedelta(minutes=10)
    lake.readings("dg_readings", rows)
    with lake.session() as session:
        mart = build_mart(session, day, day + timedelta(days=2))
    litres = dict(
        zip(mart.device_days["day"].to_list(), mart.device_days["diesel_l"].to_list(), strict=True)
    )
    assert litres[day] == pytest.approx(20.0)  # 23:00 -> 00:00: 40 % of 100 L over 2 h, half
    assert litres[day + timedelta(days=1)] == pytest.approx(20.0)
    assert mart.device_days["est_diesel_l"].sum() == 0.0


def _meter_year_with_gap(lake: GoldenLake, *, reset_after_gap: bool) -> None:
    lake.reference([Branch("kaveri-b1")], [Device("em-1", "kaveri-b1", "meter", cadence_s=3600)])
    rows = counter_series(
        "em-1", "kaveri-b1", ist(FY_START), ist(FY_END), 3600, 8784.0, "energy_import_kwh"
    )  # 1 kWh an hour, 366 days
    gone = [r for r in rows if ist(date(2023, 11, 1)) < r["ts"] < ist(date(2023, 12, 1))]
    kept = [r for r in rows if r not in gone]
    if reset_after_gap:  # the meter came back as a new one, counting from zero
        back = ist(date(2023, 12, 1))
        first_back = next(r for r in kept if r["ts"] >= back)["energy_import_kwh"]
        for r in kept:
            if r["ts"] >= back:
                r["energy_import_kwh"] -= first_back
    lake.readings("meter_readings", kept)


def test_a_month_of_missing_data_is_shown_as_coverage_and_its_split_as_estimate(
    tmp_path: Path,
) -> None:
    lake = GoldenLake(tmp_path)
    _meter_year_with_gap(lake, reset_after_gap=False)
    with lake.session() as session:
        doc, _ = brsr_document(
            session, lake.store, lake.registry, BrsrRequest(TENANT, FY, allow_proxy=True)
        )
    q = doc["quantities"][FY]
    # the counter kept counting: the year's total is measured ...
    assert q["grid_import_kwh"] == pytest.approx(8784.0)
    # ... but how November's 720 kWh fell over its days is not: the split is an estimate
    assert q["est_grid_import_kwh"] == pytest.approx(720.0, abs=1.0)
    d = _facts(doc, FY)["D"]
    assert d["estimated"] == pytest.approx(720.0 * 0.0036, abs=0.01)
    november = next(m for m in doc["months"] if m["month"] == "2023-11")
    assert november["coverage_meter"] < 0.01
    assert november["est_grid_import_kwh"] == pytest.approx(november["grid_import_kwh"])
    branch = next(b for b in doc["branches"] if b["fy"] == FY)
    assert branch["coverage_meter"] == pytest.approx((8785 - 719) / 8784, abs=1e-3)
    assert branch["estimated_steps"] == 1


def test_a_month_lost_to_a_reset_is_missing_never_invented(tmp_path: Path) -> None:
    lake = GoldenLake(tmp_path)
    _meter_year_with_gap(lake, reset_after_gap=True)
    with lake.session() as session:
        doc, mart = brsr_document(
            session, lake.store, lake.registry, BrsrRequest(TENANT, FY, allow_proxy=True)
        )
    q = doc["quantities"][FY]
    assert q["grid_import_kwh"] == pytest.approx(8784.0 - 720.0, abs=1.0)
    november = mart.device_days.filter(pl.col("day").dt.month() == 11)
    assert november["grid_import_kwh"].sum() == pytest.approx(0.0, abs=1.0)
    assert q["est_grid_import_kwh"] == pytest.approx(0.0, abs=1.0)


def test_a_missing_factor_is_refused_with_its_name(tmp_path: Path) -> None:
    lake = GoldenLake(tmp_path)  # the shipped factors: the grid's only for FY 2023-24
    lake.reference([Branch("kaveri-b1")], [Device("em-1", "kaveri-b1", "meter")])
    with lake.session() as session, pytest.raises(MissingFactorError) as raised:
        brsr_document(session, lake.store, lake.registry, BrsrRequest(TENANT, "2025-26"))
    assert raised.value.factor == "grid_co2"
    assert raised.value.fy == "2024-25"  # the previous year is needed too, and first
    assert "--allow-proxy-factor" in str(raised.value)
    assert raised.value.available == ["2023-24"]
    with lake.session() as session:
        doc, _ = brsr_document(
            session, lake.store, lake.registry, BrsrRequest(TENANT, "2025-26", allow_proxy=True)
        )
    assert _facts(doc, "2025-26")["S2"]["proxy"]
    assert not _facts(doc, "2025-26")["D"]["proxy"]  # kWh to GJ holds for every year
