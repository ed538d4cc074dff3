"""The batch reads the landing log through ``landing`` itself, from the copies of the
segments the claim staged in the lake: ``ReadSegments`` and its DoFn take only the
``BatchContext`` (plain values that an SDK worker in another process can unpickle: the
lake's URI, the lake-relative path of each segment), never a local path of the driver.
The whole Beam run is checked by the batch tests in tests/pipeline/, with workers in other
processes in test_worker_pool.py. A row quarantined after Enforce gets its envelope back
from the lake's copy of its segment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from lake.errors import StorageError
from lake.storage import Store
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


def _staged(tmp_path: Path, segments: list[Path]) -> tuple[BatchContext, Store]:
    """The segments copied into a lake, as the claim stages them, and a context naming
    them; the landing folder is then removed: nothing may read it."""
    store = Store.from_uri(str(tmp_path / "lake"))
    rels = {}
    for path in segments:
        rels[path.name] = f"raw/2025/11/16/{path.name}"
        store.put_file(rels[path.name], path)
    for path in segments:
        path.unlink()
    ctx = BatchContext(
        pipeline_id="main",
        batch_no=1,
        lake_uri=store.uri,
        contracts_dir=None,
        devices=pl.DataFrame(),
        segments=rels,
    )
    return ctx, store


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

    sized = [(f"raw/2025/11/16/{p.name}", p.stat().st_size) for p in segments]
    ctx, _ = _staged(tmp_path, segments)
    ReadSegments(ctx)  # nothing injected but the context
    read = _ReadFn(ctx)
    read.setup()
    tables: list[pa.Table] = []
    damage: list[Any] = []
    groups = group_segments(sized, target_bytes=900)
    assert len(groups) > 1
    for group in groups:  # plain values: the lake paths of a group of staged segments
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


def test_late_rejects_get_their_envelopes_back_from_the_lake(tmp_path: Path) -> None:
    segments = _land(tmp_path, "gw-2", 12)
    first, second = read_segment(segments[0]), read_segment(segments[-1])
    picks = [(second, 0), (first, 1), (second, 0), (first, 0)]  # repeats and out of order
    rows = pl.DataFrame(
        {
            "segment": [r.segment for r, _ in picks],
            "offset_bytes": [int(r.offset[i]) for r, i in picks],
        }
    )
    ctx, store = _staged(tmp_path, segments)
    out = _with_envelopes(rows, ctx, store)
    assert out.select("segment", "offset_bytes").equals(rows)
    assert out.select("source", "topic", "identity", "payload").rows() == [
        (r.source[i], r.topic[i], r.identity[i], r.payload[i]) for r, i in picks
    ]


def test_a_missing_staged_segment_fails_the_read_and_names_it(tmp_path: Path) -> None:
    segments = _land(tmp_path, "gw-3", 6)
    ctx, store = _staged(tmp_path, segments)
    gone = ctx.segments[segments[0].name]
    store.delete(gone)
    read = _ReadFn(ctx)
    read.setup()
    with pytest.raises(StorageError, match=gone):
        list(read.process([gone]))
    rows = pl.DataFrame({"segment": ["not-of-this-batch.seg"], "offset_bytes": [8]})
    with pytest.raises(StorageError, match="not one of batch main:1's"):
        _with_envelopes(rows, ctx, store)
