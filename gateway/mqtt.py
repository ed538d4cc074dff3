"""The MQTT door: persistent QoS 1 sessions, one per tenant, each message acked after fsync.

paho-mqtt 2.x, ``clean_session=False``, ``manual_ack=True``: each message is landed
through the group commit and its PUBACK is sent only once it is on disk. A message that
is not on disk is never acked, so the broker keeps it in the session and sends it again
after a reconnect (the pipeline deduplicates on device_id and seq). With manual acks the
broker stops delivering at its ``max_inflight_messages``, which bounds what the gateway
holds in memory.

Sessions (``gateway/sessions.py``): one ``MqttConsumer`` per session, each its own broker
account, persistent session and bounded broker queue, subscribed to its devices' topics by
the device segment. ``MqttDoor`` runs them: one supervisor thread (backpressure, reloads
of the session book, flood and bad-topic audits, the broker log) and one acker thread.

Acks are sent from paho's own network thread: the committer hands each batch's message
ids back through an ``Inbox`` callback, and the next ``on_message`` of that session sends
them. When no message comes to carry them, the acker sends what is left after
``_ACK_GRACE_S``.

Retained messages: under MQTT 3.1.1 a broker forwards a live publication with RETAIN 0;
RETAIN 1 on a delivery means a replay of its retained store because the gateway
subscribed. The live copy was landed when it was published (or queued in the persistent
session while the gateway was away), so a replay is acked and not landed (counted).

Backpressure: while ``paused()`` is true (landing disk full, writer failed, processor lag)
every session disconnects and stays away; the broker queues for each. They reconnect,
with exponential backoff, once the condition clears.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.audit import AuditLog
from gateway.brokerlog import DROPPED_SYS_TOPIC, BrokerLogTail
from gateway.commit import CommitterClosedError, GroupCommitter
from gateway.config import GatewayConfig
from gateway.landing import Envelope
from gateway.metrics import GatewayMetrics
from gateway.sessions import MqttSession, SessionBookError, read_session_book
from gateway.topics import TopicCache

__all__ = ["MqttConsumer", "MqttDoor"]

log = logging.getLogger(__name__)
_ACK_GRACE_S = 0.002  # how long acks wait for paho's thread before the acker sends them
_MID_BITS = 16  # a token is mid | qos << 16
_SUBSCRIBE_PACKET_BYTES = 32 * 1024  # topic filters per SUBSCRIBE, well under the packet limit
_MIN_CACHE_BYTES = 64 * 1024


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

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ready

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


class MqttDoor:
    """Every MQTT session of the gateway, with one supervisor and one acker thread."""

    def __init__(
        self,
        config: GatewayConfig,
        committer: GroupCommitter,
        metrics: GatewayMetrics,
        audit: AuditLog | None = None,
        *,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self._config = config
        self._committer = committer
        self._metrics = metrics
        self._audit = audit
        self._paused = paused
        self._password = config.mqtt_password
        sessions = config.mqtt_sessions
        if sessions is None:
            sessions = (MqttSession(config.mqtt_username or config.mqtt_client_id),)
        self._cache_bytes = max(
            _MIN_CACHE_BYTES, config.mqtt_topic_cache_bytes // max(1, len(sessions))
        )
        self._ack_wake = threading.Event()
        self._consumers: dict[str, MqttConsumer] = {}
        for session in sessions:
            self._add(session)
        self._book_stamp = self._stamp()
        self._tail = (
            BrokerLogTail(config.mqtt_broker_log, config.mqtt_broker_log_state)
            if config.mqtt_broker_log is not None
            else None
        )
        self._started = False
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="mqtt-supervisor")
        self._supervisor.daemon = True
        self._acker = threading.Thread(target=self._ack_loop, name="mqtt-acker", daemon=True)

    def _add(self, session: MqttSession) -> MqttConsumer:
        legacy = self._config.mqtt_sessions is None
        consumer = MqttConsumer(
            self._config,
            session,
            self._committer,
            self._metrics,
            password=self._password,
            client_id=self._config.mqtt_client_id if legacy else session.username,
            cache_bytes=self._cache_bytes,
            ack_wake=self._ack_wake,
            watch_drops=not self._consumers,  # the first session reads the broker's counter
        )
        self._consumers[session.username] = consumer
        return consumer

    # -- public

    @property
    def consumers(self) -> list[MqttConsumer]:
        return list(self._consumers.values())

    @property
    def connected(self) -> bool:
        """Every session connected and subscribed (what /readyz reports)."""
        return all(c.ready for c in self.consumers)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connected

    def start(self) -> None:
        self._started = True
        self._supervisor.start()
        self._acker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones reach disk and be acked, disconnect."""
        consumers = self.consumers
        for c in consumers:
            c.stop_intake()
        deadline = time.monotonic() + timeout
        while any(c.pending() for c in consumers) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout)
        self._ack_wake.set()
        if self._acker.is_alive():
            self._acker.join(timeout)
        for c in consumers:
            c.disconnect()
        self._report_floods()

    # -- supervision

    def _supervise(self) -> None:
        cfg = self._config
        next_look = next_window = time.monotonic()
        next_window += cfg.mqtt_flood_window_s
        while not self._stop.is_set():
            self._apply_pressure()
            self._metrics.mqtt_connected.set(1 if self.connected else 0)
            now = time.monotonic()
            if now >= next_look:
                next_look = now + cfg.monitor_interval_s
                self._reload_sessions()
                self._read_broker_log()
            if now >= next_window:
                next_window = now + cfg.mqtt_flood_window_s
                self._report_floods()
            self._stop.wait(0.2)

    def _apply_pressure(self) -> None:
        paused = self._paused()
        running = [c for c in self.consumers if c.running]
        if paused and running:
            log.warning("landing log under pressure: MQTT sessions pause (disconnect)")
            # let what is already submitted be acked before leaving
            deadline = time.monotonic() + 2.0
            while any(c.pending() for c in running) and time.monotonic() < deadline:
                time.sleep(0.01)
            for c in running:
                c.disconnect()
        elif not paused:
            for c in self.consumers:
                if not c.running:
                    c.connect()

    def _stamp(self) -> tuple[int, int, int] | None:
        path = self._config.mqtt_session_book
        if path is None or self._config.mqtt_sessions is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload_sessions(self) -> None:
        """New devices and tenants from a rewritten session book, without a restart."""
        stamp = self._stamp()
        if stamp is None or stamp == self._book_stamp:
            return
        self._book_stamp = stamp
        assert self._config.mqtt_session_book is not None
        try:
            book = read_session_book(self._config.mqtt_session_book)
        except SessionBookError as exc:
            log.error("MQTT session book not reloaded (the previous one stays): %s", exc)
            return
        if book.password != self._password:
            log.warning("the gateway's MQTT password changed: restart the gateway to use it")
        for session in book.sessions:
            consumer = self._consumers.get(session.username)
            if consumer is None:
                log.info("MQTT session %s added (tenant %s)", session.username, session.tenant)
                self._add(session)  # connected by the next pressure check
            else:
                consumer.set_devices(session.devices)
        gone = set(self._consumers) - {s.username for s in book.sessions}
        if gone:
            log.warning(
                "MQTT session(s) %s no longer provisioned: kept until the gateway restarts "
                "(their broker queues may still hold messages)",
                ", ".join(sorted(gone)),
            )

    def _read_broker_log(self) -> None:
        tail = self._tail
        if tail is None:
            return
        episodes = tail.poll()
        self._metrics.broker_log_readable.set(1 if tail.readable else 0)
        for episode in episodes:
            consumer = self._consumers.get(episode.client)
            label = episode.client if consumer is not None else "other"
            tenant = consumer.session.tenant if consumer is not None else None
            self._metrics.broker_drop_episodes.labels(label).inc()
            log.error(
                "the broker is dropping messages queued for %s (tenant %s): its queue is full",
                episode.client,
                tenant,
            )
            if self._audit is not None:
                at = episode.at.isoformat() if episode.at else "?"
                self._audit.record(
                    "mqtt_broker_dropping",
                    client_id=tenant,
                    detail=f"broker dropped messages queued for MQTT session {label} "
                    f"from {at} (its queue was full); they are lost: seq gaps show which",
                )

    def _report_floods(self) -> None:
        """Audit devices over the flood budget and bad topics, one record per device and
        window (counted, never one per message)."""
        budget = self._config.mqtt_flood_messages
        window = self._config.mqtt_flood_window_s
        for consumer in self.consumers:
            tenant = consumer.session.tenant
            for device, count in consumer.take_counts().items():
                if count <= budget:
                    continue
                self._metrics.mqtt_floods.inc()
                log.warning("MQTT device %s sent %d messages in %g s", device, count, window)
                if self._audit is not None:
                    self._audit.record(
                        "mqtt_device_flood",
                        device_id=device or None,
                        client_id=tenant,
                        detail=f"{count} messages in {window:g} s (budget {budget}); "
                        f"landed, and able to fill its session's broker queue",
                    )
            for (device, reason), count in consumer.take_bad().items():
                if self._audit is not None:
                    self._audit.record(
                        "mqtt_bad_topic",
                        device_id=device or None,
                        client_id=tenant,
                        detail=f"{count} message(s) on a topic refused as {reason}; landed "
                        "under a bad-topic marker for the pipeline to quarantine",
                    )

    def _ack_loop(self) -> None:
        """Send the acks paho's threads have not taken within the grace period."""
        while True:
            self._ack_wake.wait()
            self._ack_wake.clear()
            stopping = self._stop.is_set()
            if not stopping:
                time.sleep(_ACK_GRACE_S)
            for consumer in self.consumers:
                consumer.send_acks()
            if stopping:
                return
