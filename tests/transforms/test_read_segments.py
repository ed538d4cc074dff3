"""The batch reads the landing log through ``landing`` itself: ``ReadSegments`` and its DoFn
take nothing from the caller (a DoFn's state must be plain values that an SDK worker in
another process can unpickle; the whole Beam run is checked by the batch tests in
tests/pipeline/, with workers in other processes in test_worker_pool.py), and a row
quarantined after Enforce gets its envelope back from the landing folder that the
``BatchContext`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from landing.chunks import group_segments
from landing.format import Envelope
from landing.reader import closed_segments, read_segment
from landing.writer import LandingWriter
from transforms.beam import DAMAGED, BatchContext, ReadSegments, _ReadFn, _with_envelopes

T0 = 1_763_251_200_000_000  # 2025-11-16T00:00:00Z


def _land(root: Path, writer_id: str, n: int) -> list[Path]:
    """``n`` envelopes in segments of a few hundred bytes each (several per writer)."""
    with LandingWriter(root, writer_id, roll_bytes=400, roll_seconds=None, fsync=False) as w:
        for i in range(n):
            topic = f"emaas/v1/c1/b{i % 3}/dev-{i % 5}/telemetry"
            w.append(Envelope(T0 + i, "mqtt", topic, f"dev-{i % 5}", b'{"seq":%d}' % i))
    return closed_segments(root)


def test_the_read_stage_reads_every_record_and_the_damage_through_landing(
    tmp_path: Path,
) -> None:
    segments = _land(tmp_path, "gw-1", 40)
    assert len(segments) > 3
    torn = segments[1]
    whole = read_segment(torn)
    torn.write_bytes(torn.read_bytes() + b"\x07\x00\x00\x00torn")  # a torn tail
    assert len(read_segment(torn)) == len(whole)
    expected = sorted(
        (record.segment, int(offset), topic)
        for path in segments
        for record in [read_segment(path)]
        for offset, topic in zip(record.offset, record.topic, strict=True)
    )
    assert len(expected) == 40

    ReadSegments()  # nothing injected
    read = _ReadFn()
    tables: list[pa.Table] = []
    damage: list[Any] = []
    groups = group_segments(segments, target_bytes=900)
    assert len(groups) > 1
    for group in groups:  # plain values: the paths of a group of closed segments
        for out in read.process(group):
            if isinstance(out, pa.Table):
                tables.append(out)
            else:
                assert out.tag == DAMAGED
                damage.append(out.value)
    assert sorted(row for table in tables for row in _keys(table)) == expected
    assert damage == [("damaged", "", "", "", torn.name, 8)]


def _keys(table: Any) -> list[tuple[str, int, str]]:
    columns = table.select(["segment", "offset_bytes", "topic"]).to_pydict()
    return list(zip(columns["segment"], columns["offset_bytes"], columns["topic"], strict=True))


def test_late_rejects_get_their_envelopes_back_from_the_landing_folder(tmp_path: Path) -> None:
    segments = _land(tmp_path, "gw-2", 12)
    first, second = read_segment(segments[0]), read_segment(segments[-1])
    picks = [(second, 0), (first, 1), (second, 0), (first, 0)]  # repeats and out of order
    rows = pl.DataFrame(
        {
            "segment": [r.segment for r, _ in picks],
            "offset_bytes": [int(r.offset[i]) for r, i in picks],
        }
    )
    ctx = BatchContext(
        pipeline_id="main",
        batch_no=1,
        lake_uri=str(tmp_path / "lake"),
        contracts_dir=None,
        devices=pl.DataFrame(),
        closed_dir=str(tmp_path / "closed"),
    )
    out = _with_envelopes(rows, ctx)
    assert out.select("segment", "offset_bytes").equals(rows)
    assert out.select("source", "topic", "identity", "payload").rows() == [
        (r.source[i], r.topic[i], r.identity[i], r.payload[i]) for r, i in picks
    ]
