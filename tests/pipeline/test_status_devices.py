"""``energylake status`` on devices the platform cannot read: messages on topics no decoder
reads (quarantined UNDECODED_TOPIC, counted by device and topic), and the Modbus poller's
failing devices (its status file), in the output, the JSON and the Prometheus textfile."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from deltalake import write_deltalake
from typer.testing import CliRunner

from cli.app import app
from lake.delta import ensure_table
from lake.layout import table_rel
from pipelines.status import collect_status
from tests.reporting.golden_lake import TENANT, Branch, Device, GoldenLake, table_of

NOW = datetime.now(UTC).replace(microsecond=0)


def _lake(tmp_path: Path) -> GoldenLake:
    lake = GoldenLake(tmp_path / "data")
    lake.reference(
        [Branch("b-1")], [Device("plug-1", "b-1", "meter", 300, installed_on=date(2024, 1, 1))]
    )
    quarantine = lake.registry.get("quarantine")
    table = ensure_table(lake.store, table_rel(TENANT, "quarantine"), quarantine)
    rows = [
        {
            "device_id": "plug-1",
            "client_id": TENANT,
            "branch_id": "b-1",
            "received_at": NOW - timedelta(minutes=m),
            "reason_code": code,
            "topic": topic,
        }
        for m, code, topic in (
            (5, "UNDECODED_TOPIC", "tele/plug-1/STATE"),
            (10, "UNDECODED_TOPIC", "tele/plug-1/STATE"),
            (12, "UNDECODED_TOPIC", "tele/plug-1/LWT"),
            (15, "SCHEMA_MISMATCH", "tele/plug-1/SENSOR"),  # another reason: not counted
            (60 * 30, "UNDECODED_TOPIC", "tele/plug-1/STATE"),  # before the window
        )
    ]
    write_deltalake(table, table_of(quarantine.arrow_schema(), rows), mode="append")
    poller = lake.settings.data_dir / "modbus"
    poller.mkdir(parents=True)
    (poller / "status.json").write_text(
        json.dumps(
            {
                "version": 1,
                "written_at": NOW.isoformat(),
                "running": True,
                "devices": {
                    "sdm-1": {"endpoint": "10.0.0.5:502", "unit_id": 1, "state": "ok"},
                    "dse-1": {
                        "endpoint": "10.0.0.6:502",
                        "unit_id": 3,
                        "state": "failing",
                        "consecutive_failures": 4,
                        "last_error": {"reason": "timeout", "detail": "no answer in 2.0 s"},
                        "last_success": None,
                    },
                },
                "skipped": {"dse-2": "no modbus_endpoint"},
            }
        )
    )
    return lake


def test_status_names_undecoded_topics_and_failing_modbus_devices(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    status = collect_status(lake.settings, window=timedelta(hours=24))
    assert [(r["device_id"], r["topic"], r["messages"]) for r in status.undecoded] == [
        ("plug-1", "tele/plug-1/STATE", 2),
        ("plug-1", "tele/plug-1/LWT", 1),
    ]
    metrics = tmp_path / "status.prom"
    result = CliRunner().invoke(
        app,
        ["status", "--data-dir", str(lake.settings.data_dir), "--metrics", str(metrics)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "undecoded topics: 3 message(s) on 2 topic(s)" in result.output
    assert "tele/plug-1/STATE" in result.output
    assert "modbus poller (running" in result.output
    assert "2 device(s), 1 failing, 1 not polled" in result.output
    assert "timeout: no answer in 2.0 s" in result.output
    text = metrics.read_text()
    assert "energylake_undecoded_messages{" in text
    assert text.split("energylake_undecoded_messages{", 1)[1].split("}", 1)[1].split()[0] == "3.0"
    assert (
        text.split("energylake_modbus_devices_failing{", 1)[1].split("}", 1)[1].split()[0] == "1.0"
    )
    out = CliRunner().invoke(app, ["status", "--data-dir", str(lake.settings.data_dir), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["modbus"]["devices"]["dse-1"]["state"] == "failing"
    assert data["undecoded"][0]["messages"] == 2
