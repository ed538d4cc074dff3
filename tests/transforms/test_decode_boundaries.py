"""The canonical decoder gives the same rows and the same rejects, with the same reasons
and details, whatever the blocks its strict Arrow parse happens to cut the lines into: on
valid, hostile and mutated payloads, decoding in blocks of 3 lines equals decoding in one
block. (Found by this test: Arrow infers the type of a key the contract does not know
from the lines it reads together, so a key sent as a string and then as a number made the
second line a SCHEMA_MISMATCH in one block and fine in two, and blocks whose unknown keys
had different types could not be put together.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transforms.ndjson as ndjson
from contracts import load_registry
from landing.format import ARROW_SCHEMA
from transforms.decode import DecodeSchema, Topics, _decode_canonical
from transforms.frames import ELEM, ROW, Chunk

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = DecodeSchema.from_registry(load_registry(ROOT / "contracts"))
TOPIC = "emaas/v1/c1/b1/m-1/telemetry"


def _chunk(payloads: list[bytes]) -> Chunk:
    n = len(payloads)
    table = pa.Table.from_arrays(
        [
            pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
            pa.array(["mqtt"] * n),
            pa.array([TOPIC] * n),
            pa.array(["m-1"] * n),
            pa.array(payloads, pa.large_binary()),
            pa.array(["seg"] * n),
            pa.array(range(n), pa.int64()),
        ],
        schema=ARROW_SCHEMA,
    )
    return Chunk(envelopes=table)


def _decode(
    payloads: list[bytes], *, block: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, Any]], list[Any]]:
    monkeypatch.setattr(ndjson, "PARSE_BLOCK", block)
    chunk = _chunk(payloads)
    topics = Topics.of(chunk.envelopes.column("topic"), SCHEMA.catalogue)
    rows = _decode_canonical(chunk, SCHEMA, list(range(len(payloads))), payloads, topics)
    frame = pl.concat([SCHEMA.empty_rows(), rows], how="diagonal_relaxed")
    out = frame.select(SCHEMA.empty_rows().columns).sort(ROW, ELEM).to_dicts()
    rejects = chunk.rejects.sort(ROW, ELEM).rows()
    return out, rejects


def _same(payloads: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    small_rows, small_rejects = _decode(payloads, block=3, monkeypatch=monkeypatch)
    whole_rows, whole_rejects = _decode(payloads, block=1 << 20, monkeypatch=monkeypatch)
    assert small_rejects == whole_rejects
    assert small_rows == whole_rows


def _reading(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "device_id": "m-1",
        "seq": seq,
        "ts": 1_700_000_000 + seq,
        "readings": {"energy_import_kwh": 10.5 + seq, "voltage_l1_v": 230.1, **extra},
        "units": {"energy_import_kwh": "kWh"},
    }


HOSTILE = [
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":NaN}}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":Infinity}}',
    b'{"device_id":"m-1","seq":99999999999999999999,"ts":1700000000}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":-9999999999999999999}}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":1e400}}',
    b'{"device_id":"m-1","seq":1}{"device_id":"m-1","seq":2}',
    b'{"device_id":"m-1","seq":1} {"device_id":"m-1","seq":2}',
    b'{"device_id":"m-1","seq":1} x}',
    b'{"device_id":"m-1","seq":1}]}',
    b'{"device_id":"m-1","seq":1,}',
    b'{"device_id":"m-1","seq":1 /* c */}',
    b'{"device_id":"m-\xff","seq":1}',
    b'{"device_id":"\\ud800","seq":1}',
    b'{"device_id":"m-1\x01","seq":1}',
    b'{"device_id":"m-1","seq":1,"seq":2}',
    b'{"device_id":"m-1","seq":"7","ts":1700000000}',
    b'{"device_id":"m-1","seq":1.5,"ts":1700000000}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":{"voltage_l1_v":"230"}}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"readings":[1,2]}',
    b'{"device_id":"m-1","seq":1,"ts":1700000000,"fw":"1.2"}',
    b'{"device_id":"m-1","seq":2,"ts":1700000000,"fw":1.2}',
    b'{"device_id":"m-1","seq":3,"ts":1700000000,"readings":{"x":"a"}}',
    b'{"device_id":"m-1","seq":4,"ts":1700000000,"readings":{"x":4}}',
    b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b"{}",
    b"[]",
    b"[{}]",
    b"",
    b"null",
    b"7",
    b'"{}"',
    b' {"device_id":"m-1","seq":1}',
    b'{"device_id":"m-1",\n"seq":1}',
    b'{"device_id":"m-1",\r"seq":1}',
    b'{"device_id":"m-1",\t"seq":1}',
    b'\xef\xbb\xbf{"device_id":"m-1","seq":1}',
    b'[{"device_id":"m-1","seq":1},{"device_id":"m-1","seq":2}]',
    b'[{"device_id":"m-1","seq":1},7]',
]


def test_hostile_payloads_among_good_ones_decode_the_same_in_any_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = [orjson.dumps(_reading(i)) for i in range(60)]
    payloads = []
    for k, bad in enumerate(HOSTILE):
        payloads += [*good[k % 7 : k % 7 + 2], bad]
    _same(payloads, monkeypatch)
    _same(good, monkeypatch)
    _same(HOSTILE, monkeypatch)


def test_an_unknown_key_typed_differently_is_an_unknown_key_in_any_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Arrow infers an unknown key's type per block: in one block the second type is a
    type change, across blocks the tables must still go together."""
    payloads = [orjson.dumps(_reading(i)) for i in range(6)]
    payloads[1] = orjson.dumps({**_reading(1), "fw": "1.2"})
    payloads[4] = orjson.dumps({**_reading(4), "fw": 1.2})
    payloads[2] = orjson.dumps(_reading(2, extra="x"))
    payloads[5] = orjson.dumps(_reading(5, extra=5))
    for block in (1 << 20, 3, 2):
        rows, rejects = _decode(payloads, block=block, monkeypatch=monkeypatch)
        assert rejects == []
        unknown = {r[ROW]: r["_unknown"] for r in rows}
        assert unknown == {
            0: None,
            1: "fw",
            2: "readings.extra",
            3: None,
            4: "fw",
            5: "readings.extra",
        }


_MUTANT_BYTES = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b'"',
        b"\\",
        b"\n",
        b" ",
        b"\x00",
        b"\xff",
        b"NaN",
        b"1e999",
        b"-",
        b".",
        b"0",
        b"99999999999999999999",
        b"/*",
        b"true",
        b"null",
        b"\xc3",
    ]
)


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    seq = draw(st.integers(min_value=0, max_value=10**6))
    extra = draw(
        st.dictionaries(
            st.sampled_from(["voltage_l2_v", "power_kw", "x", "status"]),
            st.one_of(
                st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5)
            ),
            max_size=2,
        )
    )
    base = orjson.dumps(_reading(seq, **extra))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        at = draw(st.integers(min_value=0, max_value=len(base)))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(_MUTANT_BYTES)
        if how == "insert":
            base = base[:at] + piece + base[at:]
        elif how == "delete":
            base = base[:at] + base[at + draw(st.integers(1, 4)) :]
        else:
            base = base[:at] + piece + base[at + len(piece) :]
    return base


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(payloads=st.lists(_payload(), min_size=1, max_size=30))
def test_mutated_payloads_decode_the_same_in_any_blocks(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _same(payloads, monkeypatch)
