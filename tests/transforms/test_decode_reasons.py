"""Reason codes the decoder gives, checked on whole chunks of landing envelopes (the same
function ``energylake process`` runs): what a payload becomes over MQTT, the transport that
reaches the pipeline with everything the broker took."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from contracts import load_registry
from landing.format import ARROW_SCHEMA
from transforms.decode import DecodeSchema, decode_chunk
from transforms.frames import Chunk

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = DecodeSchema.from_registry(load_registry(ROOT / "contracts"))
TOPIC = "emaas/v1/c1/b1/m-1/telemetry"
TASMOTA = "tele/s-1/SENSOR"


def chunk_of(payloads: list[bytes], topic: str = TOPIC, identity: str = "m-1") -> Chunk:
    """MQTT envelopes, one per payload, as the gateway lands them."""
    n = len(payloads)
    table = pa.Table.from_arrays(
        [
            pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
            pa.array(["mqtt"] * n),
            pa.array([topic] * n),
            pa.array([identity] * n),
            pa.array(payloads, pa.large_binary()),
            pa.array(["seg"] * n),
            pa.array(range(n), pa.int64()),
        ],
        schema=ARROW_SCHEMA,
    )
    return Chunk(envelopes=table)


def decoded(payloads: list[bytes], topic: str = TOPIC) -> Chunk:
    chunk = chunk_of(payloads, topic)
    decode_chunk(chunk, SCHEMA, payload_limit=65536)
    return chunk


def reasons(chunk: Chunk) -> dict[int, str]:
    return dict(zip(chunk.rejects["_row"].to_list(), chunk.rejects["reason_code"], strict=True))


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5E+999", b"-9e99999"])
def test_a_number_beyond_the_double_range_is_non_finite_as_over_http(number: bytes) -> None:
    """PIPELINE.md (and the HTTP edge's ``non_finite``): beyond double range is NON_FINITE.
    It was MALFORMED_PAYLOAD over MQTT: only NaN and Infinity tokens were recognised."""
    payloads = [
        b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":%s}}' % number,
        b'[{"device_id":"m-1","seq":2,"ts":1700000001,"readings":{"power_kw":%s}}]' % number,
        b'{"Time":"2024-01-01T00:00:00","ENERGY":{"Power":%s,"Total":1.0}}' % number,
    ]
    canonical = decoded(payloads[:2])
    tasmota = decoded(payloads[2:], TASMOTA)
    assert reasons(canonical) == {0: "NON_FINITE", 1: "NON_FINITE"}
    assert reasons(tasmota) == {0: "NON_FINITE"}
    assert "double range" in canonical.rejects["detail"][0]


def test_beyond_double_range_and_broken_json_is_malformed() -> None:
    chunk = decoded([b'{"device_id":"m-1","seq":1,"readings":{"voltage_l1_v":1e400}'])
    assert reasons(chunk) == {0: "MALFORMED_PAYLOAD"}
