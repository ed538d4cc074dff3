"""Register maps: the shipped ones lint clean and decode as their devices encode; the lint
names the file, the YAML path and the reason of each problem; ``energylake modbus lint``
exits non-zero on one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from contracts import load_registry
from gateway.modbus_maps import MapError, available_maps, decode_field, lint_map, load_map, map_path
from simulator.modbus import encode_value

BAD = """\
name: bad_map
kind: dg
fields:
  engine_speed_rpm: {function: holding, address: 1030, type: uint16, unit: rpm, sentinel: u16}
  oil_pressure_kpa: {function: holding, address: 1030, type: uint16, unit: kPa, sentinel: u16}
  battery_voltage_v: {function: holding, address: 1029, type: uint16, scale: 1/100, unit: V,
    sentinel: u16}
  coolant_temp_degc: {function: holding, address: 1025, type: int16, unit: degF, sentinel: s16}
  fuel_level_pct: {function: holding, address: 1027, type: uint16, unit: "%"}
  voltage_l1_v: {function: holding, address: 1, type: float32, unit: V}
  load_pct: {function: coil, address: 2, type: uint12}
"""


def test_the_shipped_maps_lint_clean_and_serve_their_kind() -> None:
    assert {"eastron_sdm630", "dse_gencomm"} <= set(available_maps())
    registry = load_registry()
    for name in available_maps():
        assert lint_map(map_path(name), registry) == [], name
    assert load_map("eastron_sdm630").kind == "meter"
    dse = load_map("dse_gencomm")
    assert dse.kind == "dg"
    required = {f.name for f in registry.get("dg_readings").fields if f.required}
    system = {"client_id", "branch_id", "device_id", "seq", "ts", "received_at", "event_month"}
    assert required - system <= {f.name for f in dse.fields}


def test_values_round_trip_through_registers_and_sentinels_pass_through_scaled() -> None:
    sdm = {f.name: f for f in load_map("eastron_sdm630").fields}
    assert sdm["power_kw"].address == 0x34
    assert decode_field(sdm["power_kw"], encode_value(sdm["power_kw"], 12.5)) == pytest.approx(12.5)
    dse = {f.name: f for f in load_map("dse_gencomm").fields}
    hours = dse["run_hours_h"]
    assert decode_field(hours, encode_value(hours, 1234.5)) == pytest.approx(1234.5)
    # GenComm "not available" (u32 0xFFFFFFFF) scaled by 1/3600: the contract's u32/3600 code
    assert decode_field(hours, [0xFFFF, 0xFFFF]) == pytest.approx(0xFFFFFFFF / 3600)
    temp = dse["coolant_temp_degc"]
    assert decode_field(temp, encode_value(temp, -12.0)) == -12.0
    assert decode_field(dse["status"], [3]) == "running"
    assert decode_field(dse["status"], [0xFFFF]) is None
    with pytest.raises(ValueError, match="code 77"):
        decode_field(dse["status"], [77])
    with pytest.raises(ValueError, match="not a finite number"):
        decode_field(sdm["voltage_l1_v"], [0x7FC0, 0])
    with pytest.raises(ValueError, match="expected 2"):
        decode_field(sdm["voltage_l1_v"], [0x4366])


def test_little_word_order_reads_the_low_word_first() -> None:
    from gateway.modbus_maps import parse_map

    hours = {"function": "holding", "address": 0, "type": "uint32", "word_order": "little",
             "scale": "1/3600", "unit": "h"}  # fmt: skip
    spec = {"name": "inline", "kind": "dg", "fields": {"run_hours_h": hours}}
    parsed, issues = parse_map(spec, "inline.yaml")
    assert issues == []
    assert parsed is not None
    (field,) = parsed.fields
    assert decode_field(field, [0x0010, 0x0000]) == pytest.approx(16 / 3600)


def test_lint_names_file_path_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad_map.yaml"
    path.write_text(BAD)
    issues = lint_map(path)
    where = {(i.path, i.code) for i in issues}
    assert {i.file for i in issues} == {str(path)}
    assert ("fields.load_pct.function", "M012") in where  # a function that is not one
    assert ("fields.load_pct.type", "M014") in where  # a bad type
    # structural problems stop the lint before the contract checks: fix and lint again
    path.write_text(BAD.replace("  load_pct: {function: coil, address: 2, type: uint12}\n", ""))
    issues = lint_map(path)
    where = {(i.path, i.code) for i in issues}
    assert ("fields.oil_pressure_kpa.address", "M028") in where  # overlaps engine speed
    assert ("fields.battery_voltage_v.sentinel", "M025") in where  # 1/100 is not u16/10
    assert ("fields.coolant_temp_degc.unit", "M024") in where  # degF: not the contract's
    assert ("fields.fuel_level_pct.sentinel", "M026") in where  # contract has sentinels
    assert ("fields.voltage_l1_v", "M021") in where  # a meter field in a dg map
    assert len(issues) == 5, [str(i) for i in issues]
    with pytest.raises(MapError, match=r"bad_map\.yaml: fields\.voltage_l1_v"):
        load_map(path)


def test_the_lint_command_exits_non_zero_on_a_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["modbus", "lint"])
    assert ok.exit_code == 0, ok.output
    assert "dse_gencomm.yaml" in ok.output
    bad = tmp_path / "bad_map.yaml"
    bad.write_text(BAD)
    result = runner.invoke(app, ["modbus", "lint", str(bad), str(map_path("dse_gencomm"))])
    assert result.exit_code == 2
    assert f"{bad}: fields.load_pct.type: type 'uint12'" in result.output
    assert "problem(s) in 2 map(s)" in result.output
