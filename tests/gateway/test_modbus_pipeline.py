"""End to end: a GenComm DG controller (pymodbus's server on loopback) registered in the
lake, ``energylake modbus poll`` reading it from the registry, SIGTERM, then the pipeline:
a "not available" register lands scaled, and the Delta row holds NULL with the SENTINEL
flag (the poller never nulls a value itself)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.modbus import devices_from_registry
from contracts import load_registry
from gateway.modbus_maps import load_map
from lake.delta import read_table
from lake.layout import table_rel
from lake.reference import load_device_registry, load_reference
from lake.storage import Store
from landing.reader import read_segment
from pipelines.process import process_once
from pipelines.settings import load_settings
from simulator.config import SimConfig
from simulator.modbus import RegisterServer
from simulator.reference import build_fleet
from simulator.run import write_reference

ENERGYLAKE = Path(sys.executable).with_name("energylake")
DSE = load_map("dse_gencomm")
UNIT = 3
DG = {
    "status": "running",
    "engine_speed_rpm": 1500.0,
    "coolant_temp_degc": 82.0,
    "fuel_level_pct": 64.0,
    "battery_voltage_v": 27.1,
    "frequency_hz": 50.0,
    "power_kw": 21.5,
    "load_pct": 67.2,
    "run_hours_h": 1234.0,
    "energy_generated_kwh": 45678.9,
    "starts_count": 321.0,
}


class ServerThread:
    """A RegisterServer on its own event loop in a thread (the test drives a subprocess)."""

    def __init__(self) -> None:
        self.server = RegisterServer()
        self.server.add_device(UNIT, DSE.fields, DG)
        self.server.set_raw(UNIT, {"oil_pressure_kpa": 0xFFFF})  # GenComm "not available"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("ENERGYLAKE_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _register(lake: Store, folder: Path, port: int) -> str:
    """The simulator's fleet (one branch with a DG) as reference data, the DG registered as
    a Modbus device on ``port``; returns its device id."""
    registry = load_registry()
    write_reference(build_fleet(SimConfig(clients=1, branches=1, days=1, seed=2)), registry, folder)
    devices = pq.read_table(folder / "devices.parquet").to_pylist()
    dg = next(d for d in devices if d["kind"] == "dg")
    dg.update(register_map="dse_gencomm", modbus_endpoint=f"127.0.0.1:{port}", modbus_unit_id=UNIT,
              cadence_s=1)  # fmt: skip
    schema = registry.get("devices").arrow_schema()
    pq.write_table(pa.Table.from_pylist(devices, schema=schema), folder / "devices.parquet")
    load_reference(lake, folder, registry)
    return str(dg["device_id"])


def test_a_sentinel_register_reaches_the_lake_as_null_with_the_flag(
    tmp_path: Path, clean_env: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = Store.from_uri(settings.lake)
    with ServerThread() as port:
        device_id = _register(store, tmp_path / "reference", port)
        # the registry read as the CLI reads it: one device to poll, nothing skipped
        devices, skipped = devices_from_registry(load_device_registry(store))
        assert [d.device_id for d in devices] == [device_id]
        assert skipped == {}
        assert (devices[0].port, devices[0].unit_id, devices[0].cadence_s) == (port, UNIT, 1.0)
        status_path = settings.data_dir / "modbus" / "status.json"
        proc = subprocess.Popen(
            [str(ENERGYLAKE), "modbus", "poll", "--data-dir", str(settings.data_dir),
             "--timeout-s", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            landed = 0
            while time.monotonic() < deadline and landed < 2 and proc.poll() is None:
                time.sleep(0.1)
                if status_path.exists():
                    landed = json.loads(status_path.read_text())["devices"][device_id]["landed"]
            assert landed >= 2, (proc.poll(), proc.stderr.read() if proc.poll() else "")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err.decode()
    final = json.loads(status_path.read_text())
    assert final["running"] is False
    assert not list((settings.landing / "open").glob("*.seg")), "SIGTERM closed the writer"
    envelopes = [
        e for seg in sorted((settings.landing / "closed").glob("*.seg"))
        for e in read_segment(seg).envelopes()
    ]  # fmt: skip
    assert {e.source for e in envelopes} == {"modbus"}
    body = json.loads(envelopes[0].payload)
    assert body["readings"]["oil_pressure_kpa"] == 65535.0, "passed through, scaled (u16 x 1)"
    assert body["readings"]["status"] == "running"

    report = process_once(settings)
    assert report is not None
    rows = pl.from_arrow(read_table(store, table_rel(devices[0].client_id, "dg_readings")))
    assert isinstance(rows, pl.DataFrame)
    mine = rows.filter(pl.col("device_id") == device_id).sort("seq")
    assert mine.height == len(envelopes), report
    assert mine["seq"].to_list() == [json.loads(e.payload)["seq"] for e in envelopes]
    first = mine.row(0, named=True)
    assert first["oil_pressure_kpa"] is None
    assert "SENTINEL" in first["quality_flags"]
    assert first["engine_speed_rpm"] == pytest.approx(1500.0)
    assert first["power_kw"] == pytest.approx(21.5)
    assert first["battery_voltage_v"] == pytest.approx(27.1)
    assert first["run_hours_h"] == pytest.approx(1234.0)
    assert first["status"] == "running"
    assert sum(report.quarantined.values()) == 0, report.quarantined
