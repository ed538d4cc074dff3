"""Transports: the client's own http and console ones, and a daily JSON-lines file transport.

The file transport is our own implementation of the client's public ``Transport`` interface
(``kind``, ``config_class``, ``emit``), registered with the client's transport factory
(``register_transport``) and built through it like the client's own transports. It writes
one file per UTC day of the event (``events/YYYY-MM-DD.jsonl``: the store can index closed
days once and skip them after), and appends each event with one ``write`` and an fsync, so
a line is either whole on disk or absent. It does not subclass the client's
``FileTransport``: that one picks its file in a private method, which a release may change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openlineage.client.serde import Serde
from openlineage.client.transport import (
    Config,
    Transport,
    get_default_factory,
    register_transport,
)

from contracts.errors import ConfigError
from lineage.config import LineageConfig
from lineage.errors import LineageWriteError

__all__ = ["DailyFileConfig", "DailyFileTransport", "day_file", "make_transport"]


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


@dataclass(frozen=True, slots=True)
class DailyFileConfig(Config):
    """Where the daily files go: ``events_dir`` (the client's factory passes it as a string)."""

    events_dir: Path

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> DailyFileConfig:
        events_dir = params.get("events_dir")
        if not events_dir:
            raise ConfigError(
                f"lineage transport {DailyFileTransport.kind!r} needs an events_dir "
                "(set ENERGYLAKE_LINEAGE_DIR or the data directory)",
                setting="lineage_dir",
                value=events_dir,
            )
        return cls(events_dir=Path(events_dir))


class DailyFileTransport(Transport):
    """JSON lines, one file per UTC day, append + fsync (see the module doc)."""

    kind = "energylake_daily_file"
    config_class = DailyFileConfig

    def __init__(self, config: DailyFileConfig) -> None:
        self.config = config
        self.events_dir = config.events_dir

    def emit(self, event: Any) -> None:
        path = day_file(self.events_dir, _event_time(event))
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
            raise LineageWriteError(path, exc) from exc


register_transport(DailyFileTransport)


def make_transport(config: LineageConfig) -> Transport:
    """The transport ``config`` names, built by the client's transport factory.

    The factory (like the client) returns its no-op transport when OPENLINEAGE_DISABLED is
    true; the client honours the same switch on its own.
    """
    params: dict[str, Any]
    if config.transport == "file":
        params = {"type": DailyFileTransport.kind, "events_dir": str(config.events_dir)}
    elif config.transport == "http":
        params = {"type": "http", "url": config.url, "timeout": config.timeout_s}
        if config.api_key:
            params["auth"] = {"type": "api_key", "apiKey": config.api_key}
    else:
        params = {"type": "console"}
    return get_default_factory().create(params)
