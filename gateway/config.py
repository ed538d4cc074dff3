"""The gateway's configuration: a plain dataclass (the CLI builds it from the settings).

The gateway package never reads the environment or imports ``pipelines``; everything it
needs arrives here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from contracts.errors import ConfigError
from gateway.sessions import MqttSession

__all__ = [
    "CANONICAL_PATTERN",
    "DEFAULT_TOPIC_PATTERNS",
    "GatewayConfig",
    "TopicPattern",
    "canonical_topic",
]

CANONICAL_PATTERN = "emaas/v1/{client}/+/{device}/telemetry"
# What the shipped decoder catalogue (transforms/decoders/) reads, as the gateway subscribes
# to it: the CLI derives the list from the configured catalogue (``gateway_patterns``), and
# a test keeps this copy equal to the shipped one (the gateway does not import transforms).
# A vendor's whole namespace is subscribed, so a device's message on a topic no decoder
# reads is landed (and quarantined UNDECODED_TOPIC), not dropped by the broker's ACL.
# Sparkplug B (docs/SPARKPLUG.md): the {device} segment is the edge node (its account);
# only the six decoded message types, so the gateway never reads its own NCMD.
DEFAULT_TOPIC_PATTERNS: tuple[str, ...] = (
    CANONICAL_PATTERN,
    "spBv1.0/+/NBIRTH/{device}",
    "spBv1.0/+/NDATA/{device}",
    "spBv1.0/+/DBIRTH/{device}/+",
    "spBv1.0/+/DDATA/{device}/+",
    "spBv1.0/+/NDEATH/{device}",
    "spBv1.0/+/DDEATH/{device}/+",
    "tele/{device}/+",
    "v1/devices/{device}/+",
    "{device}/status/+",
    "{device}/events/rpc",
    "{device}/online",
)
_SEGMENT = re.compile(r"[^/#+]+")


def canonical_topic(client_id: str, branch_id: str, device_id: str) -> str:
    """The canonical telemetry topic of a device (what HTTP readings are landed under)."""
    return f"emaas/v1/{client_id}/{branch_id}/{device_id}/telemetry"


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """An MQTT subscription whose ``{device}`` segment names the publishing device, and
    whose optional ``{client}`` segment names its tenant.

    ``tele/{device}/+`` subscribes to ``tele/+/+``; a message on ``tele/m-1/SENSOR`` is
    landed with identity ``m-1``. Mosquitto's ACL lets a device
    publish only where that segment is its own user name (and the ``{client}`` segment its
    own tenant), so both are authenticated. A pattern with ``{client}`` is subscribed per
    tenant (by the tenant's session, ``gateway/sessions.py``); one without is taken by the
    shared session.
    """

    pattern: str
    subscription: str
    device_index: int
    client_index: int | None = None

    @classmethod
    def parse(cls, pattern: str) -> TopicPattern:
        parts = pattern.split("/")
        if parts.count("{device}") != 1 or parts.count("{client}") > 1 or "#" in pattern:
            raise ConfigError(
                f"topic pattern {pattern!r} needs exactly one '{{device}}' segment, at most "
                "one '{client}' and no '#'; fix gateway_mqtt_topics",
                setting="gateway_mqtt_topics",
                value=pattern,
            )
        for part in parts:
            if part not in ("+", "{device}", "{client}") and not _SEGMENT.fullmatch(part):
                raise ConfigError(
                    f"topic pattern {pattern!r} has an empty or bad segment; "
                    "fix gateway_mqtt_topics",
                    setting="gateway_mqtt_topics",
                    value=pattern,
                )
        index = parts.index("{device}")
        client = parts.index("{client}") if "{client}" in parts else None
        subscription = "/".join("+" if p in ("{device}", "{client}") else p for p in parts)
        return cls(pattern, subscription, index, client)

    def identity(self, topic: str) -> str | None:
        """The device segment of ``topic`` if it matches this pattern, else None."""
        parts = topic.split("/")
        wanted = self.subscription.split("/")
        if len(parts) != len(wanted):
            return None
        for got, want in zip(parts, wanted, strict=True):
            if want != "+" and got != want:
                return None
        device = parts[self.device_index]
        return device or None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway process needs. Sizes in bytes, times in seconds."""

    landing_dir: Path
    identity_book: Path
    audit_dir: Path
    writer_id: str = "gateway"
    # landing log and group commit
    fsync: bool = True
    roll_bytes: int = 16 * 1024 * 1024
    roll_seconds: float = 2.0
    flush_interval_s: float = 0.002
    flush_max_records: int = 5000
    # backpressure
    min_free_bytes: int = 256 * 1024 * 1024
    max_lag_bytes: int = 2 * 1024 * 1024 * 1024
    max_lag_age_s: float = 900.0
    monitor_interval_s: float = 1.0
    retry_after_s: int = 5
    # MQTT
    mqtt_enabled: bool = True
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_client_id: str = "energylake-gateway"
    mqtt_username: str | None = "energylake-gateway"
    mqtt_password: str | None = None
    mqtt_topics: tuple[str, ...] = DEFAULT_TOPIC_PATTERNS
    mqtt_keepalive_s: int = 30
    mqtt_reconnect_min_s: float = 0.5
    mqtt_reconnect_max_s: float = 30.0
    # MQTT hardening (issue 12): sessions per tenant, topic bounds, floods, broker drops.
    # None: one session (mqtt_username / mqtt_client_id) taking every device topic.
    mqtt_sessions: tuple[MqttSession, ...] | None = None
    mqtt_session_book: Path | None = None  # reloaded when it changes (new devices, tenants)
    mqtt_retired_sessions: tuple[MqttSession, ...] = ()  # drained, then left
    mqtt_session_state: Path | None = None  # filters each broker session holds, drained ones
    mqtt_drain_quiet_s: float = 2.0  # a retired session is drained after this long quiet
    mqtt_max_topic_bytes: int = 256
    mqtt_topic_cache_bytes: int = 16 * 1024 * 1024  # all sessions' topic caches together
    mqtt_flood_messages: int = 6000  # per device and window before a flood is audited
    mqtt_flood_window_s: float = 60.0
    mqtt_broker_log: Path | None = None  # Mosquitto's log file (drop episodes)
    mqtt_broker_log_state: Path | None = None  # where the position in it is kept
    # Sparkplug B (gateway/sparkplug/): the edge nodes' state files (None: the folder
    # gateway/sparkplug next to the landing log's folder), and the least time between two
    # rebirth requests (NCMD) to one edge node.
    sparkplug_state_dir: Path | None = None
    sparkplug_rebirth_interval_s: float = 5.0
    # HTTP
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_max_body_bytes: int = 1024 * 1024
    http_max_decompressed_bytes: int = 1024 * 1024
    http_max_depth: int = 16
    http_max_readings: int = 5000
    http_rate_per_s: float = 20.0
    http_burst: int = 100
    # HTTP edge hardening: connection lifetime and count, failed authentications per
    # client address (checked before authentication), audit repeats, HTTPS
    http_idle_timeout_s: float = 15.0
    http_body_timeout_s: float = 30.0
    http_max_connections: int = 1000
    http_max_connections_per_address: int = 200  # IPv6: per /64; one client not all slots
    http_auth_failures_per_s: float = 1.0
    http_auth_failure_burst: int = 30
    audit_repeat_window_s: float = 60.0
    audit_max_first_records: int = 100  # per window, all kinds; past it one summary record
    # the audit chain's anchors (audit/chain.py): where, every N records, every T seconds
    audit_anchor_dir: Path | None = None
    audit_anchor_every_records: int = 100
    audit_anchor_interval_s: float = 300.0
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    drain_timeout_s: float = 10.0
    # The interpreter's thread switch interval for the gateway process. Longer slices let
    # paho's thread take a run of messages and the committer a bigger batch: measured on
    # 2 cores, 20 ms drained a QoS 1 backlog at 0.87-0.96 of a plain paho subscriber, the
    # default 5 ms at 0.70-0.80. The cost: an ack may wait up to one slice more.
    switch_interval_s: float = 0.02
    patterns: tuple[TopicPattern, ...] = field(init=False)

    @property
    def sparkplug_folder(self) -> Path:
        """Where the Sparkplug B edge nodes' state files are kept."""
        if self.sparkplug_state_dir is not None:
            return self.sparkplug_state_dir
        return self.landing_dir.parent / "gateway" / "sparkplug"

    @property
    def sparkplug_enabled(self) -> bool:
        """Some topic pattern subscribes to Sparkplug B topics."""
        return any(p.subscription.startswith("spBv1.0/") for p in self.patterns)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", tuple(TopicPattern.parse(p) for p in self.mqtt_topics))
        checks = {
            "roll_bytes": self.roll_bytes > 16,
            "roll_seconds": self.roll_seconds > 0,
            "flush_interval_s": self.flush_interval_s >= 0,
            "flush_max_records": self.flush_max_records >= 1,
            "http_max_body_bytes": self.http_max_body_bytes >= 1,
            "http_max_decompressed_bytes": self.http_max_decompressed_bytes >= 1,
            "http_max_depth": self.http_max_depth >= 2,
            "http_max_readings": self.http_max_readings >= 1,
            "http_rate_per_s": self.http_rate_per_s > 0,
            "http_burst": self.http_burst >= 1,
            "http_idle_timeout_s": self.http_idle_timeout_s > 0,
            "http_body_timeout_s": self.http_body_timeout_s > 0,
            "http_max_connections": self.http_max_connections >= 1,
            "http_max_connections_per_address": self.http_max_connections_per_address >= 1,
            "http_auth_failures_per_s": self.http_auth_failures_per_s > 0,
            "http_auth_failure_burst": self.http_auth_failure_burst >= 1,
            "audit_repeat_window_s": self.audit_repeat_window_s >= 0,
            "audit_max_first_records": self.audit_max_first_records >= 1,
            "mqtt_max_topic_bytes": self.mqtt_max_topic_bytes >= 32,
            "mqtt_topic_cache_bytes": self.mqtt_topic_cache_bytes >= 64 * 1024,
            "mqtt_flood_messages": self.mqtt_flood_messages >= 1,
            "mqtt_flood_window_s": self.mqtt_flood_window_s > 0,
            "mqtt_drain_quiet_s": self.mqtt_drain_quiet_s > 0,
            "sparkplug_rebirth_interval_s": self.sparkplug_rebirth_interval_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"gateway config: out of range: {', '.join(bad)}; set the gateway_ settings of "
                "these names within their ranges (docs/GATEWAY.md)",
                setting=", ".join(f"gateway_{name}" for name in bad),
            )
        if (self.http_tls_cert is None) != (self.http_tls_key is None):
            given, missing = (
                ("gateway_http_tls_cert", "gateway_http_tls_key")
                if self.http_tls_cert is not None
                else ("gateway_http_tls_key", "gateway_http_tls_cert")
            )
            raise ConfigError(
                f"gateway config: HTTPS needs a certificate and its key: {given} is set, "
                f"{missing} is not (set both, or neither for plain HTTP)",
                setting=missing,
            )
        if not (self.mqtt_enabled or self.http_enabled):
            raise ConfigError(
                "gateway config: enable MQTT, HTTP or both (drop --no-mqtt or --no-http)",
                setting="--mqtt/--http",
            )
