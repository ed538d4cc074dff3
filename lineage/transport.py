"""Transports: the client's own http and console ones, and a daily JSON-lines file transport.

The file transport is the client's :class:`FileTransport` with two changes: one file per
UTC day of the event (``events/YYYY-MM-DD.jsonl``: the store can index closed days once and
skip them after), and each event is appended with one ``write`` and fsync'd, so a line is
either whole on disk or absent.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openlineage.client.serde import Serde
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.transport.transport import Transport

from lineage.config import LineageConfig

__all__ = ["DailyFileTransport", "day_file", "make_transport"]


def day_file(events_dir: Path, when: datetime) -> Path:
    """The JSON-lines file that holds events of ``when``'s UTC day."""
    return events_dir / f"{when.astimezone(UTC):%Y-%m-%d}.jsonl"


def _event_time(event: Any) -> datetime:
    raw = getattr(event, "eventTime", None)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            parsed = datetime.now(UTC)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


class DailyFileTransport(FileTransport):
    """JSON lines, one file per UTC day, append + fsync (see the module doc)."""

    kind = "energylake_daily_file"

    def __init__(self, events_dir: Path) -> None:
        self.events_dir = events_dir
        super().__init__(FileConfig(log_file_path=str(events_dir), append=True))

    def _get_file_path(self, event: Any) -> str:
        return str(day_file(self.events_dir, _event_time(event)))

    def emit(self, event: Any) -> None:
        path = Path(self._get_file_path(event))
        line = (Serde.to_json(event) + "\n").encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RuntimeError(f"lineage file {path} is not writeable: {exc}") from exc


def make_transport(config: LineageConfig) -> Transport:
    """The transport ``config`` names (the client decides separately whether it is disabled)."""
    if config.transport == "file":
        return DailyFileTransport(config.events_dir)
    if config.transport == "http":
        params: dict[str, Any] = {"url": config.url, "timeout": config.timeout_s}
        if config.api_key:
            params["auth"] = {"type": "api_key", "apiKey": config.api_key}
        return HttpTransport(HttpConfig.from_dict(params))
    return ConsoleTransport(ConsoleConfig())
