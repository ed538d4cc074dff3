"""How lineage is emitted: the transport and where it writes, built from settings-like objects.

``lineage`` never imports ``pipelines``: :meth:`LineageConfig.from_settings` reads the
attributes it needs from any object that has them (the pipelines' ``Settings`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from contracts.errors import ConfigError

__all__ = ["TRANSPORTS", "LineageConfig", "SettingsLike"]

Transport = Literal["file", "http", "console"]
TRANSPORTS: tuple[str, ...] = ("file", "http", "console")
DEFAULT_NAMESPACE = "energylake"


class SettingsLike(Protocol):
    """What :meth:`LineageConfig.from_settings` reads."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def pipeline_id(self) -> str: ...
    @property
    def lineage_transport(self) -> str: ...
    @property
    def lineage_url(self) -> str | None: ...
    @property
    def lineage_api_key(self) -> str | None: ...
    @property
    def lineage_dir(self) -> Path | None: ...
    @property
    def lineage_namespace(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LineageConfig:
    """Transport (file | http | console), its target, and the job namespace.

    The file transport writes JSON lines under ``directory/events/`` (one file per UTC day);
    it is also what ``energylake lineage`` queries.
    """

    transport: Transport = "file"
    directory: Path = Path("data/lineage")
    url: str | None = None
    api_key: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    pipeline_id: str = "main"
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"lineage transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}",
                setting="lineage_transport",
                value=self.transport,
            )
        if self.transport == "http" and not self.url:
            raise ConfigError(
                "lineage transport 'http' needs a url (ENERGYLAKE_LINEAGE_URL)",
                setting="lineage_url",
            )
        if not self.namespace:
            raise ConfigError(
                "lineage namespace may not be empty; set ENERGYLAKE_LINEAGE_NAMESPACE",
                setting="lineage_namespace",
                value=self.namespace,
            )

    @property
    def events_dir(self) -> Path:
        return self.directory / "events"

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> LineageConfig:
        transport = settings.lineage_transport
        if transport not in TRANSPORTS:
            raise ConfigError(
                f"lineage transport {transport!r} is not one of {', '.join(TRANSPORTS)}; "
                "set ENERGYLAKE_LINEAGE_TRANSPORT",
                setting="lineage_transport",
                value=transport,
            )
        return cls(
            transport=transport,  # type: ignore[arg-type]
            directory=settings.lineage_dir or settings.data_dir / "lineage",
            url=settings.lineage_url,
            api_key=settings.lineage_api_key,
            namespace=settings.lineage_namespace,
            pipeline_id=settings.pipeline_id,
        )
