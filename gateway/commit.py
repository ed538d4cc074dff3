"""Group commit: many producers, one landing writer, one fsync per batch.

Producers (the MQTT callback thread, HTTP handlers) ``submit`` envelopes with a callback.
One committer thread takes everything queued, appends it, calls ``LandingWriter.sync()``
once, and only then runs the callbacks with ``None`` (durable) or the error. This is the
gateway's ack promise: an MQTT PUBACK or an HTTP 202 is sent from a callback, after fsync.

While a batch is being fsynced the next one queues, so batches grow with load and the
fsync cost is shared. ``flush_interval_s`` lets a small batch wait a little for company
(bounded by ``flush_max_records``). An idle writer's segment is rolled by a timer so the
processor sees it. After an I/O error (ENOSPC, EIO) the writer is broken: the batch fails,
the committer closes it, and it opens a fresh writer (which recovers the segment) on the
next submission after ``reopen_interval_s``.

A producer that sends one message at a time from one thread (paho's network thread) uses
an ``Inbox`` instead of ``submit``: ``put`` is a deque append with no lock and no
callback object per message, and the committer reports each batch's tokens (MQTT message
ids) back in one call. Measured on the MQTT drain: a lock and a callback per message, and
the cross-thread wake-ups they cause, cost the gateway about a tenth of its rate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from landing.format import Envelope, LandingError
from landing.writer import LandingWriter

__all__ = ["BatchCallback", "CommitCallback", "CommitterClosedError", "GroupCommitter", "Inbox"]

log = logging.getLogger(__name__)

CommitCallback = Callable[[BaseException | None], None]
# (tokens of the envelopes, None when they are on disk or the error that stopped them)
BatchCallback = Callable[[list[Any], BaseException | None], None]


class CommitterClosedError(LandingError):
    """The committer is stopping: nothing more is accepted."""


@dataclass(slots=True)
class _Submission:
    envelopes: Sequence[Envelope]
    callback: CommitCallback


class Inbox:
    """A lock-free queue into the committer for ONE producer thread.

    ``put(envelope, token)`` appends to a deque (atomic under the GIL) and wakes the
    committer only when the inbox was empty. After the fsync the committer calls
    ``on_done(tokens, error)`` once per batch, on its own thread, with the tokens in the
    order they were put.
    """

    def __init__(self, committer: GroupCommitter, on_done: BatchCallback) -> None:
        self._committer = committer
        self._on_done = on_done
        self._items: deque[tuple[Envelope, Any]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, envelope: Envelope, token: Any) -> None:
        """Queue one envelope; its token comes back through ``on_done`` after the fsync."""
        committer = self._committer
        if committer.stopping:
            raise CommitterClosedError("the gateway is shutting down")
        items = self._items
        items.append((envelope, token))
        if len(items) == 1:
            # Only the first item after the committer emptied the inbox wakes it: the
            # committer re-checks every inbox under its condition before it waits, so a
            # wake-up cannot be lost.
            committer.wake()

    def _take(self, limit: int) -> tuple[list[Envelope], list[Any]]:
        envelopes: list[Envelope] = []
        tokens: list[Any] = []
        items = self._items
        while items and len(envelopes) < limit:
            envelope, token = items.popleft()
            envelopes.append(envelope)
            tokens.append(token)
        return envelopes, tokens


@dataclass(slots=True)
class _InboxBatch:
    inbox: Inbox
    envelopes: list[Envelope]
    tokens: list[Any]


class GroupCommitter:
    """One writer, one thread; ``submit`` from any thread; callbacks run after fsync."""

    def __init__(
        self,
        open_writer: Callable[[], LandingWriter],
        *,
        flush_interval_s: float = 0.002,
        flush_max_records: int = 5000,
        roll_tick_s: float = 0.25,
        reopen_interval_s: float = 1.0,
        on_fsync: Callable[[float, int], None] | None = None,
    ) -> None:
        self._open_writer = open_writer
        self._flush_interval_s = flush_interval_s
        self._flush_max_records = flush_max_records
        self._roll_tick_s = roll_tick_s
        self._reopen_interval_s = reopen_interval_s
        self._on_fsync = on_fsync
        self._cond = threading.Condition()
        self._queue: deque[_Submission] = deque()
        self._inboxes: list[Inbox] = []
        self._queued_records = 0
        self._inflight_records = 0
        self._stopping = False
        self._writer: LandingWriter | None = None
        self._failure: str | None = None
        self._last_open_attempt = 0.0
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)

    # -- public

    def start(self) -> None:
        """Open the writer (raises LandingError if it cannot) and start the thread."""
        self._writer = self._open_writer()
        self._thread.start()

    @property
    def failure(self) -> str | None:
        """Why the landing log cannot take records right now (writer broken), or None."""
        return self._failure

    @property
    def inflight(self) -> int:
        """Records submitted and not yet durable (queued or in the batch being synced)."""
        return self._queued_records + self._inbox_records() + self._inflight_records

    @property
    def stopping(self) -> bool:
        return self._stopping

    def inbox(self, on_done: BatchCallback) -> Inbox:
        """A new lock-free inbox for one producer thread (see ``Inbox``)."""
        box = Inbox(self, on_done)
        with self._cond:
            self._inboxes = [*self._inboxes, box]
        return box

    def wake(self) -> None:
        """Tell the committer an inbox has something (``Inbox.put`` calls this)."""
        with self._cond:
            self._cond.notify()

    def _inbox_records(self) -> int:
        return sum(len(box) for box in self._inboxes)

    @property
    def segment(self) -> str | None:
        writer = self._writer
        return writer.segment if writer is not None else None

    def submit(self, envelopes: Sequence[Envelope], callback: CommitCallback) -> None:
        """Queue envelopes; ``callback(None)`` once they are on disk, ``callback(exc)`` if not."""
        with self._cond:
            if self._stopping:
                raise CommitterClosedError("the gateway is shutting down")
            was_empty = not self._queue
            self._queue.append(_Submission(envelopes, callback))
            self._queued_records += len(envelopes)
            # Wake the committer only when it has something new to decide: the first
            # submission after a flush, or a full batch. Waking it for every message made
            # it re-check its wait once per message (measured: a GIL hand-off each).
            if was_empty or self._queued_records >= self._flush_max_records:
                self._cond.notify()

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new submissions, commit what is queued, close (roll) the open segment."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except LandingError as exc:
                log.error("closing the landing writer failed: %s", exc)

    # -- the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._inbox_records() and not self._stopping:
                    if not self._cond.wait(self._roll_tick_s):
                        break
                if not self._queue and not self._inbox_records():
                    if self._stopping:
                        return
                    batch: list[_Submission] = []
                    taken: list[_InboxBatch] = []
                else:
                    if self._flush_interval_s > 0 and not self._stopping:
                        self._cond.wait_for(
                            lambda: (
                                self._queued_records + self._inbox_records()
                                >= self._flush_max_records
                                or self._stopping
                            ),
                            timeout=self._flush_interval_s,
                        )
                    batch = list(self._queue)
                    self._queue.clear()
                    taken = self._take_inboxes()
                    self._inflight_records = self._queued_records + sum(
                        len(t.envelopes) for t in taken
                    )
                    self._queued_records = 0
            if batch or taken:
                self._commit(batch, taken)
            else:
                self._idle()
            with self._cond:
                self._inflight_records = 0

    def _take_inboxes(self) -> list[_InboxBatch]:
        taken = []
        for box in self._inboxes:
            envelopes, tokens = box._take(self._flush_max_records)
            if envelopes:
                taken.append(_InboxBatch(box, envelopes, tokens))
        return taken

    def _idle(self) -> None:
        # A broken writer is reopened here too, not only on the next submission: while it is
        # broken HTTP answers 503 without submitting and MQTT pauses, so no submission
        # would ever come to retry it (found by the disk-full test).
        writer = self._writer or self._ensure_writer()
        if writer is None:
            return
        try:
            writer.maybe_roll()
        except LandingError as exc:
            self._broken(exc)

    def _ensure_writer(self) -> LandingWriter | None:
        if self._writer is not None:
            return self._writer
        now = time.monotonic()
        if now - self._last_open_attempt < self._reopen_interval_s:
            return None
        self._last_open_attempt = now
        try:
            self._writer = self._open_writer()
        except (LandingError, OSError) as exc:
            self._failure = f"landing writer cannot open: {exc}"
            return None
        self._failure = None
        log.warning("landing writer reopened; recovered %s", self._writer.recovered)
        return self._writer

    def _broken(self, exc: BaseException) -> None:
        self._failure = f"landing writer failed: {exc}"
        log.error("%s", self._failure)
        writer, self._writer = self._writer, None
        self._last_open_attempt = time.monotonic()
        if writer is not None:
            with contextlib.suppress(LandingError, OSError):
                writer.close()  # a broken writer only releases its lock; recovery reopens

    def _commit(self, batch: list[_Submission], taken: Sequence[_InboxBatch] = ()) -> None:
        writer = self._ensure_writer()
        if writer is None:
            failure = LandingError(self._failure or "landing writer unavailable")
            _finish(batch, failure)
            _finish_inboxes(taken, failure)
            return
        done: list[_Submission] = []
        failed: list[tuple[_Submission, BaseException]] = []
        written: list[_InboxBatch] = []
        refused: list[tuple[_InboxBatch, BaseException]] = []
        records = 0
        try:
            for sub in batch:
                try:
                    writer.append_many(sub.envelopes)
                except LandingError as bad:
                    writer.sync()  # raises if the writer itself is broken
                    failed.append((sub, bad))  # only this submission could not be encoded
                    continue
                done.append(sub)
                records += len(sub.envelopes)
            for part in taken:
                ok, bad_ones = _append_inbox(writer, part)
                written.append(ok)
                refused.extend(bad_ones)
                records += len(ok.envelopes)
            started = time.perf_counter()
            writer.sync()
            elapsed = time.perf_counter() - started
        except (LandingError, OSError) as exc:
            self._broken(exc)
            _finish(batch, exc)
            _finish_inboxes(taken, exc)
            return
        if self._on_fsync is not None:
            self._on_fsync(elapsed, records)
        _finish(done, None)
        _finish_inboxes(written, None)
        for sub, error in failed:
            _call(sub.callback, error)
        for part, error in refused:
            _finish_inboxes([part], error)


def _append_inbox(
    writer: LandingWriter, part: _InboxBatch
) -> tuple[_InboxBatch, list[tuple[_InboxBatch, BaseException]]]:
    """Append an inbox's envelopes; one that cannot be encoded fails alone (its token comes
    back with the error), the others are written. Raises if the writer itself fails."""
    try:
        writer.append_many(part.envelopes)
        return part, []
    except LandingError:
        writer.sync()  # raises if the writer is broken; else an envelope did not encode
    ok = _InboxBatch(part.inbox, [], [])
    refused: list[tuple[_InboxBatch, BaseException]] = []
    for envelope, token in zip(part.envelopes, part.tokens, strict=True):
        try:
            writer.append(envelope)
        except LandingError as bad:
            writer.sync()
            refused.append((_InboxBatch(part.inbox, [envelope], [token]), bad))
            continue
        ok.envelopes.append(envelope)
        ok.tokens.append(token)
    return ok, refused


def _finish_inboxes(parts: Sequence[_InboxBatch], error: BaseException | None) -> None:
    for part in parts:
        if not part.tokens:
            continue
        try:
            part.inbox._on_done(part.tokens, error)
        except Exception:  # a producer's bug must not stop the committer
            log.exception("inbox callback failed")


def _call(callback: CommitCallback, error: BaseException | None) -> None:
    try:
        callback(error)
    except Exception:  # a producer's bug must not stop the committer
        log.exception("commit callback failed")


def _finish(batch: Sequence[_Submission], error: BaseException | None) -> None:
    for sub in batch:
        _call(sub.callback, error)
