"""Broker-side drops, read from Mosquitto's log.

Mosquitto acknowledges a QoS 1 PUBLISH once it holds it, and when a session's queue is
full (``max_queued_messages`` / ``max_queued_bytes``) it drops further messages for that
session. It says so once per episode (until that session reconnects), at log level
*notice*::

    2026-12-01T10:00:00: Outgoing messages are being dropped for client energylake-gateway.c-1.

The shipped config logs notices to a file (``log_dest file``); the gateway tails it
(``BrokerLogTail``: only what was appended, across restarts by a small position file, and
from the start again when the log was rotated) and ``energylake status`` reads it whole
(``read_drops``). The exact number of messages dropped is the broker's own counter,
``$SYS/broker/publish/messages/dropped`` (broker-wide), which the gateway subscribes to.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from durable.files import atomic_write

__all__ = ["DROPPED_SYS_TOPIC", "BrokerLogTail", "DropEpisode", "parse_drops", "read_drops"]

log = logging.getLogger(__name__)

DROPPED_SYS_TOPIC = "$SYS/broker/publish/messages/dropped"
_DROP = re.compile(
    rb"^(?P<at>[^ \n]+): Outgoing messages are being dropped for client (?P<client>[^ \n]+)\.$",
    re.MULTILINE,
)
_MAX_READ_BYTES = 16 * 1024 * 1024  # per poll; the rest waits for the next one


@dataclass(frozen=True, slots=True)
class DropEpisode:
    """The broker started dropping messages queued for ``client`` at ``at``."""

    at: datetime | None  # None when the broker's timestamp could not be read
    client: str


def _stamp(text: str) -> datetime | None:
    """The broker's log timestamp: epoch seconds (the default) or the ISO form of the
    shipped config, which Mosquitto writes in the broker's local time."""
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def parse_drops(data: bytes) -> list[DropEpisode]:
    """Every drop episode in a piece of broker log."""
    return [
        DropEpisode(
            _stamp(m["at"].decode("ascii", "replace")), m["client"].decode("utf-8", "replace")
        )
        for m in _DROP.finditer(data)
    ]


def read_drops(path: Path) -> list[DropEpisode] | None:
    """Every drop episode in the broker log at ``path``; None when it cannot be read."""
    episodes: list[DropEpisode] = []
    carry = b""  # a line cut by the chunk boundary, completed by the next chunk
    try:
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(_MAX_READ_BYTES), b""):
                data = carry + chunk
                end = data.rfind(b"\n") + 1
                episodes += parse_drops(data[:end])
                carry = data[end:]
    except OSError:
        return None
    return episodes + parse_drops(carry)


class BrokerLogTail:
    """What was appended to the broker log since the last ``poll()``.

    The position (file inode and offset) is kept in ``state_path`` so a restarted gateway
    neither reports an episode twice nor misses one logged while it was down. A file that
    was replaced (another inode) or truncated is read from its start. Only whole lines
    are consumed.
    """

    def __init__(self, path: Path, state_path: Path | None = None) -> None:
        self.path = Path(path)
        self._state_path = state_path
        self._inode = 0
        self._offset = 0
        self.readable = False
        if state_path is not None:
            try:
                raw = json.loads(state_path.read_bytes())
                self._inode, self._offset = int(raw["inode"]), int(raw["offset"])
            except (OSError, ValueError, KeyError, TypeError):
                pass

    def poll(self) -> list[DropEpisode]:
        try:
            with self.path.open("rb") as handle:
                st = os.fstat(handle.fileno())
                if st.st_ino != self._inode or st.st_size < self._offset:
                    self._inode, self._offset = st.st_ino, 0
                if st.st_size == self._offset:
                    self.readable = True
                    return []
                handle.seek(self._offset)
                data = handle.read(_MAX_READ_BYTES)
        except OSError as exc:
            if self.readable:
                log.warning("broker log %s cannot be read: %s", self.path, exc.strerror)
            self.readable = False
            return []
        self.readable = True
        end = data.rfind(b"\n") + 1
        if end == 0:
            return []
        self._offset += end
        self._save()
        return parse_drops(data[:end])

    def _save(self) -> None:
        if self._state_path is None:
            return
        try:
            state = {"inode": self._inode, "offset": self._offset}
            atomic_write(self._state_path, json.dumps(state).encode())
        except OSError as exc:
            log.warning("broker log position not saved to %s: %s", self._state_path, exc)
