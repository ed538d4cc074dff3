"""The landing log on real files: round trips, torn and corrupt tails, recovery, rolling,
atomic close, concurrent writers, and the simulator's landing route."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landing.format import (
    ARROW_SCHEMA,
    FILE_HEADER_BYTES,
    FRAME_HEADER_BYTES,
    MIB,
    SOURCES,
    Envelope,
    LandingError,
)
from landing.reader import (
    closed_segments,
    iter_segment_chunks,
    iter_segment_tables,
    read_records_at,
    read_segment,
)
from landing.writer import LandingWriter, recover
from simulator.config import SimConfig
from simulator.landing import LandingSink, simulate_to_landing
from simulator.run import simulate

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_763_251_200_000_000  # 2025-11-16T00:00:00Z in microseconds


def _env(i: int, payload: bytes | None = None, **kw: Any) -> Envelope:
    fields: dict[str, object] = {
        "received_at_us": T0 + i * 1000,
        "source": SOURCES[i % 3],
        "topic": f"emaas/v1/c{i % 4}/b{i % 7}/dev-{i % 11}/telemetry",
        "identity": f"dev-{i % 11}",
        "payload": payload if payload is not None else b'{"seq":%d}' % i,
    }
    fields.update(kw)
    return Envelope(**fields)  # type: ignore[arg-type]


_NAME = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)-([a-z0-9-]{1,32})-(\d{6,})-([0-9a-f]{16})\.seg")


def _name_parts(name: str) -> tuple[str, str, str, str]:
    """(stamp, writer id, counter, writer instance) of a segment name; fails if not one."""
    match = _NAME.fullmatch(name)
    assert match, name
    stamp, writer, counter, instance = match.groups()
    return stamp, writer, counter, instance


def _write(root: Path, envs: list[Envelope], **kw: object) -> Path:
    """Write ``envs`` into exactly one closed segment and return its path."""
    kw.setdefault("roll_bytes", 1 << 40)
    kw.setdefault("roll_seconds", None)
    kw.setdefault("fsync", False)
    with LandingWriter(root, "t", **kw) as writer:  # type: ignore[arg-type]
        writer.append_many(envs)
    (path,) = closed_segments(root)
    return path


def _all_records(root: Path) -> list[Envelope]:
    out: list[Envelope] = []
    for path in closed_segments(root):
        records = read_segment(path)
        assert records.damage is None, (path.name, records.damage)
        out.extend(records.envelopes())
    return out


# --------------------------------------------------------------------------- round trip


def test_round_trip_of_awkward_envelopes(tmp_path: Path) -> None:
    big = os.urandom(5 * MIB)
    envs = [
        _env(0, b""),
        _env(1, big),
        _env(2, b"\xff\xfe\x00not utf-8\x80"),
        _env(3, topic="emaas/v1/ಕ್ಲೈಂಟ್/शाखा/📟/telemetry", identity="डिवाइस-1"),
        _env(4, identity=""),
        _env(5, b"\n" * 100, source="http", topic="/v1/telemetry"),
        _env(6, source="file", topic="inbox/2026/11/16/x.ndjson"),
        *[_env(i) for i in range(7, 1000)],
    ]
    refs: list[object] = []
    with LandingWriter(tmp_path, "gw-1", roll_seconds=None, fsync=True) as writer:
        refs.extend(writer.append(env) for env in envs[:3])
        refs.extend(writer.append_many(envs[3:]))
        writer.sync()
    (path,) = closed_segments(tmp_path)
    records = read_segment(path)
    assert records.damage is None
    assert len(records) == len(envs)
    assert records.envelopes() == envs
    assert records.payload[1] == big
    assert [(r.segment, r.offset) for r in refs] == [  # type: ignore[attr-defined]
        (path.name, off) for off in records.offset.tolist()
    ]
    assert records.offset[0] == FILE_HEADER_BYTES
    assert records.received_at_us.dtype.name == "int64"

    table = records.to_arrow()
    assert table.schema == ARROW_SCHEMA
    assert table.num_rows == len(envs)
    assert table.column("payload").to_pylist() == [e.payload for e in envs]
    assert table.column("topic").to_pylist() == [e.topic for e in envs]
    assert table.column("segment").to_pylist() == [path.name] * len(envs)
    assert table.column("received_at").cast(pa.int64()).to_pylist() == [
        e.received_at_us for e in envs
    ]

    chunks = list(iter_segment_chunks(path, 64))
    assert [len(c) for c in chunks] == [64] * 15 + [40]
    assert [e for c in chunks for e in c.envelopes()] == envs
    assert all(c.damage is None for c in chunks)


def test_segment_names_and_layout(tmp_path: Path) -> None:
    with LandingWriter(tmp_path, "gw-a", roll_seconds=None, fsync=False) as writer:
        ref = writer.append(_env(0))
        assert (tmp_path / "open" / ref.segment).is_file()
        assert not (tmp_path / "closed" / ref.segment).exists()
        writer.roll()
        writer.append(_env(1))
    names = [p.name for p in closed_segments(tmp_path)]
    assert len(names) == 2
    assert names == sorted(names)
    parts = [_name_parts(n) for n in names]
    assert [(w, c) for _s, w, c, _i in parts] == [("gw-a", "000001"), ("gw-a", "000002")]
    assert len({i for _s, _w, _c, i in parts}) == 1  # one writer instance
    assert not list((tmp_path / "open").glob("*.seg"))
    # a new writer with the same id continues the counter (another instance id)
    with LandingWriter(tmp_path, "gw-a", roll_seconds=None, fsync=False) as writer:
        name = writer.append(_env(2)).segment
        assert name is not None
        assert _name_parts(name)[2] == "000003"
        assert _name_parts(name)[3] != parts[0][3]


def _names_after_restart(tmp_path: Path, root: Path, writer_id: str) -> list[str]:
    """Write two segments with a fixed clock, then archive them (open/ and closed/ empty)."""
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    names = []
    with LandingWriter(root, writer_id, fsync=False, clock=lambda: 1_763_251_200.0) as w:
        names.append(w.append(_env(0)).segment)
        w.roll()
        names.append(w.append(_env(1)).segment)
    for path in closed_segments(root):
        shutil.move(path, archive / path.name)
    return [n for n in names if n is not None]


def test_segment_names_are_never_reused_after_the_log_was_emptied(tmp_path: Path) -> None:
    # The processor archives every closed segment; a restarted writer then finds open/
    # and closed/ empty. The same clock (a replay, a clock stepped back, or the simulator's
    # reception times) must still not give a name the raw archive already holds.
    root = tmp_path / "landing"
    first = _names_after_restart(tmp_path, root, "gateway")
    second = _names_after_restart(tmp_path, root, "gateway")
    assert len(set(first + second)) == 4, (first, second)
    # Names still sort by opening time first: the stamp leads.
    assert all(n.startswith("20251116T000000.000000Z-gateway-") for n in first + second)


def test_two_writers_with_one_id_on_two_hosts_never_share_a_name(tmp_path: Path) -> None:
    # Two gateways with the default writer id, each with its own landing root (two hosts),
    # archive into one lake: their names must differ even at the same clock.
    a = _names_after_restart(tmp_path, tmp_path / "host-a", "gateway")
    b = _names_after_restart(tmp_path, tmp_path / "host-b", "gateway")
    assert not set(a) & set(b), (a, b)


def test_segments_sort_by_stamp_then_counter_within_a_writer(tmp_path: Path) -> None:
    now = [1_763_251_200.0]
    with LandingWriter(tmp_path, "gw", fsync=False, clock=lambda: now[0]) as w:
        names = []
        for i in range(12):  # same stamp for all: the counter breaks the tie
            names.append(w.append(_env(i)).segment)
            w.roll()
        now[0] += 1
        names.append(w.append(_env(99)).segment)
    assert [p.name for p in closed_segments(tmp_path)] == names


def test_segments_of_the_old_name_form_are_still_recovered(tmp_path: Path) -> None:
    # A gateway upgraded with segments left in open/ under the old <stamp>-<id>-<n>.seg form.
    data = _write(tmp_path / "src", [_env(i) for i in range(3)]).read_bytes()
    old = "20261116T000000.000000Z-gateway-000007.seg"
    (tmp_path / "log" / "open").mkdir(parents=True)
    (tmp_path / "log" / "open" / old).write_bytes(data)
    with LandingWriter(tmp_path / "log", "gateway", fsync=False) as writer:
        assert [r.segment for r in writer.recovered] == [old]
        name = writer.append(_env(5)).segment
        assert name is not None
        assert _name_parts(name)[2] == "000008"
    assert (tmp_path / "log" / "closed" / old).is_file()


@pytest.mark.parametrize("writer_id", ["", "UPPER", "a_b", "x" * 33, "dot.dot", "a/b"])
def test_writer_id_is_validated(tmp_path: Path, writer_id: str) -> None:
    with pytest.raises(LandingError, match="writer id"):
        LandingWriter(tmp_path, writer_id)


def test_one_live_writer_per_id(tmp_path: Path) -> None:
    with LandingWriter(tmp_path, "gw", fsync=False):
        with pytest.raises(LandingError, match="live writer"):
            LandingWriter(tmp_path, "gw")
        LandingWriter(tmp_path, "gw-2", fsync=False).close()
    LandingWriter(tmp_path, "gw", fsync=False).close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "amqp"}, "source"),
        ({"topic": "bad \udcff surrogate"}, "cannot be encoded"),
        ({"identity": "x" * 70000}, "65535"),
        ({"payload": "text, not bytes"}, "payload must be bytes"),
        ({"received_at_us": 2**63}, "cannot be encoded"),
    ],
)
def test_bad_envelopes_are_refused_without_side_effects(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with LandingWriter(tmp_path, "gw", fsync=False) as writer:
        writer.append(_env(0))
        with pytest.raises(LandingError, match=message):
            writer.append_many([_env(1), _env(2, **change)])
        writer.append(_env(3))
    assert [e.received_at_us for e in _all_records(tmp_path)] == [T0, T0 + 3000]


def test_closed_writer_refuses(tmp_path: Path) -> None:
    writer = LandingWriter(tmp_path, "gw", fsync=False)
    writer.close()
    writer.close()
    with pytest.raises(LandingError, match="closed"):
        writer.append(_env(0))


# --------------------------------------------------------------------------- damage


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    envs = [_env(i) for i in range(5)] + [_env(5, b'{"last": "record", "pad": "' + b"z" * 150)]
    path = _write(tmp_path / "log", envs)
    data = path.read_bytes()
    last = read_segment(path).offset[-1].item()
    assert len(data) - last > 150 + FRAME_HEADER_BYTES
    work = tmp_path / "cut.seg"
    for cut in range(last, len(data)):
        work.write_bytes(data[:cut])
        records = read_segment(work)
        assert records.envelopes() == envs[:5], cut
        if cut == last:
            assert records.damage is None
            continue
        assert records.damage is not None, cut
        assert records.damage.offset == last
        assert records.damage.length == cut - last
        assert records.damage.reason == "truncated"
        chunks = list(iter_segment_chunks(work, 2))
        assert [len(c) for c in chunks] == [2, 2, 1]
        assert chunks[-1].damage == records.damage
        assert all(c.damage is None for c in chunks[:-1])


def test_torn_file_header(tmp_path: Path) -> None:
    data = _write(tmp_path / "log", [_env(0)]).read_bytes()
    work = tmp_path / "cut.seg"
    for cut in range(FILE_HEADER_BYTES):
        work.write_bytes(data[:cut])
        for records in (read_segment(work), *iter_segment_chunks(work, 10)):
            assert len(records) == 0
            assert records.damage is not None
            assert (records.damage.offset, records.damage.length) == (0, cut)
            assert records.damage.reason == "truncated"


def test_flipped_byte_in_the_middle(tmp_path: Path) -> None:
    envs = [_env(i, b"p" * 50) for i in range(10)]
    path = _write(tmp_path / "log", envs)
    offsets = read_segment(path).offset.tolist()
    data = path.read_bytes()

    payload_byte = offsets[4] + FRAME_HEADER_BYTES + 30
    work = tmp_path / "flip.seg"
    work.write_bytes(data[:payload_byte] + b"q" + data[payload_byte + 1 :])
    records = read_segment(work)
    assert records.envelopes() == envs[:4]
    assert records.damage is not None
    assert records.damage.reason == "checksum"
    assert records.damage.offset == offsets[4]
    assert records.damage.length == len(data) - offsets[4]

    length_byte = offsets[7] + 1
    flipped = bytes([data[length_byte] ^ 0x04])
    work.write_bytes(data[:length_byte] + flipped + data[length_byte + 1 :])
    records = read_segment(work)
    assert len(records) == 7
    assert records.damage is not None
    assert (records.damage.reason, records.damage.offset) == ("bad header", offsets[7])

    zeros = data[: offsets[2]] + bytes(len(data) - offsets[2])  # a zero-filled tail
    work.write_bytes(zeros)
    records = read_segment(work)
    assert len(records) == 2
    assert records.damage is not None
    assert records.damage.reason == "bad header"


def test_file_header_problems(tmp_path: Path) -> None:
    data = _write(tmp_path / "log", [_env(0)]).read_bytes()
    work = tmp_path / "x.seg"

    work.write_bytes(b"GARBAGE!" + data[8:])
    with pytest.raises(LandingError, match="not a landing segment"):
        read_segment(work)
    with pytest.raises(LandingError, match="not a landing segment"):
        list(iter_segment_chunks(work, 10))
    work.write_bytes(b'{"json": 1}\n')
    with pytest.raises(LandingError, match="not a landing segment"):
        read_segment(work)

    work.write_bytes(data[:8] + b"\x07" + data[9:])  # version byte hit, header CRC now wrong
    records = read_segment(work)
    assert len(records) == 0
    assert records.damage is not None
    assert (records.damage.reason, records.damage.offset) == ("bad header", 0)

    head = data[:8] + struct.pack("<HH", 99, 0)  # a future version, correctly checksummed
    work.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + data[16:])
    with pytest.raises(LandingError, match="version 99"):
        read_segment(work)


# --------------------------------------------------------------------------- recovery


def test_recover_truncates_closes_and_deletes(tmp_path: Path) -> None:
    envs = [_env(i) for i in range(20)]
    data = _write(tmp_path / "src", envs).read_bytes()
    last = read_segment(closed_segments(tmp_path / "src")[0]).offset[-1].item()
    root = tmp_path / "log"
    (root / "open").mkdir(parents=True)
    torn = "20261116T000000.000000Z-dead-000001.seg"
    whole = "20261116T000001.000000Z-dead-000002.seg"
    header_only = "20261116T000002.000000Z-dead-000003.seg"
    empty = "20261116T000003.000000Z-other-000001.seg"
    (root / "open" / torn).write_bytes(data[: last + 7])
    (root / "open" / whole).write_bytes(data)
    (root / "open" / header_only).write_bytes(data[:FILE_HEADER_BYTES])
    (root / "open" / empty).write_bytes(b"")
    (root / "open" / "20261116T000004.000000Z-x-000001.seg").write_bytes(b"not a segment")

    report = {r.segment: r for r in recover(root)}
    assert report[torn].action == "closed"
    assert report[torn].records == 19
    assert report[torn].kept_bytes == last
    assert report[torn].dropped_bytes == 7
    damage = report[torn].damage
    assert damage is not None
    assert damage.reason == "truncated"
    assert report[whole].action == "closed"
    assert report[whole].damage is None
    assert report[header_only].action == "deleted"
    assert report[empty].action == "deleted"
    assert report["20261116T000004.000000Z-x-000001.seg"].action == "skipped"

    assert [p.name for p in closed_segments(root)] == [torn, whole]
    assert (root / "closed" / torn).stat().st_size == last
    assert read_segment(root / "closed" / torn).envelopes() == envs[:19]
    assert read_segment(root / "closed" / whole).envelopes() == envs
    # idempotent: only the foreign file is left, and reported again
    again = recover(root)
    assert [r.action for r in again] == ["skipped"]
    assert [p.name for p in closed_segments(root)] == [torn, whole]


def test_recover_skips_a_live_writer(tmp_path: Path) -> None:
    with LandingWriter(tmp_path, "live", fsync=False) as writer:
        ref = writer.append(_env(0))
        writer.sync()
        report = recover(tmp_path)
        assert [(r.segment, r.action) for r in report] == [(ref.segment, "skipped")]
        assert (tmp_path / "open" / ref.segment).exists()
    assert _all_records(tmp_path) == [_env(0)]


_CRASH = """
import os, signal, sys
from pathlib import Path
from landing.format import Envelope
from landing.writer import LandingWriter
w = LandingWriter(Path(sys.argv[1]), "crashy", roll_seconds=None)
for i in range(300):
    w.append(Envelope(1_763_251_200_000_000 + i, "mqtt", "t/%d" % i, "dev", b"x" * i))
    if i == 199:
        w.sync()
        print(w.segment, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_recover_after_kill_9(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    segment = proc.stdout.strip()
    assert (tmp_path / "open" / segment).exists()
    assert closed_segments(tmp_path) == []
    # a new writer with the same id recovers its predecessor's segment on start
    with LandingWriter(tmp_path, "crashy", fsync=False) as writer:
        (recovered,) = writer.recovered
    assert recovered.segment == segment
    assert recovered.action == "closed"
    records = read_segment(tmp_path / "closed" / segment)
    assert records.damage is None
    assert 200 <= len(records) <= 300
    assert records.payload == [b"x" * i for i in range(len(records))]
    assert recover(tmp_path) == []


# --------------------------------------------------------------------------- rolling


def test_roll_by_bytes(tmp_path: Path) -> None:
    envs = [_env(i, b"y" * 100) for i in range(200)]
    frame = FRAME_HEADER_BYTES + 14 + len(envs[0].topic.encode()) + 5 + 100
    with LandingWriter(tmp_path, "gw", roll_bytes=1000, roll_seconds=None, fsync=False) as w:
        w.append_many(envs)
    sizes = [p.stat().st_size for p in closed_segments(tmp_path)]
    assert len(sizes) > 20
    assert all(1000 <= s < 1000 + frame + 4 for s in sizes[:-1])
    assert _all_records(tmp_path) == envs


def test_roll_by_clock(tmp_path: Path) -> None:
    now = [1000.0]
    with LandingWriter(tmp_path, "gw", roll_seconds=10, fsync=False, clock=lambda: now[0]) as w:
        segs = []
        for t in (1000, 1005, 1009.9, 1010, 1015, 1030, 1031):
            now[0] = t
            segs.append(w.append(_env(int(t))).segment)
        assert len(set(segs)) == 3
        assert segs[0] == segs[1] == segs[2] != segs[3] == segs[4] != segs[5] == segs[6]
        assert segs[0].startswith("19700101T001640.000000Z-gw-")  # opened at clock 1000 s
        assert w.maybe_roll() is None
        now[0] = 1045
        assert w.maybe_roll() == segs[5]
        assert w.segment is None
    assert [p.name for p in closed_segments(tmp_path)] == sorted(set(segs))


def test_roll_by_reception_time(tmp_path: Path) -> None:
    second = 1_000_000
    received = [0, 100, 899, 900, 901, 50, 2000, 2899, 2900]  # 50: a late one stays put
    with LandingWriter(tmp_path, "sim", roll_seconds=900, fsync=False, clock=None) as w:
        segs = [w.append(_env(0, received_at_us=T0 + r * second)).segment for r in received]
        assert w.maybe_roll() is None  # no clock: only records move time
    groups = [len(read_segment(p)) for p in closed_segments(tmp_path)]
    assert groups == [3, 3, 2, 1]
    assert segs[0].startswith("20251116T000000.000000Z-sim-")


# --------------------------------------------------------------------------- concurrency


def test_atomic_close_seen_by_a_concurrent_reader(tmp_path: Path) -> None:
    done = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not done.is_set() or len(seen) < len(closed_segments(tmp_path)):
            for path in closed_segments(tmp_path):
                if path.name in seen:
                    continue
                records = read_segment(path)
                if records.damage is not None or len(records) == 0:
                    problems.append(f"{path.name}: {records.damage}")
                seen.add(path.name)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with LandingWriter(tmp_path, "gw", roll_bytes=4096, fsync=False) as writer:
            for i in range(3000):
                writer.append(_env(i, b"z" * 200))
    finally:
        done.set()
        thread.join(timeout=60)
    assert not problems
    assert seen == {p.name for p in closed_segments(tmp_path)}
    assert len(_all_records(tmp_path)) == 3000


def test_threads_append_concurrently(tmp_path: Path) -> None:
    threads, per_thread = 8, 1500
    refs: dict[bytes, tuple[str, int]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    with LandingWriter(tmp_path, "gw", roll_bytes=64 * 1024, fsync=True) as writer:

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                payload = b"%d:%d:" % (t, i) + b"." * (i % 300)
                ref = writer.append(_env(i, payload))
                if i % 100 == 99:
                    writer.sync()
                with lock:
                    refs[payload] = (ref.segment, ref.offset)

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()

    found: Counter[bytes] = Counter()
    located: dict[bytes, tuple[str, int]] = {}
    for path in closed_segments(tmp_path):
        records = read_segment(path)
        assert records.damage is None
        found.update(records.payload)
        for payload, offset in zip(records.payload, records.offset.tolist(), strict=True):
            located[payload] = (path.name, offset)
    assert len(found) == threads * per_thread
    assert set(found.values()) == {1}
    assert located == refs


# --------------------------------------------------------------------------- property

_envelopes = st.lists(
    st.builds(
        Envelope,
        received_at_us=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        source=st.sampled_from(SOURCES),
        topic=st.text(max_size=40),
        identity=st.text(max_size=20),
        payload=st.binary(max_size=600),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(envs=_envelopes, roll_bytes=st.integers(min_value=17, max_value=3000))
def test_property_write_then_read_is_identity(envs: list[Envelope], roll_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with LandingWriter(root, "prop", roll_bytes=roll_bytes, fsync=False) as writer:
            writer.append_many(envs)
        assert _all_records(root) == envs
        assert not list((root / "open").glob("*.seg"))
        # The pipeline's columnar read gives the same records, in slices of any size.
        tables = [
            part.table
            for path in closed_segments(root)
            for part in iter_segment_tables(path, max(1, roll_bytes % 7))
        ]
        table = pa.concat_tables([ARROW_SCHEMA.empty_table(), *tables])
        # (As integers: the property's instants go beyond what datetime can hold.)
        received = table.column("received_at").cast(pa.int64()).to_pylist()
        columns = [table.column(c).to_pylist() for c in ("source", "topic", "identity", "payload")]
        assert [Envelope(ts, *rest) for ts, *rest in zip(received, *columns, strict=True)] == envs


def _frame(body: bytes) -> bytes:
    """A frame whose lengths and checksum are right, whatever its body says."""
    n = len(body)
    return struct.pack("<III", n, n ^ 0xFFFFFFFF, zlib.crc32(body)) + body


@pytest.mark.parametrize(
    ("fixed", "rest", "detail"),
    [
        ((0, 0, 0, 4, 1), b"\xff\xfe/tx{}", "topic is not UTF-8"),
        ((0, 1, 0, 1, 2), b"t\xc3(", "identity is not UTF-8"),
        ((0, 0, 0, 50, 1), b"t", "record fields inconsistent"),  # topic longer than the body
        ((0, 7, 0, 1, 1), b"ti{}", "record fields inconsistent"),  # no such source
        ((0, 0, 1, 1, 1), b"ti{}", "record fields inconsistent"),  # flags set
    ],
)
def test_a_whole_frame_that_is_wrong_inside_ends_the_readable_part(
    tmp_path: Path, fixed: tuple[int, ...], rest: bytes, detail: str
) -> None:
    """The checksum holds, but the fields do not: the records before it are kept, it and
    everything after it are damage, in every way of reading (whole, in slices, by offset,
    recovery)."""
    good = [_env(i) for i in range(3)]
    path = _write(tmp_path, good)
    clean = path.read_bytes()
    bad_at = len(clean)
    path.write_bytes(clean + _frame(struct.pack("<qBBHH", *fixed) + rest) + clean[16:])
    records = read_segment(path)
    assert records.envelopes() == good
    assert records.damage is not None
    assert (records.damage.offset, records.damage.detail) == (bad_at, detail)
    assert records.damage.length == path.stat().st_size - bad_at
    for size in (1, 2, 100):
        parts = list(iter_segment_tables(path, size))
        assert sum(len(p) for p in parts) == 3
        assert [p.damage for p in parts][-1] == records.damage
        assert all(p.damage is None for p in parts[:-1])
    with pytest.raises(LandingError, match=detail):
        read_records_at(path, [bad_at])
    # Recovery of an open segment keeps exactly the good records.
    open_dir = tmp_path / "r" / "open"
    open_dir.mkdir(parents=True)
    shutil.copy(path, open_dir / path.name)
    (done,) = recover(tmp_path / "r")
    assert (done.action, done.records, done.kept_bytes) == ("closed", 3, bad_at)


# --------------------------------------------------------------------------- simulator


def test_simulator_landing_route_matches_ndjson(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=2, days=1)
    ndjson = simulate(config, tmp_path / "a")
    expected: Counter[bytes] = Counter()
    for path in ndjson.telemetry_dir.rglob("*.ndjson"):
        expected.update(path.read_bytes().split(b"\n")[:-1])

    landing = tmp_path / "landing"
    result = simulate_to_landing(config, tmp_path / "b", landing, roll_bytes=256 * 1024)
    assert result.manifest["lines"] == ndjson.manifest["lines"] == sum(expected.values())
    assert not list((landing / "open").glob("*.seg"))
    segments = closed_segments(landing)
    assert len(segments) > 90  # one per 900 s of reception, and the late ones
    got: Counter[bytes] = Counter()
    received: list[int] = []
    for path in segments:
        records = read_segment(path)
        assert records.damage is None
        assert set(records.source) == {"mqtt"}
        for topic, ident in zip(records.topic, records.identity, strict=True):
            assert topic.split("/")[4] == ident
        got.update(records.payload)
        received.extend(records.received_at_us.tolist())
    assert got == expected
    assert received == sorted(received)
    assert (result.out / "landing.json").is_file()
    assert not (result.out / "telemetry").exists()

    with pytest.raises(LandingError, match="replace=True"):
        LandingSink(landing)
    sink = LandingSink(landing, replace=True)
    assert sink.finish().records == 0
    assert closed_segments(landing) == []
    shutil.rmtree(landing)


def test_simulator_landing_route_writes_the_fault_ledger(tmp_path: Path) -> None:
    # The ledger names each injected fault's record by its landing address, as the NDJSON
    # route names it by file and line: the same faults, found where the ledger says.
    config = SimConfig(clients=1, branches=2, days=1, seed=9)
    ndjson = simulate(config, tmp_path / "a")
    result = simulate_to_landing(config, tmp_path / "b", tmp_path / "landing")
    by_file = [
        orjson.loads(line) for line in (ndjson.out / "faults.ndjson").read_bytes().splitlines()
    ]
    ledger = [
        orjson.loads(line) for line in (result.out / "faults.ndjson").read_bytes().splitlines()
    ]
    assert len(ledger) > 20
    assert Counter(e["fault"] for e in ledger) == Counter(e["fault"] for e in by_file)
    state = Counter(f["fault"] for f in result.manifest["state_faults"])
    per_message = {n: f["count"] - state[n] for n, f in result.manifest["faults"].items()}
    assert Counter(e["fault"] for e in ledger) == +Counter(per_message)
    key = ("fault", "device_id", "seq", "topic", "route", "reason_code")
    assert Counter(tuple(e[k] for k in key) for e in ledger) == Counter(
        tuple(e[k] for k in key) for e in by_file
    )
    closed = tmp_path / "landing" / "closed"
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for entry in ledger:
        by_segment.setdefault(entry["segment"], []).append(entry)
    for segment, entries in by_segment.items():
        records = read_records_at(closed / segment, [e["offset"] for e in entries])
        for entry, record in zip(entries, records, strict=True):
            assert (record.topic, record.identity) == (entry["topic"], entry["device_id"])
            if entry["fault"] not in ("malformed_json", "bad_utf8", "oversized", "non_finite"):
                assert orjson.loads(record.payload)["seq"] == entry["seq"], entry
    # In landing order, as a reader walks the log.
    assert [(e["segment"], e["offset"]) for e in ledger] == sorted(
        (e["segment"], e["offset"]) for e in ledger
    )


def test_read_records_at_returns_exactly_the_records_at_those_offsets(tmp_path: Path) -> None:
    envs = [
        Envelope(1_700_000_000_000_000 + i, "mqtt", f"t/{i}", f"dev-{i}", b"x" * i)
        for i in range(1, 40)
    ]
    with LandingWriter(tmp_path, "w1") as writer:
        refs = writer.append_many(envs)
    (path,) = closed_segments(tmp_path)
    picks = [refs[7].offset, refs[0].offset, refs[38].offset, refs[7].offset]
    got = read_records_at(path, picks)
    assert got == [envs[7], envs[0], envs[38], envs[7]]
    with pytest.raises(LandingError, match="no valid record"):
        read_records_at(path, [refs[3].offset + 1])
    with pytest.raises(LandingError, match="no record"):
        read_records_at(path, [path.stat().st_size + 10])
