"""The Sparkplug B state machine of the gateway (gateway/sparkplug/state.py), fed payloads
built as the specification describes them: aliases and datatypes from BIRTH, seq 0-255
with wrap-around, bdSeq from BIRTH to DEATH, rebirth requests, the state file across
restarts, and a crash-style redelivery landing with the same (boot, seq)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sparkplug import parse_topic
from gateway.sparkplug import sparkplug_b_pb2 as pb
from gateway.sparkplug.codec import REBIRTH_METRIC
from gateway.sparkplug.state import SparkplugState, Translation
from tests.gateway.sparkplug_payloads import EdgeNode, Metric, wire_ddata_int32

METER = [
    Metric("Energy/import_kwh", 1, pb.Double, 10.5),
    Metric("Power/active_w", 2, pb.Int32, -5),
    Metric("Status/ok", 3, pb.Boolean, True),
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _node(name: str = "edge-1") -> EdgeNode:
    node = EdgeNode("plant-a", name, metrics=[Metric("Node/temp_c", 1, pb.Float, 21.5)])
    node.devices = {"meter-1": list(METER), "meter-2": list(METER)}
    return node


def _state(folder: Path | None = None, clock: Clock | None = None) -> SparkplugState:
    return SparkplugState(folder, clock=clock or Clock(), wall_clock_s=lambda: 1_800_000_000.0)


def _send(state: SparkplugState, message: tuple[str, bytes]) -> tuple[dict[str, Any], Translation]:
    topic, raw = message
    parsed = parse_topic(topic)
    assert parsed is not None
    out = state.translate(parsed, topic, raw)
    assert out.decoded
    doc = orjson.loads(out.payload)
    assert base64.b64decode(doc["raw"]) == raw
    return doc, out


def _rebirth_of(out: Translation) -> dict[str, Any]:
    assert out.rebirth is not None
    topic, raw = out.rebirth
    payload = pb.Payload.FromString(raw)
    (metric,) = payload.metrics
    return {
        "topic": topic,
        "name": metric.name,
        "datatype": metric.datatype,
        "value": metric.boolean_value,
    }


def test_birth_then_data_by_alias_reads_each_datatype_from_the_birth() -> None:
    state, node = _state(), _node()
    doc, out = _send(state, node.nbirth())
    assert (doc["type"], doc["device"], doc["bd_seq"], doc["seq"], doc["sp_seq"]) == (
        "NBIRTH",
        None,
        0,
        0,
        0,
    )
    assert doc["metrics"] == {"bdSeq": 0, "Node Control/Rebirth": False, "Node/temp_c": 21.5}
    assert doc["problem"] is None
    assert out.rebirth is None
    boot = doc["boot"]
    doc, _ = _send(state, node.dbirth("meter-1"))
    assert doc["metrics"] == {"Energy/import_kwh": 10.5, "Power/active_w": -5, "Status/ok": True}
    assert (doc["boot"], doc["seq"], doc["sp_seq"]) == (boot, 0, 1)
    # DDATA by alias only: the Int32 travels in the uint32 field, read with the BIRTH type
    doc, out = _send(state, node.data("meter-1", {2: -1234, 1: 11.25, 3: None}))
    assert doc["metrics"] == {
        "Power/active_w": -1234,
        "Energy/import_kwh": 11.25,
        "Status/ok": None,
    }
    assert doc["metric_timestamps"] == {
        "Power/active_w": node.clock_ms,
        "Energy/import_kwh": node.clock_ms,
        "Status/ok": node.clock_ms,
    }
    assert (doc["seq"], doc["sp_seq"], doc["timestamp"], doc["problem"]) == (
        1,
        2,
        node.clock_ms,
        None,
    )
    assert doc["skipped"] == []
    assert out.rebirth is None
    # by name, no alias
    doc, _ = _send(state, node.data("meter-1", {2: 7}, by_name=True))
    assert doc["metrics"] == {"Power/active_w": 7}
    # NDATA: the node's own table
    doc, _ = _send(state, node.data(None, {1: -3.5}))
    assert (doc["device"], doc["seq"], doc["metrics"]) == (None, 1, {"Node/temp_c": -3.5})


def test_a_hand_encoded_wire_payload_decodes_with_the_birth_datatype() -> None:
    state, node = _state(), _node()
    _send(state, node.nbirth())
    _send(state, node.dbirth("meter-1"))
    raw = wire_ddata_int32(timestamp_ms=1_795_000_000_999, seq=2, alias=2, value=-42)
    doc, _ = _send(state, (node.topic("DDATA", "meter-1"), raw))
    assert doc["metrics"] == {"Power/active_w": -42}
    assert (doc["timestamp"], doc["sp_seq"], doc["problem"]) == (1_795_000_000_999, 2, None)


@pytest.mark.parametrize(
    ("datatype", "sent", "landed"),
    [
        (pb.Int8, -1, -1),
        (pb.Int8, 127, 127),
        (pb.Int8, -128, -128),
        (pb.Int16, -300, -300),
        (pb.Int32, -(2**31), -(2**31)),
        (pb.Int64, -2, -2),
        (pb.Int64, 2**63 - 1, 2**63 - 1),
        (pb.UInt8, 255, 255),
        (pb.UInt16, 65535, 65535),
        (pb.UInt32, 2**32 - 1, 2**32 - 1),
        (pb.UInt64, 2**64 - 1, 2**64 - 1),
        (pb.Float, 1.1, 1.1),
        (pb.Double, 0.1, 0.1),
        (pb.Boolean, False, False),
        (pb.String, "on", "on"),
        (pb.Text, "a text", "a text"),
        (pb.DateTime, 1_795_000_000_123, 1_795_000_000_123),
    ],
)
def test_datatypes(datatype: int, sent: Any, landed: Any) -> None:
    state, node = _state(), _node()
    node.devices["meter-1"] = [Metric("m", 9, datatype, sent)]
    _send(state, node.nbirth())
    doc, _ = _send(state, node.dbirth("meter-1"))
    assert doc["metrics"] == {"m": landed}
    doc, _ = _send(state, node.data("meter-1", {9: sent}))
    assert doc["metrics"] == {"m": landed}
    assert doc["problem"] is None


def test_an_int8_sent_as_its_own_byte_also_reads_negative() -> None:
    """Some edge nodes put an Int8 -1 as 0xFF, others as 0xFFFFFFFF: both read -1."""
    state, node = _state(), _node()
    node.devices["meter-1"] = [Metric("i8", 4, pb.Int8, 0)]
    _send(state, node.nbirth())
    _send(state, node.dbirth("meter-1"))
    topic, raw = node.data("meter-1", {4: 0})
    payload = pb.Payload.FromString(raw)
    payload.metrics[0].int_value = 0xFF
    doc, _ = _send(state, (topic, payload.SerializeToString()))
    assert doc["metrics"] == {"i8": -1}


def test_unsupported_types_are_skipped_with_a_note() -> None:
    state, node = _state(), _node()
    node.devices["meter-1"] = [
        Metric("ok", 1, pb.Int16, 5),
        Metric("table", 2, pb.DataSet, True),
        Metric("tpl", 3, pb.Template, True),
        Metric("arr", 4, pb.Int8Array, b"\x01\x02"),
        Metric("blob", 5, pb.Bytes, b"\x00"),
    ]
    _send(state, node.nbirth())
    doc, _ = _send(state, node.dbirth("meter-1"))
    assert doc["metrics"] == {"ok": 5}
    reasons = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert reasons == {
        "table": "unsupported datatype DataSet",
        "tpl": "unsupported datatype Template",
        "arr": "unsupported datatype Int8Array",
        "blob": "unsupported datatype Bytes",
    }
    doc, _ = _send(state, node.data("meter-1", {1: -7, 2: True}))
    assert doc["metrics"] == {"ok": -7}
    assert [s["alias"] for s in doc["skipped"]] == [2]
    assert doc["problem"] is None


def test_unknown_alias_is_a_problem_and_asks_for_a_rebirth_rate_limited() -> None:
    clock = Clock()
    state, node = _state(clock=clock), _node()
    _send(state, node.nbirth())
    _send(state, node.dbirth("meter-1"))
    doc, out = _send(state, node.data("meter-1", {2: 1, 77: 5}))
    assert doc["metrics"] == {"Power/active_w": 1}
    assert doc["problem"]["code"] == "UNKNOWN_ALIAS"
    assert "77" in doc["problem"]["detail"]
    assert doc["skipped"] == [{"name": None, "alias": 77, "reason": "unknown alias"}]
    assert _rebirth_of(out) == {
        "topic": "spBv1.0/plant-a/NCMD/edge-1",
        "name": REBIRTH_METRIC,
        "datatype": pb.Boolean,
        "value": True,
    }
    _doc, out = _send(state, node.data("meter-1", {78: 5}))
    assert out.problem == "UNKNOWN_ALIAS"
    assert out.rebirth is None
    clock.now += 5.0
    _doc, out = _send(state, node.data("meter-1", {79: 5}))
    assert out.rebirth is not None


def test_data_before_any_birth_and_ddata_without_dbirth() -> None:
    state, node = _state(), _node()
    node.seq = 41
    doc, out = _send(state, node.data("meter-1", {2: 1}))
    assert doc["problem"]["code"] == "UNKNOWN_ALIAS"
    assert "no NBIRTH" in doc["problem"]["detail"]
    assert out.rebirth is not None
    first_boot = doc["boot"]
    doc, _ = _send(state, node.nbirth())
    assert doc["boot"] == first_boot + 1
    doc, out = _send(state, node.data("meter-2", {2: 1}))
    assert doc["problem"] == {
        "code": "UNKNOWN_ALIAS",
        "detail": "no DBIRTH of device meter-2 in this boot",
    }


def test_seq_wraps_at_255_and_a_gap_holds_until_the_rebirth() -> None:
    clock = Clock()
    state, node = _state(clock=clock), _node()
    boot = _send(state, node.nbirth())[0]["boot"]
    _send(state, node.dbirth("meter-1"))
    for i in range(300):  # sp_seq 2..255, 0..45: no problem across the wrap
        doc, out = _send(state, node.data("meter-1", {2: i}))
        assert doc["problem"] is None, doc
        assert (doc["boot"], doc["seq"]) == (boot, i + 1)
    assert doc["sp_seq"] == 301 % 256
    node.seq += 3  # three messages lost
    doc, out = _send(state, node.data("meter-1", {2: 1}))
    assert doc["problem"]["code"] == "SEQ_GAP"
    assert (
        doc["problem"]["detail"] == f"seq {node.seq} after {node.seq - 4} (expected {node.seq - 3})"
    )
    assert out.rebirth is not None
    assert doc["seq"] == 301  # the lake's seq stays consecutive: the gap is in the problem
    doc, out = _send(state, node.data("meter-1", {2: 2}))  # in order, but not trusted yet
    assert doc["problem"]["code"] == "SEQ_GAP"
    assert "awaiting" in doc["problem"]["detail"]
    assert out.rebirth is None  # rate-limited
    # the rebirth: NBIRTH (same bdSeq, seq 0), a new boot, every device's seq from 0
    doc, _ = _send(state, node.nbirth())
    assert (doc["boot"], doc["seq"], doc["bd_seq"]) == (boot + 1, 0, 0)
    doc, _ = _send(state, node.dbirth("meter-1"))
    assert (doc["boot"], doc["seq"], doc["problem"]) == (boot + 1, 0, None)
    doc, _ = _send(state, node.data("meter-1", {2: 3}))
    assert (doc["seq"], doc["problem"]) == (1, None)


def test_bdseq_ties_a_death_to_its_birth() -> None:
    state, node = _state(), _node()
    _send(state, node.nbirth())
    _send(state, node.dbirth("meter-1"))
    doc, _ = _send(state, node.ndeath(bd_seq=7))  # an old Will, delivered late
    assert doc["problem"]["code"] == "STALE_DEATH"
    assert doc["bd_seq"] == 7
    state_node = state.node("plant-a", "edge-1")
    assert state_node is not None
    assert state_node.alive
    doc, out = _send(state, node.ndeath())
    assert (doc["type"], doc["bd_seq"], doc["problem"], doc["sp_seq"]) == ("NDEATH", 0, None, None)
    assert out.rebirth is None
    assert not state_node.alive
    doc, out = _send(state, node.data("meter-1", {2: 1}))  # after death, before birth
    assert doc["problem"]["code"] == "UNKNOWN_ALIAS"
    assert out.rebirth is not None
    node.bd_seq += 1  # the next connection
    doc, _ = _send(state, node.nbirth())
    assert (doc["bd_seq"], doc["problem"]) == (1, None)


def test_device_seqs_are_consecutive_per_device_and_ddeath_counts() -> None:
    state, node = _state(), _node()
    _send(state, node.nbirth())
    _send(state, node.dbirth("meter-1"))
    _send(state, node.dbirth("meter-2"))
    seqs: dict[str | None, list[int]] = {}
    for i in range(20):
        device = ("meter-1", "meter-2", None)[i % 3]
        doc, _ = _send(state, node.data(device, {1: 1.0}))
        seqs.setdefault(device, []).append(doc["seq"])
    doc, _ = _send(state, node.ddeath("meter-2"))
    assert doc["problem"] is None
    assert seqs["meter-1"] == list(range(1, 8))
    assert seqs["meter-2"] + [doc["seq"]] == list(range(1, 9))
    assert seqs[None] == list(range(1, 7))


def test_the_state_survives_a_restart(tmp_path: Path) -> None:
    state, node = _state(tmp_path), _node()
    boot = _send(state, node.nbirth())[0]["boot"]
    _send(state, node.dbirth("meter-1"))
    _send(state, node.data("meter-1", {2: 1}))
    assert state.dirty
    assert state.persist() == 1
    assert not state.dirty
    assert (tmp_path / "plant-a" / "edge-1.json").stat().st_mode & 0o777 == 0o600
    again = _state(tmp_path)
    doc, _out = _send(again, node.data("meter-1", {2: -9}))
    assert (doc["boot"], doc["seq"], doc["metrics"], doc["problem"]) == (
        boot,
        2,
        {"Power/active_w": -9},
        None,
    )
    (tmp_path / "plant-a" / "edge-1.json").write_bytes(b"{not json")
    fresh = _state(tmp_path)  # unreadable: moved aside, the node starts afresh
    assert fresh.node("plant-a", "edge-1") is None
    assert len(list((tmp_path / "plant-a").glob("edge-1.json.unreadable-*"))) == 1


def test_a_payload_that_is_not_protobuf_is_landed_as_received() -> None:
    state = _state()
    topic = "spBv1.0/plant-a/DDATA/edge-1/meter-1"
    parsed = parse_topic(topic)
    assert parsed is not None
    out = state.translate(parsed, topic, b"\xff\xff\xff")
    assert (out.decoded, out.payload, out.problem) == (False, b"\xff\xff\xff", "MALFORMED_PAYLOAD")


def test_topics_outside_the_six_types_are_not_decoded() -> None:
    assert parse_topic("spBv1.0/g/NCMD/e") is None
    assert parse_topic("spBv1.0/g/DCMD/e/d") is None
    assert parse_topic("spBv1.0/STATE/host") is None
    assert parse_topic("spBv1.0/g/NDATA/e/d") is None  # a node type with a device segment
    assert parse_topic("spBv1.0/g/DDATA/e") is None


# -- crash-style redelivery --------------------------------------------------------------


def _scenario(births: list[int], total: int) -> list[tuple[str, bytes]]:
    """An edge node's messages: NBIRTH, DBIRTHs, then data of two devices and the node,
    with a rebirth (NBIRTH, DBIRTHs) before each index in ``births``; enough messages to
    wrap the seq."""
    node = _node()
    out = [node.nbirth(), node.dbirth("meter-1"), node.dbirth("meter-2")]
    for i in range(total):
        if i in births:
            out += [node.nbirth(), node.dbirth("meter-1"), node.dbirth("meter-2")]
        out.append(node.data(("meter-1", "meter-2", None)[i % 3], {1: float(i)}))
    return out


def _run(state: SparkplugState, messages: list[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    landed = []
    for message in messages:
        doc, _ = _send(state, message)
        landed.append((doc["device"], doc["boot"], doc["seq"], doc["problem"]))
    return landed


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 299), max_size=3),
    st.integers(0, 320),
    st.integers(0, 320),
    st.integers(0, 320),
)
def test_a_redelivery_after_a_crash_lands_with_the_same_boot_and_seq(
    births: list[int], acked: int, written: int, processed: int
) -> None:
    """The gateway processed ``processed`` messages, wrote its state after ``written`` of
    them and acked ``acked`` (acked <= written <= processed: acks wait for the state file),
    then crashed. Restarted from the state file, it gets from the broker every message
    from ``acked`` on, in order: each lands as it did, and the rest as without a crash."""
    messages = _scenario(sorted(set(births)), 300)
    acked, written, processed = sorted((acked, written, min(processed, len(messages))))
    acked, written = min(acked, processed), min(written, processed)
    reference = _run(_state(), messages)
    assert all(problem is None for *_, problem in reference)
    with tempfile.TemporaryDirectory() as folder:
        before = _state(Path(folder))
        assert _run(before, messages[:written]) == reference[:written]
        before.persist()
        assert _run(before, messages[written:processed]) == reference[written:processed]
        after = _state(Path(folder))  # the crash: what was written is all that is left
        assert _run(after, messages[acked:]) == reference[acked:]
