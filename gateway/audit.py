"""Audit records: one JSON object per line under ``<audit_dir>/YYYY-MM-DD.jsonl`` (UTC day).

Security events at the edge (a bad token, a device posting for another device or branch)
are appended and flushed at once, so an operator or the lineage tools can read them while
the gateway runs.

With ``repeat_window_s`` > 0 (the gateway's log) repeats are aggregated so a flood cannot
fill the disk: the first event of a kind (same event, device, client, branch and remote
address) is written at once with ``"count": 1``; further ones within the window are only
counted, and when the window ends (``flush_due()``, called on a timer, or ``close()``) one
record says how many there were (``"count": n``, ``"first_ts"``, ``"last_ts"``, the last
``detail``). The fact that something happened is never lost; only repeats are folded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)

_Key = tuple[str, str | None, str | None, str | None, str | None]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Repeats:
    until: float  # monotonic end of the window
    count: int
    first: datetime
    last: datetime
    detail: str


class AuditLog:
    """Appends audit events for one component; thread-safe; never raises on I/O errors."""

    def __init__(
        self,
        folder: Path,
        component: str = "gateway",
        *,
        repeat_window_s: float = 0.0,
        max_kinds: int = 10_000,
    ) -> None:
        self._folder = Path(folder)
        self._component = component
        self._window_s = repeat_window_s
        self._max_kinds = max_kinds
        self._lock = threading.Lock()
        self._day: str | None = None
        self._file: IO[bytes] | None = None
        self._repeats: dict[_Key, _Repeats] = {}

    def record(
        self,
        event: str,
        *,
        device_id: str | None = None,
        client_id: str | None = None,
        branch_id: str | None = None,
        remote: str | None = None,
        detail: str = "",
        actor: str | None = None,
    ) -> None:
        """Append one event. ``actor``: the person or service that acted (an operator's
        decision); the audit log is the one place that names them."""
        now = datetime.now(UTC)
        fields: dict[str, Any] = {
            "ts": _stamp(now),
            "component": self._component,
            "event": event,
            "device_id": device_id,
            "client_id": client_id,
            "branch_id": branch_id,
            "remote": remote,
            "detail": detail,
        }
        if actor is not None:
            fields["actor"] = actor
        with self._lock:
            if self._window_s > 0:
                key = (event, device_id, client_id, branch_id, remote)
                clock = time.monotonic()
                seen = self._repeats.get(key)
                if seen is not None and clock < seen.until:
                    if seen.count == 0:
                        seen.first = now
                    seen.count += 1
                    seen.last = now
                    seen.detail = detail
                    return
                if seen is not None:
                    self._write_repeats(key, self._repeats.pop(key))
                if len(self._repeats) >= self._max_kinds:
                    self._flush(None)
                self._repeats[key] = _Repeats(clock + self._window_s, 0, now, now, detail)
                fields["count"] = 1
            self._write(now, fields)

    def flush_due(self) -> None:
        """Write the counts of repeats whose window has ended (a timer calls this)."""
        with self._lock:
            self._flush(time.monotonic())

    def close(self) -> None:
        with self._lock:
            self._flush(None)
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- under the lock -------------------------------------------------------------------
    def _flush(self, clock: float | None) -> None:
        for key, seen in list(self._repeats.items()):
            if clock is None or clock >= seen.until:
                del self._repeats[key]
                self._write_repeats(key, seen)

    def _write_repeats(self, key: _Key, seen: _Repeats) -> None:
        if seen.count == 0:
            return
        now = datetime.now(UTC)
        event, device_id, client_id, branch_id, remote = key
        self._write(
            now,
            {
                "ts": _stamp(now),
                "component": self._component,
                "event": event,
                "device_id": device_id,
                "client_id": client_id,
                "branch_id": branch_id,
                "remote": remote,
                "detail": f"repeated after the first record; the last: {seen.detail}",
                "count": seen.count,
                "first_ts": _stamp(seen.first),
                "last_ts": _stamp(seen.last),
            },
        )

    def _write(self, now: datetime, fields: dict[str, Any]) -> None:
        day = now.strftime("%Y-%m-%d")
        try:
            if self._day != day or self._file is None:
                if self._file is not None:
                    self._file.close()
                self._folder.mkdir(parents=True, exist_ok=True)
                self._file = (self._folder / f"{day}.jsonl").open("ab")
                self._day = day
            self._file.write(orjson.dumps(fields) + b"\n")
            self._file.flush()
        except OSError as exc:
            log.error("audit record %s could not be written: %s", fields.get("event"), exc)
