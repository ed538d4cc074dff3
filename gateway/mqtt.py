"""The MQTT door: a persistent QoS 1 session that acks each message only after its fsync.

paho-mqtt 2.x with a stable client id, ``clean_session=False`` and ``manual_ack=True``:
each message is landed through the group commit, and its PUBACK is sent from the commit
callback. A message that is not on disk is never acked, so the broker keeps it in the
session and sends it again after a reconnect (the pipeline deduplicates on device_id and
seq). With manual acks the broker stops delivering at its ``max_inflight_messages``, which
bounds what the gateway holds in memory.

Acks are sent from paho's own network thread: the committer hands each batch's message
ids back through an ``Inbox`` callback, and the next ``on_message`` sends them (so no
other thread wakes paho's for every ack). When no message comes to carry them (the
broker waits for acks, or the stream is idle), a small acker thread sends what is left
after ``_ACK_GRACE_S``.

Backpressure: while ``paused()`` is true (landing disk full, writer failed, processor lag)
the consumer disconnects and stays away; the broker queues for the persistent session.
It reconnects, with exponential backoff, once the condition clears. Paho's own network
thread (``loop_start``) does the I/O, so acks from the committer thread are queued safely.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.commit import CommitterClosedError, GroupCommitter
from gateway.config import GatewayConfig
from gateway.landing import Envelope
from gateway.metrics import GatewayMetrics

__all__ = ["MqttConsumer"]

log = logging.getLogger(__name__)
_IDENTITY_CACHE = 100_000  # topics remembered (a fleet's worth); cleared when full
_ACK_GRACE_S = 0.002  # how long acks wait for paho's thread before the acker sends them
_MID_BITS = 16  # a token is mid | qos << 16


class MqttConsumer:
    """Subscribes to the configured patterns and lands every message before acking it."""

    def __init__(
        self,
        config: GatewayConfig,
        committer: GroupCommitter,
        metrics: GatewayMetrics,
        *,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self._config = config
        self._committer = committer
        self._metrics = metrics
        self._paused = paused
        self._lock = threading.Lock()
        self._identities: dict[str, str] = {}
        # Submitted and completed envelopes: each counter has one writing thread (paho's,
        # the committer's), so no lock is taken per message; pending is their difference.
        self._submitted = 0
        self._completed = 0
        self._accepted = metrics.accepted.labels("mqtt")
        self._landing_failed = metrics.rejected.labels("mqtt", "landing_failed")
        self._inbox = committer.inbox(self._landed)
        self._acks: deque[int] = deque()  # tokens on disk, not yet acked
        self._ack_wake = threading.Event()
        self._acker = threading.Thread(target=self._ack_loop, name="mqtt-acker", daemon=True)
        self._intake = False  # accept messages into the landing log
        self._running = False  # paho's network thread is (meant to be) running
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.connects = 0
        self._client = self._new_client()
        self._supervisor = threading.Thread(target=self._supervise, name="mqtt-supervisor")
        self._supervisor.daemon = True

    # -- public

    def _pending(self) -> int:
        """Envelopes submitted whose callback has not run yet."""
        return self._submitted - self._completed

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._supervisor.start()
        self._acker.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones reach disk and be acked, disconnect."""
        with self._lock:
            self._intake = False
        deadline = time.monotonic() + timeout
        while self._pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._supervisor.join(timeout)
        self._ack_wake.set()
        if self._acker.is_alive():
            self._acker.join(timeout)
        self._disconnect()

    # -- paho

    def _new_client(self) -> mqtt.Client:
        cfg = self._config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.mqtt_client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if cfg.mqtt_username is not None:
            client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
        client.reconnect_delay_set(
            max(1, round(cfg.mqtt_reconnect_min_s)), max(1, round(cfg.mqtt_reconnect_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
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
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self.connects += 1
        topics = [(p.subscription, 1) for p in self._config.patterns]
        client.subscribe(topics)
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        log.info(
            "MQTT connected to %s:%d (session present: %s), subscribed to %s",
            self._config.mqtt_host,
            self._config.mqtt_port,
            flags.session_present,
            ", ".join(t for t, _ in topics),
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        self._connected.clear()
        self._metrics.mqtt_connected.set(0)
        log.warning("MQTT disconnected: %s", reason)

    def _identity(self, topic: str) -> str:
        # A device publishes on one or two topics: remember the answer (bounded).
        known = self._identities.get(topic)
        if known is not None:
            return known
        found = ""
        for pattern in self._config.patterns:
            device = pattern.identity(topic)
            if device is not None:
                found = device
                break
        if len(self._identities) >= _IDENTITY_CACHE:
            self._identities.clear()
        self._identities[topic] = found
        return found

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._acks:
            self._send_acks()  # durable since the last message: ack from this thread
        if not self._intake:
            return  # not acked: the broker sends it again in the next session
        topic = msg.topic
        envelope = Envelope(
            time.time_ns() // 1000, "mqtt", topic, self._identity(topic), bytes(msg.payload)
        )
        self._submitted += 1  # written by paho's thread only
        try:
            self._inbox.put(envelope, msg.mid | (msg.qos << _MID_BITS))
        except CommitterClosedError:
            self._submitted -= 1

    def _landed(self, tokens: list[int], error: BaseException | None) -> None:
        """The committer's report for a batch (its thread): on disk, or failed (no ack)."""
        if error is None:
            self._acks.extend(tokens)
            self._accepted.inc(len(tokens))
            self._ack_wake.set()
        else:
            self._landing_failed.inc(len(tokens))
        self._completed += len(tokens)  # written by this thread only

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

    def _ack_loop(self) -> None:
        """Send the acks paho's thread has not taken within the grace period."""
        while True:
            self._ack_wake.wait()
            self._ack_wake.clear()
            stopping = self._stop.is_set()
            if not stopping:
                time.sleep(_ACK_GRACE_S)
            self._send_acks()
            if stopping:
                return

    # -- lifecycle

    def _connect(self) -> None:
        cfg = self._config
        self._client.connect_async(cfg.mqtt_host, cfg.mqtt_port, keepalive=cfg.mqtt_keepalive_s)
        self._client.loop_start()
        with self._lock:
            self._intake = True
        self._running = True

    def _disconnect(self) -> None:
        if not self._running:
            return
        with self._lock:
            self._intake = False
        self._send_acks()  # what is on disk is acked before the DISCONNECT goes out
        self._client.disconnect()
        self._client.loop_stop()
        self._running = False
        self._connected.clear()
        self._metrics.mqtt_connected.set(0)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            paused = self._paused()
            if paused and self._running:
                log.warning("landing log under pressure: MQTT consumer pauses (disconnects)")
                # let what is already submitted be acked before leaving
                deadline = time.monotonic() + 2.0
                while self._pending() and time.monotonic() < deadline:
                    time.sleep(0.01)
                self._disconnect()
            elif not paused and not self._running:
                self._connect()
            self._stop.wait(0.2)
