"""The group commit on a real landing writer: submissions and lock-free inboxes share one
fsync per batch, callbacks run only once their records are on disk, and a record that
cannot be encoded fails alone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.commit import CommitterClosedError, GroupCommitter
from landing.format import Envelope, LandingError
from landing.reader import read_segment
from landing.writer import LandingWriter

T0 = 1_763_251_200_000_000


def _env(i: int, topic: str | None = None) -> Envelope:
    return Envelope(
        T0 + i,
        "mqtt",
        topic if topic is not None else f"emaas/v1/c/b/dev-{i % 5}/telemetry",
        f"dev-{i % 5}",
        b'{"seq":%d}' % i,
    )


def _on_disk(root: Path) -> list[bytes]:
    """Payloads in the landing log now (open and closed segments, as a reader sees them)."""
    out: list[bytes] = []
    for folder in ("closed", "open"):
        for path in sorted((root / folder).glob("*.seg")):
            out.extend(bytes(p) for p in read_segment(path).payload)
    return out


class _Recorder:
    """An inbox's on_done: checks every reported token's record is already on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.batches = 0
        self.not_on_disk: list[int] = []
        self.all_reported = threading.Event()
        self.expected = 0

    def __call__(self, tokens: list[Any], error: BaseException | None) -> None:
        self.batches += 1
        if error is None:
            seen = set(_on_disk(self.root))
            self.not_on_disk += [t for t in tokens if b'{"seq":%d}' % t not in seen]
            self.done += tokens
        else:
            self.failed += [(t, str(error)) for t in tokens]
        if len(self.done) + len(self.failed) >= self.expected:
            self.all_reported.set()


def _committer(root: Path, **kw: Any) -> GroupCommitter:
    committer = GroupCommitter(lambda: LandingWriter(root, "gw-test"), **kw)
    committer.start()
    return committer


def test_inbox_reports_every_token_once_in_order_after_its_record_is_on_disk(
    tmp_path: Path,
) -> None:
    committer = _committer(tmp_path)
    recorder = _Recorder(tmp_path)
    recorder.expected = 20_000
    inbox = committer.inbox(recorder)

    def produce() -> None:  # one producer thread, as paho's
        for i in range(recorder.expected):
            inbox.put(_env(i), i)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    assert recorder.all_reported.wait(30)
    committer.stop(10)
    assert recorder.done == list(range(recorder.expected))  # once each, in order
    assert recorder.failed == []
    assert recorder.not_on_disk == []
    assert recorder.batches < recorder.expected / 10  # grouped: many tokens per callback
    assert len(inbox) == 0
    assert committer.inflight == 0
    assert sorted(_on_disk(tmp_path)) == sorted(b'{"seq":%d}' % i for i in range(20_000))


def test_inbox_and_submissions_share_the_commit(tmp_path: Path) -> None:
    committer = _committer(tmp_path)
    recorder = _Recorder(tmp_path)
    recorder.expected = 500
    inbox = committer.inbox(recorder)
    submitted: list[BaseException | None] = []
    for i in range(500):
        inbox.put(_env(i), i)
        committer.submit([_env(100_000 + i)], submitted.append)
    assert recorder.all_reported.wait(30)
    committer.stop(10)
    assert recorder.done == list(range(500))
    assert submitted == [None] * 500
    assert len(_on_disk(tmp_path)) == 1000


def test_an_envelope_that_cannot_be_encoded_fails_alone(tmp_path: Path) -> None:
    committer = _committer(tmp_path, flush_interval_s=0.05)  # one batch holds all three
    recorder = _Recorder(tmp_path)
    recorder.expected = 3
    inbox = committer.inbox(recorder)
    inbox.put(_env(1), 1)
    inbox.put(_env(2, topic="t" * 70_000), 2)  # topics are limited to 65,535 bytes
    inbox.put(_env(3), 3)
    assert recorder.all_reported.wait(10)
    committer.stop(10)
    assert recorder.done == [1, 3]
    assert [t for t, _ in recorder.failed] == [2]
    assert "65535" in recorder.failed[0][1]
    assert sorted(_on_disk(tmp_path)) == [b'{"seq":1}', b'{"seq":3}']


def test_a_failed_writer_reports_the_error_and_acknowledges_nothing(tmp_path: Path) -> None:
    opened: list[LandingWriter] = []

    def open_writer() -> LandingWriter:
        if opened:
            raise LandingError("disk gone")  # the reopen fails too
        opened.append(LandingWriter(tmp_path, "gw-test"))
        return opened[0]

    committer = GroupCommitter(open_writer, reopen_interval_s=60)
    committer.start()
    opened[0].close()  # every later append raises: the writer is unusable
    recorder = _Recorder(tmp_path)
    recorder.expected = 2
    inbox = committer.inbox(recorder)
    inbox.put(_env(1), 1)
    inbox.put(_env(2), 2)
    assert recorder.all_reported.wait(10)
    assert recorder.done == []
    assert [t for t, _ in recorder.failed] == [1, 2]
    assert committer.failure is not None
    committer.stop(10)


def test_put_after_stop_is_refused(tmp_path: Path) -> None:
    committer = _committer(tmp_path)
    inbox = committer.inbox(lambda tokens, error: None)
    committer.stop(10)
    with pytest.raises(CommitterClosedError):
        inbox.put(_env(1), 1)
