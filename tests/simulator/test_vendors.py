"""The vendor devices are opt-in and leave the rest of the fleet as it was; what they send."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from simulator.config import VENDOR_FORMATS, FaultRates, SimConfig
from simulator.reference import build_fleet
from simulator.run import simulate
from simulator.stream import Message

BASE = SimConfig(clients=1, branches=2, seed=7, cadence_s=300, faults=FaultRates.none())
VENDORS = replace(BASE, vendor_devices=VENDOR_FORMATS)


def _messages(config: SimConfig, out: Path) -> tuple[list[Message], dict[str, Any]]:
    got: list[Message] = []
    result = simulate(config, out, sink=lambda msgs, _seed: got.extend(msgs))
    return got, result.manifest


def test_vendor_devices_leave_the_fleet_and_its_stream_unchanged(tmp_path: Path) -> None:
    assert "vendor_devices" not in BASE.as_dict()
    before, plain = _messages(BASE, tmp_path / "a")
    after, manifest = _messages(VENDORS, tmp_path / "b")
    canonical = [m for m in after if m.fmt == "canonical"]
    assert [(m.device_id, m.seq, m.payload(m.seq)) for m in canonical] == [
        (m.device_id, m.seq, m.payload(m.seq)) for m in before
    ]
    old = {d.device_id: d.row for d in build_fleet(BASE).registered}
    new = {d.device_id: d.row for d in build_fleet(VENDORS).registered}
    assert {k: new[k] for k in old} == old
    assert "vendor_devices" not in plain
    formats = {e["format"] for e in manifest["vendor_devices"].values()}
    assert formats == set(VENDOR_FORMATS)


def test_what_each_vendor_sends(tmp_path: Path) -> None:
    messages, manifest = _messages(VENDORS, tmp_path)
    vendor = manifest["vendor_devices"]
    by_fmt: dict[str, list[Message]] = {}
    for m in messages:
        by_fmt.setdefault(m.fmt, []).append(m)
    tasmota = by_fmt["tasmota"]
    assert all(m.topic == f"tele/{m.username}/SENSOR" for m in tasmota)
    assert tasmota[0].username.startswith("tasmota_")
    doc = orjson.loads(tasmota[0].payload(0))
    assert doc["ENERGY"]["Total"] == tasmota[0].readings["energy_import_kwh"]
    assert "+" not in doc["Time"]
    assert "Z" not in doc["Time"]
    assert [m.seq for m in tasmota] == [m.ts for m in tasmota]
    board = by_fmt["thingsboard"]
    assert orjson.loads(board[1].payload(0)) == {
        "ts": board[1].ts * 1000,
        "values": board[1].readings,
    }
    spark = by_fmt["sparkplug_b"]
    nbirth, dbirth, *ddata = spark
    assert "/NBIRTH/" in nbirth.topic
    assert nbirth.route == "quarantine"
    assert nbirth.reason_code == "MISSING_FIELD"
    assert "/DBIRTH/" in dbirth.topic
    assert len(dbirth.readings) == 16
    assert all("/DDATA/" in m.topic and m.readings for m in ddata)
    assert [m.seq for m in [dbirth, *ddata]] == list(range(len(ddata) + 1))
    # report by exception: a DDATA carries only what changed since the device's last message
    last = dict(dbirth.readings)
    for m in ddata:
        assert all(last[k] != v for k, v in m.readings.items())
        last.update(m.readings)
    # the truth adds up to what was sent
    for device_id, entry in vendor.items():
        sent = [m for m in messages if m.device_id == device_id]
        assert entry["messages"] == len(sent)
        counters = [
            m.readings["energy_import_kwh"] for m in sent if "energy_import_kwh" in m.readings
        ]
        if counters:
            assert entry["energy_import_kwh"] == round(counters[-1] - counters[0], 6)
