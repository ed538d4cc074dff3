"""`energylake report brsr | esg | verify | explain` as a user runs them (subprocesses over a
golden lake): the files and their record (access log, lineage), reproduction at the recorded
versions after the lake moved on, tamper detection, refusals with their exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from audit.query import read_records
from tests.reporting.golden_lake import (
    PRINCIPAL,
    TENANT,
    Branch,
    Device,
    GoldenLake,
    counter_series,
    ist,
)

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
FY = "2023-24"


def _run(lake: GoldenLake, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [ENERGYLAKE, "report", *args, "--data-dir", str(lake.settings.data_dir)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )


def _folder(result: subprocess.CompletedProcess[str]) -> Path:
    line = next(line for line in result.stdout.splitlines() if line.startswith("report: "))
    return Path(line.removeprefix("report: ").strip())


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> GoldenLake:
    lake = GoldenLake(tmp_path_factory.mktemp("report-cli"))
    lake.reference(
        [Branch("kaveri-b1", city="Pune"), Branch("kaveri-b2", city="Gurugram", state="Haryana")],
        [
            Device("em-1", "kaveri-b1", "meter", cadence_s=3600),
            Device("em-2", "kaveri-b2", "meter", cadence_s=3600),
            Device("pv-1", "kaveri-b1", "solar", cadence_s=3600),
        ],
    )
    start, end = ist(date(2023, 4, 1)), ist(date(2024, 4, 1))
    rows = counter_series("em-1", "kaveri-b1", start, end, 3600, 12_000.0, "energy_import_kwh")
    rows += counter_series("em-2", "kaveri-b2", start, end, 3600, 6_000.0, "energy_import_kwh")
    for r in rows:
        r["energy_export_kwh"] = 0.0
    lake.readings("meter_readings", rows)
    lake.readings(
        "solar_readings",
        counter_series("pv-1", "kaveri-b1", start, end, 3600, 1_000.0, "energy_generated_kwh"),
    )
    return lake


def _brsr(lake: GoldenLake, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(
        lake, "brsr", "--tenant", TENANT, "--fy", FY, "--as", PRINCIPAL,
        "--allow-proxy-factor", "--turnover-inr", "1e9", *extra,
    )  # fmt: skip


def _doc(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def _fact(doc: dict[str, Any], key: str, fy: str = FY) -> dict[str, Any]:
    return next(f for f in doc["facts"] if f["key"] == key and f["fy"] == fy)


def test_brsr_writes_every_format_and_records_each_file(lake: GoldenLake) -> None:
    result = _brsr(lake)
    assert result.returncode == 0, result.stderr
    folder = _folder(result)
    names = {p.name for p in folder.iterdir()}
    assert {"report.json", "report.html", "report.pdf", "facts.csv"} <= names
    doc = _doc(folder)
    assert _fact(doc, "D")["value"] == pytest.approx(18_000 * 0.0036, abs=0.005)
    assert "TotalScope2Emissions" in result.stdout or "S2" in result.stdout
    # the access record names every file and its hash, and the tables at their versions
    records = [r for r in read_records(lake.access_dir) if r.get("event") == "report"]
    record = next(r for r in records if r["session"] == doc["session"])
    assert {f["file"] for f in record["files"]} == names
    assert record["tables"] == doc["inputs"]
    assert any(i["table"] == f"tenants/{TENANT}/meter_readings" for i in doc["inputs"])
    # the lineage run: inputs at versions, outputs with their SHA-256
    events = lake.settings.data_dir / "lineage" / "events"
    runs = [
        json.loads(line)
        for day in sorted(events.glob("*.jsonl"))
        for line in day.read_text().splitlines()
    ]
    complete = next(
        e for e in runs if e["run"]["runId"] == doc["lineage_run"] and e["eventType"] == "COMPLETE"
    )
    assert complete["job"]["name"] == "report.brsr"
    assert PRINCIPAL not in json.dumps(complete)  # who read is in the access log, not lineage
    versions = {i["name"]: i["facets"]["version"]["datasetVersion"] for i in complete["inputs"]}
    assert versions[f"tenants/{TENANT}/meter_readings"] == str(
        next(i["version"] for i in doc["inputs"] if i["table"].endswith("/meter_readings"))
    )
    assert "platform/emission_factors" in versions
    hashes = {o["name"]: o["facets"]["version"]["datasetVersion"] for o in complete["outputs"]}
    assert (
        hashes["report.json"]
        == "sha256:"
        + record["files"][[f["file"] for f in record["files"]].index("report.json")]["sha256"]
    )


def test_verify_reproduces_at_the_recorded_versions_after_the_lake_moved_on(
    lake: GoldenLake,
) -> None:
    result = _brsr(lake, "--format", "json,csv")
    assert result.returncode == 0, result.stderr
    folder = _folder(result)
    before = _fact(_doc(folder), "D")["value"]
    # late readings of the same year arrive: a new version of the table
    late = ist(date(2024, 3, 31), 23, 30)
    lake.readings(
        "meter_readings",
        [{"device_id": "em-2", "branch_id": "kaveri-b2", "ts": late,
          "energy_import_kwh": 6_000.0 + 500.0, "energy_export_kwh": 0.0}],
    )  # fmt: skip
    verified = _run(lake, "verify", str(folder), "--as", PRINCIPAL)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "identical" in verified.stdout
    # a report made now sees the new rows: the recorded one was pinned
    now = _brsr(lake, "--format", "json")
    assert _fact(_doc(_folder(now)), "D")["value"] > before


def test_verify_names_a_changed_figure_and_a_changed_file(lake: GoldenLake) -> None:
    folder = _folder(_brsr(lake, "--format", "json,csv"))
    doc = _doc(folder)
    for fact in doc["facts"]:
        if fact["key"] == "D" and fact["fy"] == FY:
            fact["value"] = fact["value"] + 1.0
    (folder / "report.json").write_text(json.dumps(doc, indent=2))
    with (folder / "facts.csv").open("a") as handle:
        handle.write("\n")
    result = _run(lake, "verify", str(folder), "--as", PRINCIPAL)
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"facts[D, {FY}].value" in result.stdout
    assert "report.json: changed since the report was made" in result.stdout
    assert "facts.csv: changed since the report was made" in result.stdout
    assert "DIFFERS" in result.stdout


def test_refusals_carry_their_exit_codes(lake: GoldenLake) -> None:
    nobody = _run(lake, "brsr", "--tenant", TENANT, "--fy", FY, "--as", "nobody")
    assert nobody.returncode == 6, nobody.stderr
    denied = [r for r in read_records(lake.access_dir) if r.get("event") == "access_denied"]
    assert any(r.get("principal") == "nobody" for r in denied)
    missing = _run(lake, "brsr", "--tenant", TENANT, "--fy", "2025-26", "--as", PRINCIPAL)
    assert missing.returncode == 2
    assert "no grid_co2 factor for FY 2024-25" in missing.stderr
    bad_fy = _run(lake, "brsr", "--tenant", TENANT, "--fy", "2025", "--as", PRINCIPAL)
    assert bad_fy.returncode == 2
    assert "YYYY-YY" in bad_fy.stderr
    not_a_report = _run(lake, "verify", str(lake.settings.data_dir), "--as", PRINCIPAL)
    assert not_a_report.returncode == 2


def test_explain_breaks_a_figure_down_to_branches_devices_and_readings(
    lake: GoldenLake,
) -> None:
    folder = _folder(_brsr(lake, "--format", "json"))
    doc = _doc(folder)
    top = _run(lake, "explain", str(folder), "--figure", "D", "--as", PRINCIPAL, "--json")
    assert top.returncode == 0, top.stderr
    found = json.loads(top.stdout)
    assert sum(b["part"] for b in found["branches"]) == pytest.approx(
        _fact(doc, "D")["value"], abs=0.01
    )
    assert [u["factor"] for u in found["factors"]] == ["electricity_energy"]
    deep = _run(
        lake, "explain", str(folder), "--figure", "D", "--branch", "kaveri-b2",
        "--day", "2023-06-01", "--as", PRINCIPAL, "--json",
    )  # fmt: skip
    assert deep.returncode == 0, deep.stderr
    found = json.loads(deep.stdout)
    assert {d["device_id"] for d in found["devices"]} == {"em-2"}
    assert sum(d["grid_import_kwh"] for d in found["devices"]) == pytest.approx(
        next(b for b in doc["branches"] if b["branch_id"] == "kaveri-b2" and b["fy"] == FY)[
            "grid_import_kwh"
        ],
        rel=1e-6,
    )
    readings = found["readings"]
    assert len(readings) == 24  # one an hour, that IST day
    assert sum(r["energy_import_kwh_step"] for r in readings) == pytest.approx(
        6_000.0 / 366, rel=1e-6
    )


def test_the_esg_pack_adds_up_and_verifies(lake: GoldenLake) -> None:
    result = _run(
        lake, "esg", "--tenant", TENANT, "--from", "2023-04-01", "--to", "2024-03-31",
        "--as", PRINCIPAL, "--allow-proxy-factor",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = _folder(result)
    doc = _doc(folder)
    tables = doc["tables"]
    assert len(tables["tenant"]) == 12
    for level in ("branch", "city", "state"):
        csv = (folder / f"esg-{level}-month.csv").read_text().splitlines()
        parquet = pq.read_table(folder / f"esg-{level}-month.parquet")
        assert len(csv) - 1 == parquet.num_rows == len(tables[level])
        assert sum(r["total_gj"] for r in tables[level]) == pytest.approx(
            sum(r["total_gj"] for r in tables["tenant"]),
            abs=1e-4,  # rows kept to 6 places
        )
    states = {r["state"] for r in tables["state"]}
    assert states == {"Maharashtra", "Haryana"}
    # solar consumed on site is renewable electricity; the grid's is not
    pune = [r for r in tables["city"] if r["city"] == "Pune"]
    assert sum(r["solar_electricity_gj"] for r in pune) == pytest.approx(1_000 * 0.0036, rel=1e-6)
    verified = _run(lake, "verify", str(folder), "--as", PRINCIPAL)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    first = date(2023, 4, 1)
    assert doc["period"] == {
        "from": first.isoformat(),
        "to": (date(2024, 4, 1) - timedelta(days=1)).isoformat(),
        "tz": "Asia/Kolkata",
    }
