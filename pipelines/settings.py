"""The one settings model. Precedence: command-line flag > ENERGYLAKE_* environment >
``energylake.toml`` > defaults. Only this module reads the environment.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contracts.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from lake.storage import S3Encryption, Store

__all__ = [
    "CONFIG_ENV",
    "PRIVATE_UMASK",
    "ConfigFileNotFoundError",
    "Settings",
    "build_gateway_config",
    "config_path",
    "gateway_patterns",
    "load_settings",
    "private_files",
]

CONFIG_ENV = "ENERGYLAKE_CONFIG"
# deprecated setting -> the setting that replaced it (units in names; issue 13)
_RENAMED = {"gateway_roll_seconds": "gateway_roll_s"}
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
    decoders_dir: Path | None = Field(
        default=None,
        description="Folder of the decoder catalogue, one YAML file per payload format "
        "(default: the packaged one, transforms/decoders/).",
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
    quality_gate: bool = Field(
        default=True,
        description="Run the quality gate on every batch; a failed blocking rule holds a "
        "table's rows out of the lake until `energylake quality release`.",
    )
    quality_docs_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="Rebuild the gate's Data Docs (DATA_DIR/quality) at most this often.",
    )
    compact_max_files: int = Field(
        default=32,
        ge=2,
        description="process --follow compacts a partition once it holds more files than this.",
    )
    compact_budget_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "process --follow starts no new partition compaction after this many seconds "
            "between two batches (the most fragmented go first; the rest wait a batch)."
        ),
    )
    # --- batch pipeline: where Beam's SDK workers run (docs/ARCHITECTURE.md, "Runners") ---
    beam_worker_pool: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$",
        description="host:port of a Beam SDK worker pool (python -m "
        "apache_beam.runners.worker.worker_pool_main): the batch's DoFns run in its worker "
        "processes (Beam's EXTERNAL environment). Unset: in this process (fastest).",
    )
    # --- lineage (docs/LINEAGE.md); OPENLINEAGE_DISABLED=true turns emission off ---
    lineage_transport: str = Field(
        default="file",
        pattern=r"^(file|http|console)$",
        description="OpenLineage transport: file (JSON lines, queryable), http, console.",
    )
    lineage_url: str | None = Field(
        default=None, description="http transport: Marquez-compatible base URL."
    )
    lineage_api_key: str | None = Field(
        default=None, description="http transport: API key (sent as a Bearer token)."
    )
    lineage_dir: Path | None = Field(
        default=None, description="file transport: event folder (default: DATA_DIR/lineage)."
    )
    lineage_namespace: str = Field(
        default="energylake", min_length=1, description="OpenLineage namespace of our jobs."
    )

    # --- gateway (docs/GATEWAY.md) ---
    gateway_writer_id: str = Field(
        default="gateway",
        pattern=r"^[a-z0-9-]{1,32}$",
        description="Landing writer id of the gateway (one live process per id).",
    )
    gateway_identity_book: Path | None = Field(
        default=None,
        description="Identity book from `devices provision` "
        "(default: DATA_DIR/gateway/identities.json).",
    )
    gateway_roll_s: float = Field(
        default=2.0, gt=0, description="Close the open landing segment after this many seconds."
    )
    gateway_roll_bytes: int = Field(
        default=16 * 1024 * 1024, ge=4096, description="Close the open segment at this size."
    )
    gateway_fsync: bool = Field(
        default=True, description="fsync before acking (off only for throwaway data)."
    )
    gateway_flush_interval_ms: float = Field(
        default=2.0, ge=0, description="Group commit: a small batch waits this long for company."
    )
    gateway_flush_max_records: int = Field(
        default=5000, ge=1, description="Group commit: flush at once when this many queue."
    )
    gateway_min_free_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Backpressure: refuse to ack when the landing disk has less free.",
    )
    gateway_max_lag_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="Backpressure: refuse to ack when closed segments waiting for the "
        "processor exceed this many bytes.",
    )
    gateway_max_lag_age_s: float = Field(
        default=900.0,
        gt=0,
        description="Backpressure: refuse to ack when the oldest closed segment is older.",
    )
    gateway_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After of a 503 under backpressure."
    )
    gateway_monitor_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between looks at disk, lag and identity book."
    )
    gateway_switch_interval_ms: float = Field(
        default=20.0,
        gt=0,
        le=1000,
        description="Python thread switch interval in the gateway process (see GATEWAY.md).",
    )
    gateway_drain_timeout_s: float = Field(
        default=10.0, gt=0, description="SIGTERM: longest wait for in-flight work."
    )
    gateway_mqtt_host: str = Field(default="127.0.0.1", description="MQTT broker host.")
    gateway_mqtt_port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port.")
    gateway_mqtt_client_id: str = Field(
        default="energylake-gateway",
        min_length=1,
        description="Stable MQTT client id (the persistent session's name).",
    )
    gateway_mqtt_credentials: Path | None = Field(
        default=None,
        description="The gateway's MQTT account, JSON {username, password} from "
        "`devices provision` (default: DATA_DIR/gateway/gateway-mqtt.json).",
    )
    gateway_mqtt_topics: list[str] | None = Field(
        default=None,
        description="Subscriptions; {device} marks the publisher's segment, {client} its "
        "tenant's (subscribed per tenant; without it: the shared session). Default: what the "
        "decoder catalogue reads (each format's namespace: `energylake decoders list`).",
    )
    # --- gateway: HTTP edge limits and HTTPS (docs/GATEWAY.md "Edge limits", "HTTPS") ---
    gateway_http_idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Close a connection whose next request's headers are not complete "
        "this long after it opened or after the previous answer (idle and header timeout).",
    )
    gateway_http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for a request's whole body (408)."
    )
    gateway_http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open HTTP connections at most; one more is answered 503 and closed.",
    )
    gateway_http_max_connections_per_address: int = Field(
        default=200,
        ge=1,
        description="Open HTTP connections from one client address (IPv6: one /64) at "
        "most, so one client cannot hold every slot; one more is answered 503.",
    )
    gateway_http_auth_failures_per_s: float = Field(
        default=1.0,
        gt=0,
        description="Failed authentications per client address (IPv6: per /64) per second, "
        "checked before authentication (429).",
    )
    gateway_http_auth_failure_burst: int = Field(
        default=30, ge=1, description="Failed authentications an address may burst."
    )
    gateway_audit_repeat_window_s: float = Field(
        default=60.0,
        ge=0,
        description="Gateway audit: repeats of an event (same event, device, address) "
        "within this window are written as one record with a count (0: every one).",
    )
    gateway_audit_max_first_records: int = Field(
        default=100,
        ge=1,
        description="Gateway audit: first records (new kinds) written per repeat window, "
        "all kinds together; past it new kinds are only counted in one summary record.",
    )
    gateway_http_tls_cert: Path | None = Field(
        default=None,
        description="HTTPS: PEM certificate chain (with gateway_http_tls_key; both or none).",
    )
    gateway_http_tls_key: Path | None = Field(
        default=None, description="HTTPS: PEM private key of gateway_http_tls_cert."
    )
    # --- gateway MQTT hardening (issue 12: sessions per tenant, topics, floods, drops) ---
    gateway_mqtt_max_topic_bytes: int = Field(
        default=256,
        ge=32,
        le=65536,
        description="Longest MQTT topic landed as received; a longer one, or one whose "
        "variable segments are not ids, is landed under a bad-topic marker (quarantined).",
    )
    gateway_mqtt_topic_cache_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="Memory for the topic -> identity caches of all MQTT sessions together.",
    )
    gateway_mqtt_flood_messages: int = Field(
        default=6000,
        ge=1,
        description="Messages one device may send per flood window before it is audited "
        "(mqtt_device_flood); they are still landed.",
    )
    gateway_mqtt_flood_window_s: float = Field(
        default=60.0, gt=0, description="Window of the flood budget and of the topic audits."
    )
    gateway_mqtt_broker_log: Path | None = Field(
        default=None,
        description="Mosquitto's log file, read for drop episodes "
        "(default: DATA_DIR/gateway/mosquitto.log, where the provisioned config writes it).",
    )
    # --- gateway: MQTT session changes (docs/GATEWAY.md "Sessions") ---
    gateway_mqtt_drain_quiet_s: float = Field(
        default=2.0,
        gt=0,
        description="A retired MQTT session (tenant removed, book upgraded) counts as drained "
        "after this long with nothing received and nothing in flight.",
    )
    gateway_sparkplug_rebirth_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Least time between two Sparkplug B rebirth requests (NCMD Node "
        "Control/Rebirth) the gateway publishes to one edge node (docs/SPARKPLUG.md).",
    )
    gateway_http_host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    gateway_http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port.")
    gateway_http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body (as sent)."
    )
    gateway_http_max_decompressed_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest body after gzip inflation."
    )
    gateway_http_max_depth: int = Field(
        default=16, ge=3, le=512, description="Deepest JSON nesting accepted."
    )
    gateway_http_max_readings: int = Field(
        default=5000, ge=1, description="Most readings in one request."
    )
    gateway_http_rate_per_s: float = Field(
        default=20.0, gt=0, description="Per-device request rate (token bucket refill)."
    )
    gateway_http_burst: int = Field(
        default=100, ge=1, description="Per-device burst (token bucket size)."
    )

    # --- at rest on S3 (docs/LAKE.md, "Encryption at rest") ---
    s3_sse: str = Field(
        default="AES256",
        pattern=r"^(AES256|aws:kms|aws:kms:dsse|none)$",
        description="Server-side encryption asked for on every object written to an S3 "
        "lake: AES256 (SSE-S3), aws:kms, aws:kms:dsse, or none (the bucket's default).",
    )
    s3_sse_kms_key_id: str | None = Field(
        default=None,
        min_length=1,
        description="KMS key id, ARN or alias for aws:kms (default: the AWS-managed key).",
    )

    # --- retention (issue 15): docs/RETENTION.md, "Tiers: hot, archive, delete" ---
    retention_interval_s: float = Field(
        default=86400.0,
        gt=0,
        description="energylake run: seconds between retention passes.",
    )
    retention_first_delay_s: float = Field(
        default=60.0, ge=0, description="energylake run: seconds from start to the first pass."
    )
    archive_storage_class: Literal["GLACIER_IR", "STANDARD", "STANDARD_IA"] = Field(
        default="GLACIER_IR",
        description="S3 storage class of archive-tier data files (never of _delta_log); "
        "GLACIER_IR stays readable at once, GLACIER / DEEP_ARCHIVE would not and are refused.",
    )
    archive_target_file_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Target size of an archive data file (one per month and pass, split above).",
    )

    # --- the tamper-evident audit log (docs/AUDIT.md; issue 14, audit) ---
    audit_anchor_dir: Path | None = Field(
        default=None,
        description="Where the audit chains' anchors go (<dir>/<gateway|pipeline|access>"
        ".anchors.jsonl); default <data_dir>/audit/<chain>/anchors/. Set it to another "
        "mount or a WORM store, so whoever can rewrite the log cannot rewrite its anchors.",
    )
    audit_anchor_every_records: int = Field(
        default=100, ge=1, description="Audit chains: anchor the head every this many records."
    )
    audit_anchor_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Audit chains: a writer anchors its head when it has not for this long "
        "(at its next record or timer); bounds the tail a cut could hide.",
    )

    # --- storage-area retention (docs/RETENTION.md, "Storage areas"; issue 15) ---
    raw_archive_days: int = Field(
        default=90,
        ge=2,
        description="Raw segment archive (lake raw/): days kept. Raw payloads may hold "
        "personal data: as long as the quarantine keeps its excerpts (30 + 60 days).",
    )
    batch_state_days: int = Field(
        default=30,
        ge=1,
        description="Finished pipeline batches' state: days kept (the last 100 batches always).",
    )
    lineage_days: int = Field(
        default=730,
        ge=30,
        description="Lineage events: days kept; at least as long as extract_days, since "
        "erasure finds extracts through them.",
    )
    data_docs_days: int = Field(
        default=400, ge=1, description="Data Docs validation results: days kept."
    )
    log_days: int = Field(default=30, ge=1, description="Log files: days after their last write.")
    extract_days: int = Field(
        default=30, ge=1, description="Extracts (energylake extract): days kept."
    )
    report_days: int = Field(
        default=2920,
        ge=365,
        description="Sustainability reports (energylake report, the reports/ folder): days "
        "kept; 8 years, as books of account (Companies Act 2013, s. 128(5)).",
    )
    receipt_days: int = Field(
        default=1095,
        ge=365,
        description="Erasure receipts: days kept (the fact of an erasure; at least a year).",
    )
    access_history_days: int = Field(
        default=730, ge=365, description="Superseded grant/objection revisions: days kept."
    )
    deleted_tenant_key_days: int = Field(
        default=30,
        ge=0,
        description="A tenant's pseudonymisation key once the tenant has no table left: "
        "days before it is destroyed (crypto-shredding of its pseudonyms).",
    )

    # --- data-subject erasure (docs/ERASURE.md; issue 15, subject requests) ---
    erasure_reader_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="Erasure: wait this long between rewriting a person's rows and vacuuming "
        "the old files, so reads already under way finish on the files they listed.",
    )

    # --- renamed settings (units in names), the old names still read; issue 13 ---
    gateway_roll_seconds: float | None = Field(
        default=None,
        gt=0,
        exclude=True,
        description="Deprecated: the old name of gateway_roll_s (which wins when both are set).",
    )

    @model_validator(mode="after")
    def _renamed(self) -> Settings:
        """A renamed setting given by its old name still takes effect, with a warning."""
        for old, new in _RENAMED.items():
            value = getattr(self, old)
            if value is None:
                continue
            warnings.warn(
                f"setting {old} (ENERGYLAKE_{old.upper()}) is deprecated; use {new} "
                f"(ENERGYLAKE_{new.upper()})",
                DeprecationWarning,
                stacklevel=2,
            )
            if new not in self.model_fields_set:
                object.__setattr__(self, new, value)
        return self

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> Settings:
        if self.s3_sse_kms_key_id and not self.s3_sse.startswith("aws:kms"):
            raise ValueError(f"s3_sse_kms_key_id is set but s3_sse is {self.s3_sse}")
        return self

    def s3_encryption(self) -> S3Encryption:
        """``s3_sse`` and ``s3_sse_kms_key_id`` as the lake's stores take them."""
        from lake.storage import S3Encryption

        algorithm = None if self.s3_sse == "none" else self.s3_sse
        return S3Encryption(algorithm, self.s3_sse_kms_key_id)

    def lake_store(self) -> Store:
        """The lake, with this configuration's S3 encryption: every writer opens it here."""
        from lake.storage import Store

        return Store.from_uri(self.lake, encryption=self.s3_encryption())

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


# errors: the config file asked for is missing (a ConfigError; a FileNotFoundError as before)
class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file given by --config or $ENERGYLAKE_CONFIG does not exist."""


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings with the given command-line flags on top (flags left as None are not set).

    The config file is ``config_file``, else $ENERGYLAKE_CONFIG, else ./energylake.toml
    when present. A config file that was asked for and is missing is an error.
    """
    path, asked = config_path(config_file)
    if asked and not path.is_file():
        raise ConfigFileNotFoundError(
            f"config file {path} does not exist (from --config or ${CONFIG_ENV}); "
            "give an existing file or unset it",
            setting="--config",
            value=str(path),
        )
    bound = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": path})},
    )
    settings: Settings = bound(**{k: v for k, v in flags.items() if v is not None})
    return settings


# --- private files (cli): every entry point (the CLI, the development stack) calls this ------
# Files 0600, folders 0700: data/ holds raw payloads, quarantine excerpts, audit logs with
# client addresses, contacts in clear and secrets. Set once when a process starts; children
# inherit it, Mosquitto included.
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """From now on this process (and every child it starts) creates files 0600 and
    folders 0700. Explicit modes (``os.open(..., 0o600)``, ``chmod``) still apply."""
    os.umask(PRIVATE_UMASK)


def gateway_patterns(settings: Settings) -> tuple[str, ...]:
    """What the gateway subscribes to and the broker lets devices write: the configured
    ``gateway_mqtt_topics``, else what the decoder catalogue reads."""
    if settings.gateway_mqtt_topics:
        return tuple(settings.gateway_mqtt_topics)
    from contracts import load_registry
    from transforms.catalogue import DECODERS_DIR, load_catalogue

    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    return load_catalogue((settings.decoders_dir or DECODERS_DIR,), registry).gateway_patterns()


def build_gateway_config(
    settings: Settings, *, mqtt: bool = True, http: bool = True
) -> GatewayConfig:
    """The gateway's config from the settings; reads the MQTT credentials file."""
    from contracts.errors import ConfigError
    from gateway.config import GatewayConfig
    from gateway.sessions import (
        SESSION_STATE_FILE,
        MqttSession,
        SessionBookError,
        read_session_book,
    )

    gateway_dir = settings.data_dir / "gateway"
    username: str | None = None
    password: str | None = None
    sessions: tuple[MqttSession, ...] | None = None
    retired: tuple[MqttSession, ...] = ()
    creds = settings.gateway_mqtt_credentials or gateway_dir / "gateway-mqtt.json"
    if mqtt:
        try:
            book = read_session_book(creds)
        except SessionBookError as exc:
            raise ConfigError(
                str(exc), setting="gateway_mqtt_credentials", value=str(creds)
            ) from exc
        password = book.password
        # (a version 1 book is one session of scope "all"; reloaded like any other, so an
        # upgrade of the book reaches a running gateway)
        username = book.sessions[0].username if book.sessions else None
        sessions, retired = book.sessions, book.retired
    return GatewayConfig(
        landing_dir=settings.landing,
        identity_book=settings.gateway_identity_book or gateway_dir / "identities.json",
        audit_dir=settings.data_dir / "audit" / "gateway",
        writer_id=settings.gateway_writer_id,
        fsync=settings.gateway_fsync,
        roll_bytes=settings.gateway_roll_bytes,
        roll_seconds=settings.gateway_roll_s,
        flush_interval_s=settings.gateway_flush_interval_ms / 1000.0,
        flush_max_records=settings.gateway_flush_max_records,
        min_free_bytes=settings.gateway_min_free_bytes,
        max_lag_bytes=settings.gateway_max_lag_bytes,
        max_lag_age_s=settings.gateway_max_lag_age_s,
        retry_after_s=settings.gateway_retry_after_s,
        monitor_interval_s=settings.gateway_monitor_interval_s,
        mqtt_enabled=mqtt,
        mqtt_host=settings.gateway_mqtt_host,
        mqtt_port=settings.gateway_mqtt_port,
        mqtt_client_id=settings.gateway_mqtt_client_id,
        mqtt_username=username,
        mqtt_password=password,
        mqtt_topics=gateway_patterns(settings),
        mqtt_sessions=sessions,
        mqtt_session_book=creds,
        mqtt_retired_sessions=retired,
        mqtt_session_state=creds.with_name(SESSION_STATE_FILE),
        mqtt_max_topic_bytes=settings.gateway_mqtt_max_topic_bytes,
        mqtt_topic_cache_bytes=settings.gateway_mqtt_topic_cache_bytes,
        mqtt_flood_messages=settings.gateway_mqtt_flood_messages,
        mqtt_flood_window_s=settings.gateway_mqtt_flood_window_s,
        mqtt_drain_quiet_s=settings.gateway_mqtt_drain_quiet_s,
        mqtt_broker_log=settings.gateway_mqtt_broker_log or gateway_dir / "mosquitto.log",
        mqtt_broker_log_state=gateway_dir / "broker-log-position.json",
        sparkplug_state_dir=gateway_dir / "sparkplug",
        sparkplug_rebirth_interval_s=settings.gateway_sparkplug_rebirth_interval_s,
        http_enabled=http,
        http_host=settings.gateway_http_host,
        http_port=settings.gateway_http_port,
        http_max_body_bytes=settings.gateway_http_max_body_bytes,
        http_max_decompressed_bytes=settings.gateway_http_max_decompressed_bytes,
        http_max_depth=settings.gateway_http_max_depth,
        http_max_readings=settings.gateway_http_max_readings,
        http_rate_per_s=settings.gateway_http_rate_per_s,
        http_burst=settings.gateway_http_burst,
        # HTTP edge hardening and HTTPS
        http_idle_timeout_s=settings.gateway_http_idle_timeout_s,
        http_body_timeout_s=settings.gateway_http_body_timeout_s,
        http_max_connections=settings.gateway_http_max_connections,
        http_max_connections_per_address=settings.gateway_http_max_connections_per_address,
        http_auth_failures_per_s=settings.gateway_http_auth_failures_per_s,
        http_auth_failure_burst=settings.gateway_http_auth_failure_burst,
        audit_repeat_window_s=settings.gateway_audit_repeat_window_s,
        audit_max_first_records=settings.gateway_audit_max_first_records,
        audit_anchor_dir=settings.audit_anchor_dir,
        audit_anchor_every_records=settings.audit_anchor_every_records,
        audit_anchor_interval_s=settings.audit_anchor_interval_s,
        http_tls_cert=settings.gateway_http_tls_cert,
        http_tls_key=settings.gateway_http_tls_key,
        drain_timeout_s=settings.gateway_drain_timeout_s,
        switch_interval_s=settings.gateway_switch_interval_ms / 1000.0,
    )
