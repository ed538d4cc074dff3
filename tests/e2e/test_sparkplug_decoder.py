"""Sparkplug B through the pipeline: payloads built from the specification, translated by
the gateway's own state machine (``gateway/sparkplug``, what ``energylake gateway`` lands),
then decoded by the shipped ``sparkplug_b`` decoder, normalised and enforced.

What must hold: a device's BIRTH lands whole and its DATA (report by exception) lands with
the metrics it carries; a device only its registered edge node may speak for; the
gateway's UNKNOWN_ALIAS and SEQ_GAP are quarantined with that code; a DEATH is kept for
review as DEVICE_OFFLINE; a redelivered copy lands with the same (boot, seq)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from contracts import load_registry
from gateway.sparkplug import parse_topic
from gateway.sparkplug import sparkplug_b_pb2 as pb
from gateway.sparkplug.state import SparkplugState
from landing.format import ARROW_SCHEMA
from tests.gateway.sparkplug_payloads import EdgeNode, Metric
from transforms.decode import DecodeSchema, decode_chunk
from transforms.enforce import enforce_chunk
from transforms.frames import Chunk
from transforms.normalise import normalise_chunk
from transforms.registry import device_frame

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = load_registry(ROOT / "contracts")
SCHEMA = DecodeSchema.from_registry(REGISTRY)
NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
METER = [
    Metric("voltage_l1_v", 1, pb.Float, 231.5),
    Metric("voltage_l2_v", 2, pb.Float, 230.0),
    Metric("voltage_l3_v", 3, pb.Float, 229.5),
    Metric("current_l1_a", 4, pb.Float, 10.0),
    Metric("current_l2_a", 5, pb.Float, 11.0),
    Metric("current_l3_a", 6, pb.Float, 12.0),
    Metric("power_l1_kw", 7, pb.Double, 2.2),
    Metric("power_l2_kw", 8, pb.Double, 2.4),
    Metric("power_l3_kw", 9, pb.Double, 2.6),
    Metric("power_kw", 10, pb.Double, 7.2),
    Metric("apparent_power_kva", 11, pb.Double, 7.6),
    Metric("reactive_power_kvar", 12, pb.Double, -1.1),
    Metric("power_factor", 13, pb.Double, 0.95),
    Metric("frequency_hz", 14, pb.Double, 50.0),
    Metric("energy_import_kwh", 15, pb.Double, 1200.5),
    Metric("energy_export_kwh", 16, pb.Double, 3.25),
    Metric("Device Control/Rebirth", 17, pb.Boolean, False),
]


def device(device_id: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device_id,
        "client_id": "c-1",
        "branch_id": "b-1",
        "kind": "meter",
        "payload_format": "sparkplug_b",
        "rated_power_kw": 100.0,
        "tank_capacity_l": None,
        "cadence_s": 60,
        "status": "active",
        "mqtt_name": None,
        "profile": None,
        "edge_node": None,
    }
    row.update(extra)
    return row


DEVICES = [
    device("edge-1", profile="by_exception"),  # the edge node's account
    device("m-21", edge_node="edge-1"),
    device("m-99", edge_node="edge-2"),  # registered behind another edge node
]


def landed(state: SparkplugState, messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """What the gateway lands for each message (topic, JSON), as its session does."""
    out = []
    for topic, raw in messages:
        parsed = parse_topic(topic)
        assert parsed is not None
        out.append((topic, state.translate(parsed, topic, raw).payload))
    return out


def run(messages: list[tuple[str, bytes]]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    n = len(messages)
    at = int(NOW.timestamp() * 1_000_000)
    table = pa.Table.from_arrays(
        [
            pa.array([at + k for k in range(n)], pa.timestamp("us", tz="UTC")),
            pa.array(["mqtt"] * n),
            pa.array([t for t, _ in messages]),
            pa.array([t.split("/")[3] for t, _ in messages]),  # the edge node's account
            pa.array([p for _, p in messages], pa.large_binary()),
            pa.array(["seg"] * n),
            pa.array(range(n), pa.int64()),
        ],
        schema=ARROW_SCHEMA,
    )
    chunk = Chunk(envelopes=table)
    decode_chunk(chunk, SCHEMA, payload_limit=65536)
    normalise_chunk(chunk, REGISTRY, device_frame(pa.Table.from_pylist(DEVICES)))
    return enforce_chunk(chunk, REGISTRY, SCHEMA), chunk.rejects


def edge(name: str = "edge-1") -> EdgeNode:
    node = EdgeNode("g1", name, clock_ms=NOW_MS - 60_000)
    node.devices["m-21"] = list(METER)
    node.devices["m-99"] = list(METER)
    return node


def test_birth_and_data_of_a_device_land_and_death_is_kept_for_review() -> None:
    node = edge()
    state = SparkplugState(None)
    messages = landed(
        state,
        [
            node.nbirth(),
            node.dbirth("m-21"),
            node.data("m-21", {10: 7.5, 15: 1200.75}),
            node.data("m-21", {10: 7.1}, by_name=True),
            node.ddeath("m-21"),
        ],
    )
    accepted, rejects = run(messages)
    rows = accepted["meter_readings"].sort("seq").to_dicts()
    assert [r["device_id"] for r in rows] == ["m-21"] * 3
    birth, first, second = rows
    assert birth["voltage_l1_v"] == 231.5
    assert birth["energy_export_kwh"] == 3.25
    assert birth["reactive_power_kvar"] == -1.1
    assert (first["power_kw"], first["energy_import_kwh"], first["voltage_l1_v"]) == (
        7.5,
        1200.75,
        None,
    )
    assert (second["power_kw"], second["energy_import_kwh"]) == (7.1, None)
    # consecutive per device, one boot (the edge node's birth session)
    assert [r["seq"] for r in rows] == [0, 1, 2]
    assert len({r["boot"] for r in rows}) == 1
    assert birth["ts"] == datetime.fromtimestamp((NOW_MS - 60_000 + 2) / 1000, UTC)
    reasons = dict(zip(rejects["_row"].to_list(), rejects["reason_code"].to_list(), strict=True))
    # the NBIRTH carries only Sparkplug's own metrics (bdSeq, Node Control/Rebirth)
    assert reasons == {0: "MISSING_FIELD", 4: "DEVICE_OFFLINE"}


def test_the_gateways_problems_are_quarantined_with_their_code() -> None:
    node = edge()
    state = SparkplugState(None)
    messages = landed(
        state,
        [
            node.nbirth(),
            node.dbirth("m-21"),
            node.data("m-21", {42: 1}),  # an alias no BIRTH defined
            node.data("m-21", {10: 7.0}, seq=(node.seq + 3) % 256),  # two messages missing
        ],
    )
    accepted, rejects = run(messages)
    assert accepted["meter_readings"].height == 1  # the DBIRTH
    by_row = {r["_row"]: r for r in rejects.to_dicts()}
    assert by_row[2]["reason_code"] == "UNKNOWN_ALIAS"
    assert by_row[3]["reason_code"] == "SEQ_GAP"
    assert "the sender reports SEQ_GAP" in by_row[3]["detail"]


def test_a_device_registered_behind_another_edge_node_is_refused() -> None:
    node = edge()
    state = SparkplugState(None)
    accepted, rejects = run(landed(state, [node.nbirth(), node.dbirth("m-99")]))
    assert accepted == {}
    by_row = {r["_row"]: r for r in rejects.to_dicts()}
    assert by_row[1]["reason_code"] == "BRANCH_MISMATCH"
    assert "edge node" in by_row[1]["detail"]


def test_a_redelivered_copy_lands_with_the_same_boot_and_seq() -> None:
    node = edge()
    state = SparkplugState(None)
    births = [node.nbirth(), node.dbirth("m-21")]
    data = node.data("m-21", {10: 6.0})
    messages = landed(state, [*births, data, data])
    first, copy = (orjson.loads(p) for _, p in messages[2:])
    assert (first["boot"], first["seq"]) == (copy["boot"], copy["seq"])
    accepted, _ = run(messages)
    rows = accepted["meter_readings"].filter(pl.col("power_kw") == 6.0)
    assert rows["seq"].to_list() == [1, 1]  # the series stage keeps one (dedupe on seq)
