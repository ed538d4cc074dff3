"""``energylake status``: active registered devices that have sent nothing are silent.

A small lake (``tests.reporting.golden_lake``) with six meters read every 15 minutes: one
that reported minutes ago, one whose last reading is two hours old, one that never sent
anything, one retired, one installed tomorrow, and one whose messages all went to the
quarantine (it sends; the quarantine says why nothing lands).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from deltalake import write_deltalake
from typer.testing import CliRunner

from analytics.gaps import silent_devices
from cli.app import app
from lake.delta import ensure_table, open_table, read_table
from lake.layout import table_rel
from pipelines.status import collect_status
from tests.reporting.golden_lake import TENANT, Branch, Device, GoldenLake, table_of

NOW = datetime.now(UTC).replace(microsecond=0)


def _lake(tmp_path: Path) -> GoldenLake:
    lake = GoldenLake(tmp_path / "data")
    today = NOW.date()
    meters = ["m-recent", "m-stale", "m-never", "m-retired", "m-future", "m-quarantined"]
    installed = {"m-future": today + timedelta(days=1)}
    lake.reference(
        [Branch("b-1")],
        [
            Device(m, "b-1", "meter", 900, installed_on=installed.get(m, date(2024, 1, 1)))
            for m in meters
        ],
    )
    rel = table_rel(TENANT, "devices")
    rows = read_table(lake.store, rel).to_pylist()
    for row in rows:
        if row["device_id"] == "m-retired":
            row["status"] = "retired"
    schema = lake.registry.get("devices").arrow_schema()
    write_deltalake(open_table(lake.store, rel), table_of(schema, rows), mode="overwrite")
    counters = {"energy_import_kwh": 1.0, "energy_export_kwh": 0.0}
    lake.readings(
        "meter_readings",
        [
            {"device_id": "m-recent", "branch_id": "b-1", "ts": NOW - timedelta(minutes=5)}
            | counters,
            {"device_id": "m-stale", "branch_id": "b-1", "ts": NOW - timedelta(hours=2)} | counters,
            {"device_id": "m-retired", "branch_id": "b-1", "ts": NOW - timedelta(hours=5)}
            | counters,
        ],
    )
    quarantine = lake.registry.get("quarantine")
    table = ensure_table(lake.store, table_rel(TENANT, "quarantine"), quarantine)
    write_deltalake(
        table,
        table_of(
            quarantine.arrow_schema(),
            [
                {
                    "device_id": "m-quarantined",
                    "client_id": TENANT,
                    "branch_id": "b-1",
                    "received_at": NOW - timedelta(minutes=3),
                    "reason_code": "SCHEMA_MISMATCH",
                }
            ],
        ),
        mode="append",
    )
    return lake


def test_devices_that_sent_nothing_for_three_cadences_are_silent(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    silent = silent_devices(lake.store, NOW - timedelta(hours=24), NOW)
    assert silent["device_id"].to_list() == ["m-never", "m-stale"]
    rows = {r["device_id"]: r for r in silent.to_dicts()}
    assert rows["m-stale"]["last_seen"] == NOW - timedelta(hours=2)
    assert rows["m-stale"]["silent_s"] == 7200
    assert rows["m-never"]["last_seen"] is None  # nothing in the window: silent since its start
    assert rows["m-never"]["silent_s"] == 24 * 3600
    # with a 3-hour look-back the stale meter's reading is still in the window; with a
    # 1-hour one it is not, and the meter is silent since the window's start
    shorter = silent_devices(lake.store, NOW - timedelta(hours=1), NOW)
    assert shorter.filter(shorter["device_id"] == "m-stale")["silent_s"].to_list() == [3600]

    status = collect_status(lake.settings, window=timedelta(hours=24))
    assert [r["device_id"] for r in status.silent] == ["m-never", "m-stale"]  # longest first
    metrics = tmp_path / "status.prom"
    result = CliRunner().invoke(
        app,
        ["status", "--data-dir", str(lake.settings.data_dir), "--metrics", str(metrics)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "silent devices: 2" in result.output
    assert "m-stale" in result.output
    assert "nothing in the window" in result.output
    text = metrics.read_text()
    assert 'energylake_devices_silent{pipeline="' in text
    assert 'energylake_device_silent_seconds{device_id="m-stale",pipeline=' in text
