"""Vendor payloads through the shipped decoder catalogue, as ``energylake process`` runs them:
decode, normalise (the registered device, its kind, profile and branch zone), enforce.

The golden payloads in ``tests/fixtures/payloads/`` follow the vendors' firmware and
documentation (key names and order, units, shapes, decimals): Tasmota's energy driver
(``xdrv_03_energy.ino`` / ``xdrv_03_esp32_energy.ino``, ``EnergyShow``) for a Sonoff POW R2
plug, an SDM220 and an SDM630 behind Tasmota and three PZEM-004T; Shelly's Gen2 API for the
Pro 3EM's ``em:0`` and ``emdata:0`` status. The expected numbers are worked out by hand from
the payloads below, not read back from the decoder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from contracts import load_registry
from landing.format import ARROW_SCHEMA
from transforms.decode import DecodeSchema, decode_chunk
from transforms.enforce import enforce_chunk
from transforms.frames import Chunk, quarantine_table
from transforms.normalise import normalise_chunk
from transforms.registry import device_frame

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
REGISTRY = load_registry(ROOT / "contracts")
SCHEMA = DecodeSchema.from_registry(REGISTRY)
# Tasmota's Time in the golden files is 2024-05-01T12:34:56 (or 12:35:00) local: in the
# branch's zone, Asia/Kolkata (UTC+05:30), that is 07:04:56 UTC.
RECEIVED = datetime(2024, 5, 1, 7, 5, 3, tzinfo=UTC)
SEQ_123456 = int(datetime(2024, 5, 1, 7, 4, 56, tzinfo=UTC).timestamp())


def golden(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def device(device_id: str, kind: str = "meter", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device_id,
        "client_id": "c-1",
        "branch_id": "b-1",
        "kind": kind,
        "payload_format": "tasmota",
        "rated_power_kw": 50.0,
        "tank_capacity_l": None,
        "cadence_s": 300,
        "status": "active",
        "mqtt_name": None,
        "profile": None,
        "edge_node": None,
    }
    row.update(extra)
    return row


def chunk_of(messages: list[tuple[str, str, bytes]], received: datetime = RECEIVED) -> Chunk:
    """MQTT envelopes (topic, identity, payload) as the gateway lands them."""
    n = len(messages)
    at = int(received.timestamp() * 1_000_000)
    table = pa.Table.from_arrays(
        [
            pa.array([at + k for k in range(n)], pa.timestamp("us", tz="UTC")),
            pa.array(["mqtt"] * n),
            pa.array([m[0] for m in messages]),
            pa.array([m[1] for m in messages]),
            pa.array([m[2] for m in messages], pa.large_binary()),
            pa.array(["seg"] * n),
            pa.array(range(n), pa.int64()),
        ],
        schema=ARROW_SCHEMA,
    )
    return Chunk(envelopes=table)


def run(
    messages: list[tuple[str, str, bytes]],
    devices: list[dict[str, Any]],
    received: datetime = RECEIVED,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """(accepted rows per dataset, rejects) for MQTT messages (topic, identity, payload)."""
    chunk = chunk_of(messages, received)
    decode_chunk(chunk, SCHEMA, payload_limit=65536)
    normalise_chunk(chunk, REGISTRY, device_frame(pa.Table.from_pylist(devices)))
    accepted = enforce_chunk(chunk, REGISTRY, SCHEMA)
    return accepted, chunk.rejects


def one(accepted: dict[str, pl.DataFrame], dataset: str) -> dict[str, Any]:
    assert list(accepted) == [dataset], accepted
    rows = accepted[dataset].to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def close(row: dict[str, Any], expected: dict[str, float | None]) -> None:
    for name, want in expected.items():
        got = row[name]
        if want is None:
            assert got is None, (name, got)
        else:
            assert got == pytest.approx(want, abs=1e-9), (name, got, want)


def test_a_tasmota_plug_registered_as_a_single_phase_import_only_meter_lands() -> None:
    """Sonoff POW R2: numbers, no Frequency, no ExportActive. It used to be decoded as a
    solar meter whatever its kind (SCHEMA_MISMATCH), and a meter needs an export counter."""
    plug = device("plug-1", profile="single_phase+no_export")
    accepted, rejects = run(
        [("tele/plug-1/SENSOR", "plug-1", golden("tasmota_single_phase.json"))], [plug]
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "meter_readings")
    assert row["device_id"] == "plug-1"
    assert row["seq"] == SEQ_123456  # Tasmota has no seq: the event time in epoch seconds
    assert row["ts"] == datetime(2024, 5, 1, 7, 4, 56, tzinfo=UTC)
    close(
        row,
        {
            "voltage_l1_v": 231.0,
            "current_l1_a": 0.567,
            "power_l1_kw": 0.110,
            "power_kw": 0.110,
            "apparent_power_kva": 0.131,
            "reactive_power_kvar": 0.071,
            "power_factor": 0.84,
            "energy_import_kwh": 412.294,
            "energy_export_kwh": None,
            "frequency_hz": None,
            "voltage_l2_v": None,
        },
    )


def test_without_a_profile_the_same_plug_is_missing_what_a_full_meter_sends() -> None:
    accepted, rejects = run(
        [("tele/plug-1/SENSOR", "plug-1", golden("tasmota_single_phase.json"))], [device("plug-1")]
    )
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == "MISSING_FIELD"
    for name in ("voltage_l2_v", "frequency_hz", "energy_export_kwh"):
        assert name in reject["detail"]


def test_the_same_payload_from_a_solar_meter_is_generation() -> None:
    """Tasmota's Total is a meter's import and a solar meter's generation (per kind)."""
    pv = device("pv-1", kind="solar")
    accepted, rejects = run(
        [("tele/pv-1/SENSOR", "pv-1", golden("tasmota_single_phase.json"))], [pv]
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "solar_readings")
    close(
        row,
        {
            "voltage_v": 231.0,
            "current_a": 0.567,
            "power_kw": 0.110,
            "energy_generated_kwh": 412.294,
        },
    )


def test_a_three_phase_tasmota_meter_without_export_sums_its_phases() -> None:
    """3 x PZEM-004T: lists for every per-phase value (Frequency too), Total summed."""
    meter = device("pz-1", profile="no_export")
    accepted, rejects = run(
        [("tele/pz-1/SENSOR", "pz-1", golden("tasmota_three_phase.json"))], [meter]
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "meter_readings")
    close(
        row,
        {
            "voltage_l1_v": 229.0,
            "voltage_l2_v": 231.0,
            "voltage_l3_v": 228.0,
            "current_l3_a": 2.640,
            "power_l1_kw": 0.375,
            "power_l2_kw": 0.142,
            "power_l3_kw": 0.580,
            "power_kw": 1.097,  # 375 + 142 + 580 W
            "apparent_power_kva": 1.185,  # 412 + 171 + 602 VA
            "reactive_power_kvar": 0.427,  # 171 + 95 + 161 VAr
            "power_factor": 0.926,  # |P| / S = 1.097 / 1.185: per-phase factors do not add
            "frequency_hz": 50.0,
            "energy_import_kwh": 1843.527,
            "energy_export_kwh": None,
        },
    )


def test_a_three_phase_tasmota_meter_with_export_lands_whole() -> None:
    """SDM630 behind Tasmota: a common Frequency (a number), ExportActive per phase, L1
    exporting (negative power, a negative Factor whose magnitude the contract keeps)."""
    meter = device("sdm-1")
    accepted, rejects = run(
        [("tele/sdm-1/SENSOR", "sdm-1", golden("tasmota_three_phase_export.json"))], [meter]
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "meter_readings")
    close(
        row,
        {
            "power_l1_kw": -1.850,
            "power_kw": -0.787,  # -1850 + 423 + 640 W
            "apparent_power_kva": 3.020,
            "reactive_power_kvar": -0.054,  # -412 + 168 + 190 VAr
            "power_factor": 0.261,  # 0.787 / 3.020
            "frequency_hz": 50.0,
            "energy_import_kwh": 2210.384,
            "energy_export_kwh": 1217.461,  # 1204.556 + 12.031 + 0.874
        },
    )


def test_a_single_phase_meter_with_an_export_counter() -> None:
    """SDM220 behind Tasmota: a scalar ExportActive, signed Factor, a Frequency."""
    meter = device("sdm-2", profile="single_phase")
    accepted, rejects = run(
        [("tele/sdm-2/SENSOR", "sdm-2", golden("tasmota_single_phase_export.json"))], [meter]
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "meter_readings")
    close(
        row,
        {
            "power_kw": -0.196,
            "power_factor": 0.91,
            "frequency_hz": 50.0,
            "energy_import_kwh": 37.415,
            "energy_export_kwh": 6.216,
        },
    )


def test_tasmotas_default_topic_names_a_registered_device() -> None:
    """``tasmota_5A9AE8`` (the last six hex digits of the MAC, upper case) is not an id; the
    device is registered as m-7 with that MQTT name and lands as m-7."""
    meter = device("m-7", mqtt_name="tasmota_5A9AE8", profile="single_phase+no_export")
    topic = "tele/tasmota_5A9AE8/SENSOR"
    accepted, rejects = run(
        [(topic, "tasmota_5A9AE8", golden("tasmota_single_phase.json"))], [meter]
    )
    assert rejects.height == 0, rejects.to_dicts()
    assert one(accepted, "meter_readings")["device_id"] == "m-7"
    # what it sends that is refused goes to its tenant's quarantine, under its id
    chunk = chunk_of([("tele/tasmota_5A9AE8/STATE", "tasmota_5A9AE8", b'{"Time":"x"}')])
    decode_chunk(chunk, SCHEMA, payload_limit=65536)
    devices = device_frame(pa.Table.from_pylist([meter]))
    [row] = quarantine_table(chunk, REGISTRY, devices, batch_id="b:1").to_dicts()
    assert (row["_tenant"], row["client_id"], row["device_id"]) == ("c-1", "c-1", "m-7")
    assert row["reason_code"] == "UNDECODED_TOPIC"


def test_a_tasmota_time_with_its_offset_is_exact() -> None:
    """SetOption52 appends the zone: the time is read as sent, not in the branch's zone."""
    payload = json.loads(golden("tasmota_three_phase.json"))
    payload["Time"] = "2024-05-01T09:04:56+02:00"
    accepted, rejects = run(
        [("tele/pz-1/SENSOR", "pz-1", json.dumps(payload).encode())],
        [device("pz-1", profile="no_export")],
    )
    assert rejects.height == 0, rejects.to_dicts()
    row = one(accepted, "meter_readings")
    assert row["ts"] == datetime(2024, 5, 1, 7, 4, 56, tzinfo=UTC)
    assert row["seq"] == SEQ_123456


def test_shelly_pro_3em_status_and_counters_land_as_two_partial_readings() -> None:
    """em:0 carries the instantaneous values (W, VA), emdata:0 the counters in Wh; neither
    carries a time, so the reception time is the event time and numbers them (us)."""
    shelly = device("shellypro3em-8813bfe14804", payload_format="shelly_pro3em")
    prefix = "shellypro3em-8813bfe14804/status"
    accepted, rejects = run(
        [
            (f"{prefix}/em:0", "shellypro3em-8813bfe14804", golden("shelly_pro3em_em.json")),
            (
                f"{prefix}/emdata:0",
                "shellypro3em-8813bfe14804",
                golden("shelly_pro3em_emdata.json"),
            ),
        ],
        [shelly],
    )
    assert rejects.height == 0, rejects.to_dicts()
    rows = accepted["meter_readings"].sort("seq").to_dicts()
    assert [r["ts"] for r in rows] == [RECEIVED, RECEIVED.replace(microsecond=1)]
    start = int(RECEIVED.timestamp()) * 1_000_000
    assert [r["seq"] for r in rows] == [start, start + 1]
    em, counters = rows
    close(
        em,
        {
            "voltage_l1_v": 236.1,
            "power_l2_kw": -0.4803,
            "power_kw": 0.6814,
            "apparent_power_kva": 1.717,
            "power_factor": 0.397,  # 681.4 / 1717
            "frequency_hz": 50.0,
            "energy_import_kwh": None,
        },
    )
    close(
        counters,
        {"energy_import_kwh": 2613.83239, "energy_export_kwh": 831.20709, "power_kw": None},
    )


def test_thingsboard_telemetry_single_list_and_bare() -> None:
    """{"ts": ms, "values": {...}}, a list of them, and bare values (reception time)."""
    meter = device("tb-1", payload_format="thingsboard", profile="counters")
    one_record = {
        "ts": 1714547096000,
        "values": {"energy_import_kwh": 2613.832, "energy_export_kwh": 831.2},
    }
    listed = [
        {
            "ts": 1714547036000,
            "values": {"energy_import_kwh": 2613.821, "energy_export_kwh": 831.2},
        },
        {"ts": 1714547156000, "values": {"energy_import_kwh": 2613.9, "energy_export_kwh": 831.2}},
    ]
    bare = {"energy_import_kwh": 2614.0, "energy_export_kwh": 831.2}
    topic = "v1/devices/tb-1/telemetry"
    accepted, rejects = run(
        [(topic, "tb-1", json.dumps(p).encode()) for p in (one_record, listed, bare)], [meter]
    )
    assert rejects.height == 0, rejects.to_dicts()
    rows = accepted["meter_readings"].sort("ts").to_dicts()
    # the bare values arrived at RECEIVED (07:05:03 UTC, 2 us into the chunk): its event
    # time, and its seq in whole milliseconds
    assert [r["seq"] for r in rows] == [
        1714547036000,
        1714547096000,
        int(RECEIVED.timestamp() * 1000),
        1714547156000,
    ]
    assert [r["energy_import_kwh"] for r in rows] == [2613.821, 2613.832, 2614.0, 2613.9]


def test_thingsboard_keys_the_contract_does_not_know_are_named() -> None:
    meter = device("tb-1", payload_format="thingsboard", profile="counters")
    payload = {"ts": 1714547096000, "values": {"energy_import_kwh": 1.0, "power_total": 7}}
    accepted, rejects = run(
        [("v1/devices/tb-1/telemetry", "tb-1", json.dumps(payload).encode())], [meter]
    )
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == "SCHEMA_MISMATCH"
    assert "power_total" in reject["detail"]


def test_a_device_on_another_formats_topic_is_refused_with_the_reason() -> None:
    """A Tasmota-registered device publishing ThingsBoard telemetry: landed, quarantined."""
    payload = {"ts": 1714547096000, "values": {"energy_import_kwh": 1.0}}
    accepted, rejects = run(
        [("v1/devices/plug-1/telemetry", "plug-1", json.dumps(payload).encode())],
        [device("plug-1", profile="single_phase+no_export")],
    )
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == "SCHEMA_MISMATCH"
    assert "device sends tasmota but arrived as thingsboard" in reject["detail"]


@pytest.mark.parametrize(
    ("topic", "says"),
    [
        (
            "tele/plug-1/STATE",
            "in the tasmota namespace, which decodes only 'tele/{device}/SENSOR'",
        ),
        ("shellypro3em-8813bfe14804/online", "in the shelly_pro3em namespace"),
        ("v1/devices/plug-1/attributes", "in the thingsboard namespace"),
        ("cmnd/plug-1/POWER", "no decoder of the catalogue reads topic"),
    ],
)
def test_a_topic_no_decoder_reads_is_quarantined_naming_it(topic: str, says: str) -> None:
    accepted, rejects = run(
        [(topic, "plug-1", b'{"Time":"2024-05-01T12:34:56"}')], [device("plug-1")]
    )
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == "UNDECODED_TOPIC"
    assert says in reject["detail"]
    assert topic in reject["detail"]


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        (b'{"Time":"2024-05-01T12:34:56"}', "MALFORMED_PAYLOAD", "payload without ENERGY"),
        (b'{"Time":"yesterday","ENERGY":{"Total":1}}', "SCHEMA_MISMATCH", "not ISO 8601"),
        (
            b'{"Time":"2024-05-01T12:34:56","ENERGY":{"Total":"1.0"}}',
            "SCHEMA_MISMATCH",
            "is not a number",
        ),
        (
            b'{"Time":"2024-05-01T12:34:56","ENERGY":{"Power":[1,"x",3]}}',
            "SCHEMA_MISMATCH",
            "ENERGY.Power",
        ),
        (b"[1, 2]", "MALFORMED_PAYLOAD", "is not a JSON object"),
        (b'{"Time":"2024-05-01T12:34:56","ENERGY":{"Total":NaN}}', "NON_FINITE", "NaN"),
    ],
)
def test_bad_tasmota_payloads_get_a_precise_reason(payload: bytes, code: str, says: str) -> None:
    accepted, rejects = run([("tele/pz-1/SENSOR", "pz-1", payload)], [device("pz-1")])
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == code, reject
    assert says in reject["detail"], reject


def test_a_profile_the_contract_does_not_name_is_a_schema_mismatch() -> None:
    accepted, rejects = run(
        [("tele/pz-1/SENSOR", "pz-1", golden("tasmota_three_phase.json"))],
        [device("pz-1", profile="no_export+half_phase")],
    )
    assert accepted == {}
    [reject] = rejects.to_dicts()
    assert reject["reason_code"] == "SCHEMA_MISMATCH"
    assert (
        "the device's profile no_export+half_phase is not a profile of meter_readings"
        in reject["detail"]
    )


def _tasmota(time: str, total: float, power_w: int) -> bytes:
    payload = json.loads(golden("tasmota_single_phase.json"))
    payload["Time"] = time
    payload["ENERGY"]["Total"] = total
    payload["ENERGY"]["Power"] = power_w
    return json.dumps(payload).encode()


def test_the_counter_derived_kwh_of_a_tasmota_plug_and_a_shelly() -> None:
    """Consumption is the sum of counter steps (lake.consumption): Tasmota's Total every
    TelePeriod; a Shelly's emdata:0 counters (Wh) with em:0 rows, which carry none, between
    them (stepped over, never read as a fall to nothing)."""
    from lake.consumption import counter_steps

    plug = device("plug-1", profile="single_phase+no_export")
    messages = [
        ("tele/plug-1/SENSOR", "plug-1", _tasmota("2024-05-01T12:30:00", 412.294, 110)),
        ("tele/plug-1/SENSOR", "plug-1", _tasmota("2024-05-01T12:35:00", 412.394, 1200)),
        ("tele/plug-1/SENSOR", "plug-1", _tasmota("2024-05-01T12:40:00", 412.644, 3000)),
    ]
    accepted, rejects = run(messages, [plug])
    assert rejects.height == 0, rejects.to_dicts()
    steps = counter_steps(accepted["meter_readings"], ["energy_import_kwh"]).collect()
    assert steps["energy_import_kwh_step"].sum() == pytest.approx(0.350)  # 412.644 - 412.294

    shelly = device("shellypro3em-8813bfe14804", payload_format="shelly_pro3em")
    prefix = "shellypro3em-8813bfe14804/status"
    emdata = json.loads(golden("shelly_pro3em_emdata.json"))
    sent = []
    for k, wh in enumerate((2613832.39, 2614332.39, 2615332.39)):  # +0.5 kWh, +1.0 kWh
        sent.append(
            (
                f"{prefix}/emdata:0",
                shelly["device_id"],
                json.dumps({**emdata, "total_act": wh}).encode(),
            )
        )
        if k < 2:
            sent.append((f"{prefix}/em:0", shelly["device_id"], golden("shelly_pro3em_em.json")))
    accepted, rejects = run(sent, [shelly])
    assert rejects.height == 0, rejects.to_dicts()
    rows = accepted["meter_readings"]
    assert rows["energy_import_kwh"].null_count() == 2  # the em:0 rows
    steps = counter_steps(rows, ["energy_import_kwh"]).collect()
    assert steps["energy_import_kwh_step"].sum() == pytest.approx(1.5)
