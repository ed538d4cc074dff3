"""Prometheus metrics of one gateway (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.pressure import Pressure

__all__ = ["GatewayMetrics"]

_FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """Counters, gauges and histograms named ``energylake_gateway_*``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "energylake_gateway_accepted_records",
            "Records acknowledged after fsync, by source (mqtt, http).",
            ["source"],
            registry=r,
        )
        self.rejected = Counter(
            "energylake_gateway_rejected_requests",
            "Requests or messages refused, by source and stable reason.",
            ["source", "reason"],
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "energylake_gateway_fsync_seconds",
            "Time of one landing-log fsync (one group commit).",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.batch_records = Histogram(
            "energylake_gateway_commit_batch_records",
            "Records per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.lag_bytes = Gauge(
            "energylake_gateway_landing_lag_bytes",
            "Bytes in closed segments the processor has not taken.",
            registry=r,
        )
        self.lag_segments = Gauge(
            "energylake_gateway_landing_lag_segments",
            "Closed segments the processor has not taken.",
            registry=r,
        )
        self.lag_age = Gauge(
            "energylake_gateway_landing_oldest_closed_age_seconds",
            "Age of the oldest closed segment (0 when none).",
            registry=r,
        )
        self.free_bytes = Gauge(
            "energylake_gateway_landing_free_bytes",
            "Free bytes on the landing log's file system.",
            registry=r,
        )
        self.backpressure = Gauge(
            "energylake_gateway_backpressure",
            "1 while the gateway refuses to acknowledge (disk, writer or processor lag).",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "energylake_gateway_mqtt_connected",
            "1 while the MQTT consumer is connected to the broker.",
            registry=r,
        )
        # MQTT hardening (issue 12): sessions, retained replays, topics, floods, broker drops
        self.mqtt_session_connected = Gauge(
            "energylake_gateway_mqtt_session_connected",
            "1 while this MQTT session (a tenant's, or the shared one) is connected and "
            "subscribed.",
            ["session"],
            registry=r,
        )
        self.mqtt_retained = Counter(
            "energylake_gateway_mqtt_retained",
            "Retained deliveries (RETAIN 1: the broker's retained store, sent once per new "
            "subscription) landed.",
            registry=r,
        )
        self.mqtt_bad_topics = Counter(
            "energylake_gateway_mqtt_bad_topics",
            "Messages landed under a bad-topic marker (too long, or a segment not an id).",
            ["reason"],
            registry=r,
        )
        self.mqtt_floods = Counter(
            "energylake_gateway_mqtt_device_floods",
            "Device windows over the flood budget (each audited as mqtt_device_flood).",
            registry=r,
        )
        self.broker_drop_episodes = Counter(
            "energylake_gateway_broker_drop_episodes",
            "Times the broker started dropping messages queued for a session (its log).",
            ["session"],
            registry=r,
        )
        self.broker_dropped = Gauge(
            "energylake_gateway_broker_dropped_messages",
            "Messages the broker dropped since it started, all sessions ($SYS counter).",
            registry=r,
        )
        self.broker_log_readable = Gauge(
            "energylake_gateway_broker_log_readable",
            "1 while the broker log (drop episodes) can be read.",
            registry=r,
        )
        # Sparkplug B (gateway/sparkplug/, docs/SPARKPLUG.md)
        self.sparkplug_messages = Counter(
            "energylake_gateway_sparkplug_messages",
            "Sparkplug B messages landed, by type (NBIRTH ... DDEATH) and problem code "
            "(none, UNKNOWN_ALIAS, SEQ_GAP, STALE_DEATH, MALFORMED_PAYLOAD: landed as received).",
            ["type", "problem"],
            registry=r,
        )
        self.sparkplug_redeliveries = Counter(
            "energylake_gateway_sparkplug_redeliveries",
            "Sparkplug B messages the broker sent again, landed with their first (boot, seq).",
            registry=r,
        )
        self.sparkplug_rebirths = Counter(
            "energylake_gateway_sparkplug_rebirth_requests",
            "Rebirth requests (NCMD Node Control/Rebirth) published, by the problem that "
            "caused them (rate-limited per edge node).",
            ["reason"],
            registry=r,
        )
        self.sparkplug_state_writes = Counter(
            "energylake_gateway_sparkplug_state_writes",
            "Sparkplug B edge node state files written (before the messages are acked).",
            registry=r,
        )
        self.inflight = Gauge(
            "energylake_gateway_inflight_records",
            "Records received and not yet durable (not yet acknowledged).",
            registry=r,
        )

    def observe_fsync(self, seconds: float, records: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.batch_records.observe(records)

    def observe_pressure(self, pressure: Pressure) -> None:
        self.lag_bytes.set(pressure.lag.bytes)
        self.lag_segments.set(pressure.lag.segments)
        self.lag_age.set(pressure.lag.oldest_age_s)
        self.free_bytes.set(pressure.free_bytes)
        self.backpressure.set(0 if pressure.reason is None else 1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
