"""Audit records: one JSON object per line under ``<audit_dir>/YYYY-MM-DD.jsonl`` (UTC day).

Security events at the edge (a bad token, a device posting for another device or branch)
are appended and flushed at once, so an operator or the lineage tools can read them while
the gateway runs.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)


class AuditLog:
    """Appends audit events for one component; thread-safe; never raises on I/O errors."""

    def __init__(self, folder: Path, component: str = "gateway") -> None:
        self._folder = Path(folder)
        self._component = component
        self._lock = threading.Lock()
        self._day: str | None = None
        self._file: IO[bytes] | None = None

    def record(
        self,
        event: str,
        *,
        device_id: str | None = None,
        client_id: str | None = None,
        branch_id: str | None = None,
        remote: str | None = None,
        detail: str = "",
    ) -> None:
        now = datetime.now(UTC)
        line = orjson.dumps(
            {
                "ts": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "component": self._component,
                "event": event,
                "device_id": device_id,
                "client_id": client_id,
                "branch_id": branch_id,
                "remote": remote,
                "detail": detail,
            }
        )
        day = now.strftime("%Y-%m-%d")
        with self._lock:
            try:
                if self._day != day or self._file is None:
                    if self._file is not None:
                        self._file.close()
                    self._folder.mkdir(parents=True, exist_ok=True)
                    self._file = (self._folder / f"{day}.jsonl").open("ab")
                    self._day = day
                self._file.write(line + b"\n")
                self._file.flush()
            except OSError as exc:
                log.error("audit record %s could not be written: %s", event, exc)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
