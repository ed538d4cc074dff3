"""The CAQM DG operation log (issue 16, points 7 and 8): runs from hand-written DG readings,
the GRAP stage and the rule of each set's class, daily caps, flags; the append-only,
hash-chained log (idempotent, corrections, tamper detection); CSV and PDF per set and month."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from audit.query import read_records
from lake.reference import load_platform_reference
from reporting.dglog import LogAppend, append_log, detect_runs, dg_log_document, evaluate
from reporting.shipped import shipped_file
from tests.reporting.golden_lake import PRINCIPAL, TENANT, Branch, Device, GoldenLake, ist

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
DAY = date(2025, 11, 10)  # GRAP stage II in force from this day (the test's calendar)
CADENCE_MIN = 10


def _dg_rows(
    device: str,
    branch: str,
    runs: list[tuple[datetime, datetime]],
    *,
    until: datetime,
    skip: tuple[datetime, datetime] | None = None,
    reset_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """A DG read every 10 minutes from the day before DAY until ``until``: running (1500 rpm,
    60 % load, 20 kWh and 2 % of the tank an hour) inside ``runs``, stopped outside."""
    rows: list[dict[str, Any]] = []
    t = ist(DAY - timedelta(days=1))
    kwh, level = 1000.0, 90.0
    while t <= until:
        on = any(a <= t < b for a, b in runs)  # the status at t
        if any(a < t <= b for a, b in runs):  # the interval the reading closes ran
            kwh += 20.0 * CADENCE_MIN / 60
            level -= 2.0 * CADENCE_MIN / 60
        if reset_at is not None and t == reset_at:
            kwh = 0.5  # the controller's counter was reset mid-run
        if skip is None or not skip[0] <= t < skip[1]:
            rows.append(
                {"device_id": device, "branch_id": branch, "ts": t,
                 "status": "running" if on else "stopped",
                 "engine_speed_rpm": 1500.0 if on else 0.0, "load_pct": 60.0 if on else 0.0,
                 "energy_generated_kwh": kwh, "fuel_level_pct": level}
            )  # fmt: skip
        t += timedelta(minutes=CADENCE_MIN)
    return rows


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> GoldenLake:
    root = tmp_path_factory.mktemp("dglog")
    lake = GoldenLake(root)
    lake.reference(
        [
            Branch("kaveri-ggn", city="Gurugram", state="Haryana", ncr=True),
            Branch("kaveri-bom", city="Mumbai", state="Maharashtra"),
        ],
        [
            Device("dg-a", "kaveri-ggn", "dg", cadence_s=600, tank_capacity_l=200.0),
            Device("dg-b", "kaveri-ggn", "dg", cadence_s=600, tank_capacity_l=100.0),
            Device("dg-c", "kaveri-ggn", "dg", cadence_s=600, tank_capacity_l=500.0),
            Device("dg-d", "kaveri-bom", "dg", cadence_s=600, tank_capacity_l=200.0),
        ],
    )
    _registry(lake)
    # the rules as shipped, but the 19-125 kW dual-fuel class capped at 2 h a day (as an
    # earlier GRAP rule did): the cap is data
    rules = pacsv.read_csv(str(shipped_file("dg_rules")))
    caps = [2.0 if r == "dual-fuel-19-125" else None for r in rules["rule_id"].to_pylist()]
    rules = rules.set_column(
        rules.schema.get_field_index("daily_cap_h"), "daily_cap_h", pa.array(caps, pa.float64())
    )
    pacsv.write_csv(rules, root / "dg_rules.csv")
    load_platform_reference(lake.store, root / "dg_rules.csv", lake.registry.get("dg_rules"))
    (root / "grap.csv").write_text(
        "region,starts_at,ends_at,stage,order_reference,source\n"
        f"NCR,{ist(DAY).isoformat()},{ist(DAY + timedelta(days=2)).isoformat()},2,"
        "EXAMPLE-GRAP-II,a test calendar (not an order)\n"
    )
    load_platform_reference(lake.store, root / "grap.csv", lake.registry.get("grap_calendar"))
    end = ist(DAY + timedelta(days=1), 6)
    rows = _dg_rows("dg-a", "kaveri-ggn", [(ist(DAY, 22), ist(DAY + timedelta(days=1), 1))],
                    until=end, skip=(ist(DAY, 23), ist(DAY, 23, 40)))  # fmt: skip
    rows += _dg_rows(
        "dg-b", "kaveri-ggn",
        [(ist(DAY, 9), ist(DAY, 10, 30)), (ist(DAY, 15), ist(DAY, 16)),
         (ist(DAY + timedelta(days=1), 5), end + timedelta(hours=1))],
        until=end,
    )  # fmt: skip
    rows += _dg_rows("dg-c", "kaveri-ggn", [(ist(DAY, 12), ist(DAY, 18))], until=end,
                     reset_at=ist(DAY, 14))  # fmt: skip
    rows += _dg_rows("dg-d", "kaveri-bom", [(ist(DAY, 12), ist(DAY, 13))], until=end)
    lake.readings("dg_readings", rows)
    return lake


def _registry(lake: GoldenLake) -> None:
    """The DG sets' asset register: ratings, fuel, emission control, certificates."""
    from deltalake import write_deltalake

    from lake.delta import open_table, read_table
    from lake.layout import table_rel

    rel = table_rel(TENANT, "devices")
    rows = read_table(lake.store, rel).to_pylist()
    register = {
        "dg-a": (100.0, "diesel", "none", None),
        "dg-b": (60.0, "dual_fuel", "dual_fuel", None),
        "dg-c": (150.0, "diesel", "cpcb_iv_plus", "TA-2024-0042"),
        "dg-d": (100.0, "diesel", "none", None),
    }
    for row in rows:
        kw, fuel, control, cert = register[row["device_id"]]
        row |= {"rated_power_kw": kw, "fuel_type": fuel, "emission_control": control}
        row |= {"certificate_ref": cert, "updated_at": datetime(2025, 1, 1, tzinfo=UTC)}
    schema = lake.registry.get("devices").arrow_schema()
    write_deltalake(
        open_table(lake.store, rel), pa.Table.from_pylist(rows, schema=schema), mode="overwrite"
    )


def _runs(lake: GoldenLake) -> dict[str, list[dict[str, Any]]]:
    with lake.session() as session:
        doc = dg_log_document(
            session, lake.store, lake.registry, TENANT, DAY, DAY + timedelta(days=2)
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for run in doc["runs"]:
        out.setdefault(run["device_id"], []).append(run)
    return out


def test_runs_stages_caps_and_flags(lake: GoldenLake) -> None:
    runs = _runs(lake)
    # dg-b: two closed runs that day (1.5 h + 1 h) over the class's 2 h cap; the third is
    # still running at the tenant's last reading, and the data go on for a day and a half
    # after it (the window's end): the set fell silent, its run is logged to its last
    # reading with DATA_GAP
    b = runs["dg-b"]
    assert [r["start"][:16] for r in b] == [
        ist(DAY, 9).isoformat()[:16],
        ist(DAY, 15).isoformat()[:16],
        ist(DAY + timedelta(days=1), 5).isoformat()[:16],
    ]
    assert b[2]["flags"] == ["DATA_GAP"]
    assert b[2]["stop"][:16] == ist(DAY + timedelta(days=1), 6).isoformat()[:16]
    assert [r["duration_h"] for r in b] == [
        pytest.approx(1.5),
        pytest.approx(1.0),
        pytest.approx(1.0),
    ]
    assert b[0]["rule"] == "dual-fuel-19-125"
    assert b[0]["daily_cap_h"] == 2.0
    assert b[0]["stage"] == 2
    assert b[0]["grap_order"] == "EXAMPLE-GRAP-II"
    assert "OVER_DAILY_CAP" not in b[0]["flags"]
    assert b[1]["flags"] == ["OVER_DAILY_CAP"]
    assert b[1]["day_total_h"] == {DAY.isoformat(): pytest.approx(2.5)}
    assert b[0]["kwh"] == pytest.approx(30.0)  # 20 kWh an hour
    assert b[0]["fuel_l"] == pytest.approx(3.0)  # 2 % of 100 L an hour
    assert b[0]["avg_load_pct"] == pytest.approx(60.0)
    # dg-a: no emission control: emergency services only under GRAP; across midnight IST,
    # its hours split between the days; 40 minutes of readings missing inside the run
    (a,) = runs["dg-a"]
    assert a["rule"] == "other-sets-emergency"
    assert set(a["flags"]) == {"EMERGENCY_ONLY", "GAP_IN_RUN"}
    assert a["duration_h"] == pytest.approx(3.0)
    assert a["day_total_h"] == {
        DAY.isoformat(): pytest.approx(2.0),
        (DAY + timedelta(days=1)).isoformat(): pytest.approx(1.0),
    }
    assert a["kwh"] == pytest.approx(60.0)  # the counter's steps over the gap still count
    # dg-c: CPCB IV+ with its certificate: allowed, no flag; its counter reset mid-run
    (c,) = runs["dg-c"]
    assert c["rule"] == "cpcb-iv-plus"
    assert c["flags"] == []
    # 6 h at 20 kWh an hour, less the interval the reset hid (only the new value counts)
    assert c["kwh"] == pytest.approx(120.0 - 20.0 / 6 + 0.5, abs=1e-3)  # kept to 3 places
    # dg-d: outside the NCR: logged, rules not applicable
    (d,) = runs["dg-d"]
    assert d["flags"] == ["NOT_IN_NCR"]
    assert d["stage"] is None


def _cli(lake: GoldenLake, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENERGYLAKE, "report", *args, "--data-dir", str(lake.settings.data_dir)],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _dg_log(lake: GoldenLake) -> subprocess.CompletedProcess[str]:
    return _cli(
        lake, "dg-log", "--tenant", TENANT, "--from", DAY.isoformat(),
        "--to", (DAY + timedelta(days=1)).isoformat(), "--as", PRINCIPAL,
    )  # fmt: skip


def _folder(result: subprocess.CompletedProcess[str]) -> Path:
    line = next(x for x in result.stdout.splitlines() if x.startswith("report: "))
    return Path(line.removeprefix("report: ").strip())


def _records(lake: GoldenLake) -> list[dict[str, Any]]:
    folder = lake.settings.data_dir / "reports" / f"dg-log-{TENANT}"
    return [
        json.loads(line)
        for f in sorted(folder.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_the_log_is_appended_once_corrected_never_rewritten_and_verified(
    lake: GoldenLake,
) -> None:
    first = _dg_log(lake)
    assert first.returncode == 0, first.stderr
    assert "6 appended, 0 corrected, 0 already logged" in first.stdout
    folder = _folder(first)
    names = {p.name for p in folder.iterdir()}
    for s in ("dg-a", "dg-b", "dg-c", "dg-d"):
        assert f"dg-log-{s}-2025-11.csv" in names
        assert f"dg-log-{s}-2025-11.pdf" in names
    with (folder / "dg-log-dg-b-2025-11.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["flags"] for r in rows] == ["", "OVER_DAILY_CAP", "DATA_GAP"]
    assert (folder / "dg-log-dg-b-2025-11.pdf").read_bytes().startswith(b"%PDF-")
    # the lineage run names the lake tables and the rules and calendar at their versions
    doc = json.loads((folder / "report.json").read_text())
    events = lake.settings.data_dir / "lineage" / "events"
    complete = next(
        e
        for day in sorted(events.glob("*.jsonl"))
        for e in map(json.loads, day.read_text().splitlines())
        if e["run"]["runId"] == doc["lineage_run"] and e["eventType"] == "COMPLETE"
    )
    names = {i["name"] for i in complete["inputs"]}
    assert {"platform/dg_rules", "platform/grap_calendar", f"tenants/{TENANT}/dg_readings"} <= names
    # again: nothing new
    again = _dg_log(lake)
    assert "0 appended, 0 corrected, 6 already logged" in again.stdout
    before = _records(lake)
    # a late reading fills dg-a's gap: the run loses its GAP_IN_RUN flag
    lake.readings(
        "dg_readings",
        [{"device_id": "dg-a", "branch_id": "kaveri-ggn", "ts": ist(DAY, 23, 20),
          "status": "running", "engine_speed_rpm": 1500.0, "load_pct": 60.0,
          "energy_generated_kwh": 1000.0 + 8 * 20.0 / 6, "fuel_level_pct": 90.0 - 8 * 2.0 / 6}],
    )  # fmt: skip
    late = _dg_log(lake)
    assert "0 appended, 1 corrected, 5 already logged" in late.stdout
    after = _records(lake)
    assert after[: len(before)] == before  # nothing rewritten
    correction = after[-1]
    assert correction["event"] == "dg_run_correction"
    original = next(r for r in before if r.get("run_key") == correction["run_key"])
    assert correction["corrects"] == original["seq"]
    assert correction["changes"] == {
        "flags": [["EMERGENCY_ONLY", "GAP_IN_RUN"], ["EMERGENCY_ONLY"]]
    }
    verified = _cli(lake, "verify", str(_folder(late)), "--as", PRINCIPAL)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "identical" in verified.stdout


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_any_change_to_the_log_is_detected(lake: GoldenLake, tamper: str, tmp_path: Path) -> None:
    import shutil

    result = _dg_log(lake)
    report = _folder(result)
    folder = lake.settings.data_dir / "reports" / f"dg-log-{TENANT}"
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    try:
        day = sorted(folder.glob("*.jsonl"))[0]
        lines = day.read_text().splitlines(keepends=True)
        if tamper == "edit":
            lines[1] = lines[1].replace('"kwh":', '"kwh":1', 1)
        elif tamper == "delete":
            del lines[1]
        else:
            lines[1], lines[2] = lines[2], lines[1]
        day.write_text("".join(lines))
        verified = _cli(lake, "verify", str(report), "--as", PRINCIPAL)
        assert verified.returncode == 5, verified.stdout + verified.stderr
        assert f"DG log {folder}" in verified.stdout
    finally:
        shutil.rmtree(folder)
        shutil.copytree(saved, folder)


def test_runs_of_the_log_at_the_same_time_append_each_run_once(tmp_path: Path) -> None:
    folder = tmp_path / "reports" / "dg-log-acme"
    doc = {"tenant": "acme", "runs": [{"run_key": f"dg-{i}", "kwh": float(i)} for i in range(150)]}
    start = threading.Barrier(4)
    results: list[LogAppend] = []

    def run() -> None:
        start.wait()
        results.append(append_log(doc, folder))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    keys = [r["run_key"] for r in read_records(folder) if r.get("event") == "dg_run"]
    assert sorted(keys) == sorted(f"dg-{i}" for i in range(150))  # each once
    assert sorted(r.appended for r in results) == [0, 0, 0, 150]
    assert sum(r.unchanged for r in results) == 3 * 150


def _set_rows(minutes: list[tuple[int, str]]) -> pl.DataFrame:
    t0 = datetime(2025, 11, 20, 4, 30, tzinfo=UTC)  # 10:00 IST
    return pl.DataFrame(
        {
            "device_id": ["dg-s"] * len(minutes),
            "branch_id": ["b1"] * len(minutes),
            "ts": [t0 + timedelta(minutes=m) for m, _ in minutes],
            "seq": list(range(len(minutes))),
            "status": [s for _, s in minutes],
            "engine_speed_rpm": [1500.0 if s == "running" else 0.0 for _, s in minutes],
            "load_pct": [50.0] * len(minutes),
            "energy_generated_kwh": [100.0 + 2.0 * m for m, _ in minutes],
            "fuel_level_pct": [80.0] * len(minutes),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_a_set_that_falls_silent_mid_run_is_logged_with_a_data_gap() -> None:
    sets = pl.DataFrame({"device_id": ["dg-s"], "tank_capacity_l": [None], "cadence_s": [60]})
    silent = _set_rows([(0, "stopped"), *((m, "running") for m in range(1, 11))])
    t0 = datetime(2025, 11, 20, 4, 30, tzinfo=UTC)
    # the data reach two hours on and the set said nothing after 10:10: stopped, DATA_GAP
    runs = detect_runs(silent, sets, t0 + timedelta(hours=2))
    assert runs.height == 1
    run = runs.row(0, named=True)
    assert run["start"] == t0 + timedelta(minutes=1)
    assert run["stop"] == t0 + timedelta(minutes=10)
    assert run["data_gap"] is True
    assert run["kwh"] == pytest.approx(18.0)  # the steps inside the run: 9 x 2 kWh
    flags = evaluate(runs, {}, {"b1": {"ncr": False}}, [], [])[0]["flags"]
    assert "DATA_GAP" in flags
    # two minutes after its last reading it may still be running: not logged yet
    assert detect_runs(silent, sets, t0 + timedelta(minutes=12)).height == 0
    assert detect_runs(silent, sets, None).height == 0
    # the set comes back and says it stopped: a closed run with its gap, no DATA_GAP
    back = _set_rows([(0, "stopped"), *((m, "running") for m in range(1, 11)), (60, "stopped")])
    closed = detect_runs(back, sets, t0 + timedelta(hours=2)).row(0, named=True)
    assert closed["stop"] == t0 + timedelta(minutes=60)
    assert (closed["data_gap"], closed["gap_in_run"]) == (False, True)
