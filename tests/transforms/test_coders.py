"""The Beam coders of the pipeline's elements: exact round trips, size estimates that do
not serialise, and Beam picking them for the typed PCollections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from transforms.beam import TableRows
from transforms.coders import ArrowTableCoder, ChunkCoder, FrameCoder, coder_for
from transforms.frames import Chunk


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": ["m-1", "m-2", None],
            "ts": [datetime(2026, 11, 1, tzinfo=UTC)] * 3,
            "energy_import_kwh": [1.5, None, 3.25],
            "status": pl.Series(["ok", "fault", "ok"], dtype=pl.Categorical),
            "seq": pl.Series([1, 2, 3], dtype=pl.Int64),
        }
    )


def _table() -> pa.Table:
    return pa.table(
        {
            "payload": pa.array([b'{"a":1}', b"\xff\x00", b""], type=pa.large_binary()),
            "offset_bytes": pa.array([16, 40, 80], type=pa.int64()),
        }
    )


class _NoEncode:
    """Fails the test if a coder serialises while it is only asked for a size."""

    def __init__(self, coder: Any) -> None:
        self.coder = coder

    def __enter__(self) -> None:
        def refuse(value: Any) -> bytes:
            raise AssertionError("estimate_size serialised the element")

        self.saved = self.coder.encode
        self.coder.encode = refuse

    def __exit__(self, *exc: object) -> None:
        self.coder.encode = self.saved


def test_frames_tables_and_chunks_round_trip_exactly() -> None:
    frame, table = _frame(), _table()
    assert FrameCoder().decode(FrameCoder().encode(frame)).equals(frame)
    assert FrameCoder().decode(FrameCoder().encode(frame)).schema == frame.schema
    assert ArrowTableCoder().decode(ArrowTableCoder().encode(table)).equals(table)
    chunk = Chunk(envelopes=table, rows=frame)
    back = ChunkCoder().decode(ChunkCoder().encode(chunk))
    assert back.envelopes.equals(table)
    assert back.rows.equals(frame)
    assert back.rejects.schema == chunk.rejects.schema


@pytest.mark.parametrize(
    ("coder", "value"),
    [
        (FrameCoder(), _frame()),
        (ArrowTableCoder(), _table()),
        (ChunkCoder(), Chunk(envelopes=_table(), rows=_frame())),
    ],
)
def test_size_estimates_do_not_serialise(coder: Any, value: Any) -> None:
    with _NoEncode(coder):
        size = coder.get_impl().estimate_size(value)
    assert size > 0


def test_beam_uses_them_for_the_typed_pcollections() -> None:
    assert isinstance(coder_for(pl.DataFrame), FrameCoder)
    assert isinstance(coder_for(pa.Table), ArrowTableCoder)
    assert isinstance(coder_for(Chunk), ChunkCoder)
    keyed = coder_for(TableRows)  # ((tenant, dataset), rows): a tuple coder
    assert type(keyed).__name__ == "TupleCoder"
    assert isinstance(keyed.coders()[1], FrameCoder)
