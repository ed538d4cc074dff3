"""One MQTT session of the gateway: a persistent QoS 1 session acking after fsync.

paho-mqtt 2.x, ``clean_session=False``, ``manual_ack=True``: each message is landed
through the group commit and its PUBACK is sent only once it is on disk. A message that
is not on disk is never acked, so the broker keeps it in the session and sends it again
after a reconnect (the pipeline deduplicates on device_id and seq). With manual acks the
broker stops delivering at its ``max_inflight_messages``, which bounds what the gateway
holds in memory.

A session subscribes to its devices' topics by the device segment (``gateway/sessions.py``)
and lands each message under a bounded topic (``gateway/topics.py``).

Acks are sent from paho's own network thread: the committer hands each batch's message
ids back through an ``Inbox`` callback, and the next ``on_message`` of the session sends
them. When no message comes to carry them, the door's acker sends what is left after a
short grace period.

Retained messages: under MQTT 3.1.1 a broker forwards a live publication with RETAIN 0;
RETAIN 1 on a delivery means a replay of its retained store because the gateway
subscribed. The live copy was landed when it was published (or queued in the persistent
session while the gateway was away), so a replay is acked and not landed (counted). A
retained message published before the gateway's session first existed is never landed,
like any message published before anyone subscribed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.brokerlog import DROPPED_SYS_TOPIC
from gateway.commit import CommitterClosedError, GroupCommitter
from gateway.config import GatewayConfig
from gateway.landing import Envelope
from gateway.metrics import GatewayMetrics
from gateway.sessions import MqttSession
from gateway.topics import TopicCache

__all__ = ["MqttConsumer"]

log = logging.getLogger(__name__)
_MID_BITS = 16  # a token is mid | qos << 16
_SUBSCRIBE_PACKET_BYTES = 32 * 1024  # topic filters per SUBSCRIBE, well under the packet limit


class MqttConsumer:
    """One session: subscribes to its devices' topics and lands every message before acking."""

    def __init__(
        self,
        config: GatewayConfig,
        session: MqttSession,
        committer: GroupCommitter,
        metrics: GatewayMetrics,
        *,
        password: str | None,
        client_id: str,
        cache_bytes: int,
        ack_wake: threading.Event,
        watch_drops: bool = False,
    ) -> None:
        self._config = config
        self.session = session
        self._metrics = metrics
        self._password = password
        self._lock = threading.Lock()
        self._topics = TopicCache(
            config.patterns, max_topic_bytes=config.mqtt_max_topic_bytes, max_bytes=cache_bytes
        )
        self._topic_entries = self._topics.entries  # cleared in place, never replaced
        self.bad: dict[tuple[str, str], int] = {}  # (identity, reason) -> messages
        # Submitted and completed envelopes: each counter has one writing thread (paho's,
        # the committer's), so no lock is taken per message; pending is their difference.
        self._submitted = 0
        self._completed = 0
        self._accepted = metrics.accepted.labels("mqtt")
        self._landing_failed = metrics.rejected.labels("mqtt", "landing_failed")
        self._retained = metrics.mqtt_retained_skipped
        self._connected_gauge = metrics.mqtt_session_connected.labels(session.username)
        self._inbox = committer.inbox(self._landed)
        self._acks: deque[int] = deque()  # tokens on disk, not yet acked
        self._ack_wake = ack_wake
        self._intake = False  # accept messages into the landing log
        self.running = False  # paho's network thread is (meant to be) running
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._wanted: frozenset[str] | None = (
            frozenset(session.devices) if session.devices is not None else None
        )
        self._synced: frozenset[str] | None = None  # what the broker's session has, we know
        self._pending_subs: set[int] = set()
        self._watch_drops = watch_drops
        self.connects = 0
        self._client = self._new_client(client_id)

    # -- state

    def pending(self) -> int:
        """Envelopes submitted whose callback has not run yet."""
        return self._submitted - self._completed

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def ready(self) -> bool:
        """Connected, and every subscription of this connection acknowledged."""
        return self._connected.is_set() and self._subscribed.is_set()

    # -- subscriptions

    def _filters(self, devices: Iterable[str] | None) -> list[str]:
        if devices is None:
            return [p.subscription for p in self._config.patterns]
        patterns = self._config.patterns
        return [p.pattern.replace("{device}", d) for d in sorted(devices) for p in patterns]

    def _send(self, filters: list[str], *, unsubscribe: bool = False) -> list[int]:
        mids: list[int] = []
        chunk: list[str] = []
        size = 0
        for topic in filters:
            chunk.append(topic)
            size += len(topic) + 5
            if size >= _SUBSCRIBE_PACKET_BYTES:
                mids.append(self._send_chunk(chunk, unsubscribe))
                chunk, size = [], 0
        if chunk:
            mids.append(self._send_chunk(chunk, unsubscribe))
        return mids

    def _send_chunk(self, chunk: list[str], unsubscribe: bool) -> int:
        if unsubscribe:
            _rc, mid = self._client.unsubscribe(chunk)
        else:
            _rc, mid = self._client.subscribe([(t, 1) for t in chunk])
        return int(mid or 0)

    def set_devices(self, devices: Iterable[str] | None) -> None:
        """The session's devices changed (session book reloaded): (un)subscribe the difference."""
        wanted = frozenset(devices) if devices is not None else None
        with self._lock:
            if wanted == self._wanted:
                return
            self._wanted = wanted
            synced = self._synced
            if not self.connected or synced is None or wanted is None:
                return  # the next connect subscribes everything, or the difference
            added, removed = wanted - synced, synced - wanted
            self._synced = wanted
        if added:
            self._send(self._filters(added))
        if removed:
            self._send(self._filters(removed), unsubscribe=True)
        log.info(
            "MQTT session %s: %d device(s) subscribed, %d unsubscribed",
            self.session.username,
            len(added),
            len(removed),
        )

    # -- paho

    def _new_client(self, client_id: str) -> mqtt.Client:
        cfg = self._config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.username_pw_set(self.session.username, self._password)
        client.reconnect_delay_set(
            max(1, round(cfg.mqtt_reconnect_min_s)), max(1, round(cfg.mqtt_reconnect_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if self._watch_drops:
            client.message_callback_add(DROPPED_SYS_TOPIC, self._on_dropped_count)
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused session %s: %s", self.session.username, reason)
            return
        self.connects += 1
        self._subscribed.clear()
        with self._lock:
            wanted = self._wanted
            if flags.session_present and self._synced is not None and wanted is not None:
                added, removed = wanted - self._synced, self._synced - wanted
                filters = self._filters(added)
                stale = self._filters(removed)
            else:  # a new session, or the first connect of this process: subscribe all
                filters, stale = self._filters(wanted), []
            self._synced = wanted
            mids = set(self._send(filters))
            if stale:
                self._send(stale, unsubscribe=True)
            if self._watch_drops:
                client.subscribe(DROPPED_SYS_TOPIC, 0)
            self._pending_subs = mids
        self._connected.set()
        if not mids:
            self._mark_subscribed()
        log.info(
            "MQTT session %s connected to %s:%d (session present: %s), %d topic filter(s) sent",
            self.session.username,
            self._config.mqtt_host,
            self._config.mqtt_port,
            flags.session_present,
            len(filters),
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        with self._lock:
            if failed:  # subscribe everything again at the next connect
                self._synced = None
        if failed:
            log.error(
                "MQTT session %s: broker refused %d subscription(s): %s",
                self.session.username,
                len(failed),
                failed[0],
            )
        with self._lock:
            if mid not in self._pending_subs:
                return
            self._pending_subs.discard(mid)
            done = not self._pending_subs
        if done:
            self._mark_subscribed()

    def _mark_subscribed(self) -> None:
        self._subscribed.set()
        self._connected_gauge.set(1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self._connected_gauge.set(0)
        log.warning("MQTT session %s disconnected: %s", self.session.username, reason)

    def _on_dropped_count(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._metrics.broker_dropped.set(int(msg.payload))
        except ValueError:
            log.warning("unreadable %s: %r", DROPPED_SYS_TOPIC, bytes(msg.payload[:40]))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._acks:
            self._send_acks()  # durable since the last message: ack from this thread
        if not self._intake:
            return  # not acked: the broker sends it again in the next session
        if msg.retain:
            # A replay of the retained store (we subscribed); its live copy was landed.
            self._retained.inc()
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            return
        topic = msg.topic
        entry = self._topic_entries.get(topic)
        if entry is None:
            entry = self._new_topic(topic)
        entry[2] += 1
        envelope = Envelope(time.time_ns() // 1000, "mqtt", entry[0], entry[1], bytes(msg.payload))
        self._submitted += 1  # written by paho's thread only
        try:
            self._inbox.put(envelope, msg.mid | (msg.qos << _MID_BITS))
        except CommitterClosedError:
            self._submitted -= 1

    def _new_topic(self, topic: str) -> list[Any]:
        entry, reason = self._topics.lookup(topic)
        if reason is not None:
            self._metrics.mqtt_bad_topics.labels(reason).inc()
            key = (str(entry[1]), reason)
            self.bad[key] = self.bad.get(key, 0) + 1
        return entry

    def take_counts(self) -> dict[str, int]:
        """Messages per device since the last call (for flood reports)."""
        return self._topics.take_counts()

    def take_bad(self) -> dict[tuple[str, str], int]:
        bad, self.bad = self.bad, {}
        return bad

    def _landed(self, tokens: list[int], error: BaseException | None) -> None:
        """The committer's report for a batch (its thread): on disk, or failed (no ack)."""
        if error is None:
            self._acks.extend(tokens)
            self._accepted.inc(len(tokens))
            self._ack_wake.set()
        else:
            self._landing_failed.inc(len(tokens))
        self._completed += len(tokens)  # written by this thread only

    def send_acks(self) -> None:
        self._send_acks()

    def _send_acks(self) -> None:
        acks = self._acks
        ack = self._client.ack
        mask = (1 << _MID_BITS) - 1
        while True:
            try:
                token = acks.popleft()
            except IndexError:
                return
            qos = token >> _MID_BITS
            if qos:
                ack(token & mask, qos)

    # -- lifecycle

    def connect(self) -> None:
        cfg = self._config
        # Intake first: the broker sends what it queued right after CONNACK, and a message
        # paho's thread sees before intake would be neither landed nor acked (left in
        # flight until the next reconnect).
        with self._lock:
            self._intake = True
        self._client.connect_async(cfg.mqtt_host, cfg.mqtt_port, keepalive=cfg.mqtt_keepalive_s)
        self._client.loop_start()
        self.running = True

    def stop_intake(self) -> None:
        with self._lock:
            self._intake = False

    def disconnect(self) -> None:
        if not self.running:
            return
        self.stop_intake()
        self._send_acks()  # what is on disk is acked before the DISCONNECT goes out
        self._client.disconnect()
        self._client.loop_stop()
        self.running = False
        self._connected.clear()
        self._subscribed.clear()
        self._connected_gauge.set(0)
