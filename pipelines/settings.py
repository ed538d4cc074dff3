"""The one settings model. Precedence: command-line flag > ENERGYLAKE_* environment >
``energylake.toml`` > defaults. Only this module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["CONFIG_ENV", "Settings", "config_path", "load_settings"]

CONFIG_ENV = "ENERGYLAKE_CONFIG"
_DEFAULT_CONFIG = Path("energylake.toml")


class Settings(BaseSettings):
    """Where energylake keeps its data and how it behaves. Every field has an env var."""

    model_config = SettingsConfigDict(
        env_prefix="ENERGYLAKE_",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path("data"), description="Root of everything energylake writes."
    )
    contracts_dir: Path | None = Field(
        default=None, description="Folder of *.odcs.yaml contracts (default: the packaged ones)."
    )
    lake_uri: str | None = Field(
        default=None,
        description="Where the Delta tables live: a path or s3://bucket/prefix "
        "(default: DATA_DIR/lake).",
    )
    keys_dir: Path | None = Field(
        default=None, description="Per-tenant pseudonymisation keys (default: DATA_DIR/keys)."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    landing_dir: Path | None = Field(
        default=None, description="Landing log root, open/ and closed/ (default: DATA_DIR/landing)."
    )
    pipeline_id: str = Field(
        default="main",
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="Names the pipeline's app transaction in every table it commits to.",
    )
    payload_limit_bytes: int = Field(
        default=65536, ge=256, description="Largest payload accepted; larger is quarantined."
    )
    follow_interval_s: float = Field(
        default=5.0, gt=0, description="process --follow: seconds between looks for segments."
    )
    compact_max_files: int = Field(
        default=32,
        ge=2,
        description="process --follow compacts a partition once it holds more files than this.",
    )

    @property
    def lake(self) -> str:
        return self.lake_uri or str(self.data_dir / "lake")

    @property
    def landing(self) -> Path:
        return self.landing_dir or self.data_dir / "landing"

    @property
    def keys(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def sim_dir(self) -> Path:
        return self.data_dir / "sim"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # toml_file comes from the model config that load_settings() sets.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def config_path(explicit: Path | None = None) -> tuple[Path, bool]:
    """The config file to read, and whether it was asked for (then it must exist)."""
    if explicit is not None:
        return explicit, True
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return _DEFAULT_CONFIG, False


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings with the given command-line flags on top (flags left as None are not set).

    The config file is ``config_file``, else $ENERGYLAKE_CONFIG, else ./energylake.toml
    when present. A config file that was asked for and is missing is an error.
    """
    path, asked = config_path(config_file)
    if asked and not path.is_file():
        raise FileNotFoundError(
            f"config file {path} does not exist (from --config or ${CONFIG_ENV})"
        )
    bound = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": path})},
    )
    settings: Settings = bound(**{k: v for k, v in flags.items() if v is not None})
    return settings
