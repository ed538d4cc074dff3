"""One MQTT session of the gateway: a persistent QoS 1 session acking after fsync.

paho-mqtt 2.x, ``clean_session=False``, ``manual_ack=True``: each message is landed
through the group commit and its PUBACK is sent only once it is on disk. A message that
is not on disk is never acked, so the broker keeps it in the session and sends it again
after a reconnect (the pipeline deduplicates on device_id and seq). With manual acks the
broker stops delivering at its ``max_inflight_messages``, which bounds what the gateway
holds in memory.

Subscriptions (``gateway/sessions.py`` says which filters a session wants) are sent only
when the broker's session lacks them: the filters a broker session holds are recorded
in the gateway's state file on SUBACK and UNSUBACK (``SessionState``), so a reconnect
to a session the broker kept sends no SUBSCRIBE (and causes no replay of retained
messages); a session the broker lost (session present 0) is subscribed afresh. A filter
counts as held only once its SUBACK grants it; a refused one leaves the session not
ready (``/readyz``), logged, and is tried again at the next connect (Mosquitto 2.0.11's
ACL grants every filter and checks each delivery; a refusal comes from a plugin or
another broker). Filters the session
no longer wants are unsubscribed only when the door allows it (``allow_removals``: every
current session holds its filters), so a change of the book never opens a window.

Acks are sent from paho's own network thread: the committer hands each batch's message
ids back through an ``Inbox`` callback, and the next ``on_message`` of the session sends
them. When no message comes to carry them, the door's acker sends what is left after a
short grace period. Each ack carries the connection it belongs to (a generation bumped
at every connect and disconnect): an ack left from an earlier connection is dropped,
never sent on a new one, where its message id may name another message; the broker
sends that message again and the pipeline deduplicates it.

Retained messages are landed whatever their RETAIN flag. Under MQTT 3.1.1 a broker
forwards a live publication with RETAIN 0 and sends its retained store (RETAIN 1) after a
SUBSCRIBE; since the gateway subscribes only a new broker session or a changed filter, a
retained publication comes once per subscription, not once per reconnect. A retained
message the gateway never received live (published before the filter existed) is landed
from that replay; one it did receive live is landed again at most once per new
subscription (and deduplicated by the pipeline).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.brokerlog import DROPPED_SYS_TOPIC
from gateway.commit import CommitterClosedError, GroupCommitter
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.sessions import MqttSession, SessionState
from gateway.sparkplug import SparkplugState, SparkplugTopic, parse_topic
from gateway.topics import TopicCache
from landing.format import Envelope

__all__ = ["MqttConsumer"]

log = logging.getLogger(__name__)
_MID_BITS = 16  # a token is mid | qos << 16 | generation << 18
_GEN_SHIFT = 18
_FAST_RETRIES = 30  # refused connects of a new account retried every 1-2 s, then backoff
_SUBSCRIBE_PACKET_BYTES = 32 * 1024  # topic filters per SUBSCRIBE, well under the packet limit


class MqttConsumer:
    """One session: holds its topic filters at the broker and lands every message before
    acking it."""

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
        state: SessionState,
        wanted: Iterable[str],
        legacy: Iterable[str] = (),
        watch_drops: bool = False,
        sparkplug: SparkplugState | None = None,
    ) -> None:
        self._config = config
        self.session = session
        self._metrics = metrics
        self._password = password
        self._state = state
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
        self._retained = metrics.mqtt_retained
        self._connected_gauge = metrics.mqtt_session_connected.labels(session.username)
        self._inbox = committer.inbox(self._landed)
        self._acks: deque[int] = deque()  # tokens on disk, not yet acked
        self._ack_lock = threading.Lock()  # the acker thread's sends vs a new connection
        self._gen_bits = 0  # this connection's generation << _GEN_SHIFT
        self._ack_wake = ack_wake
        self._intake = False  # accept messages into the landing log
        self.running = False  # paho's network thread is (meant to be) running
        self._connected = threading.Event()
        # Subscriptions: what is wanted, what the broker's session holds (None: not known
        # yet), what an older book may have left there, what is in flight, what was refused.
        self._wanted = frozenset(wanted)
        self._held: frozenset[str] | None = state.filters(session.username)
        self._legacy = frozenset(legacy) - self._wanted
        self._in_flight: dict[int, tuple[bool, tuple[str, ...]]] = {}  # mid -> (unsub, filters)
        self._refused: set[str] = set()
        self._removals = False
        self._watch_drops = watch_drops
        self._sparkplug = sparkplug
        self.connects = 0
        self._refusals = 0
        self.session_present: bool | None = None  # of the last connect
        self._client = self._new_client(client_id)

    # -- state

    def pending(self) -> int:
        """Envelopes submitted whose callback has not run yet."""
        return self._submitted - self._completed

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def acks_waiting(self) -> int:
        return len(self._acks)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def ready(self) -> bool:
        """Connected, and the broker's session holds every filter this session wants."""
        with self._lock:
            return self._connected.is_set() and self._wanted <= (self._held or frozenset())

    @property
    def settled(self) -> bool:
        """Ready, and nothing the session no longer wants is left at the broker."""
        with self._lock:
            held = self._held or frozenset()
            return (
                self._connected.is_set()
                and held == self._wanted
                and not self._legacy
                and not self._in_flight
            )

    def set_password(self, password: str | None) -> None:
        """Used from the next connect (the session book's password changed)."""
        self._password = password
        self._client.username_pw_set(self.session.username, password)

    # -- subscriptions

    def set_wanted(self, wanted: Iterable[str], legacy: Iterable[str] = ()) -> None:
        """The filters this session should hold (session book reloaded)."""
        with self._lock:
            self._wanted = frozenset(wanted)
            self._legacy = (self._legacy | frozenset(legacy)) - self._wanted
            self._removals = False  # until the door has seen every session hold its filters
        self.sync()

    def allow_removals(self, allowed: bool) -> None:
        """Whether filters no longer wanted may be unsubscribed (make before break)."""
        with self._lock:
            changed = allowed != self._removals
            self._removals = allowed
        if changed and allowed:
            self.sync()

    def sync(self) -> None:
        """Send the SUBSCRIBE and UNSUBSCRIBE packets that bring the broker's session to
        what is wanted, except what is already in flight."""
        with self._lock:
            if not self._connected.is_set():
                return
            held = self._held or frozenset()
            busy = {f for _unsub, filters in self._in_flight.values() for f in filters}
            add = sorted(self._wanted - held - busy - self._refused)
            drop: list[str] = []
            if self._removals:
                drop = sorted(((held - self._wanted) | self._legacy) - busy)
            for chunk in _chunks(add):
                self._send(chunk, unsubscribe=False)
            for chunk in _chunks(drop):
                self._send(chunk, unsubscribe=True)
        if add or drop:
            log.info(
                "MQTT session %s: %d filter(s) subscribed, %d unsubscribed",
                self.session.username,
                len(add),
                len(drop),
            )

    def _send(self, chunk: tuple[str, ...], *, unsubscribe: bool) -> None:
        """One (UN)SUBSCRIBE, remembered by its message id until its ack (lock held)."""
        if unsubscribe:
            rc, mid = self._client.unsubscribe(list(chunk))
        else:
            rc, mid = self._client.subscribe([(t, 1) for t in chunk])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            log.warning(
                "MQTT session %s: %s not sent (%s); sent again at the next connect",
                self.session.username,
                "UNSUBSCRIBE" if unsubscribe else "SUBSCRIBE",
                rc,
            )
            return
        self._in_flight[int(mid)] = (unsubscribe, chunk)

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
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        if self._watch_drops:
            client.message_callback_add(DROPPED_SYS_TOPIC, self._on_dropped_count)
        return client

    def _new_generation(self) -> None:
        with self._ack_lock:
            self._gen_bits = (((self._gen_bits >> _GEN_SHIFT) + 1) & 0xFFFF) << _GEN_SHIFT

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            self._refusals += 1
            log.error("MQTT broker refused session %s: %s", self.session.username, reason)
            if not self.connects:  # a new account the broker may not have loaded yet:
                fast = self._refusals < _FAST_RETRIES  # retry soon, for a while
                cfg = self._config
                client.reconnect_delay_set(
                    1, 2 if fast else max(1, round(cfg.mqtt_reconnect_max_s))
                )
            return
        self._new_generation()
        self.connects += 1
        if self.connects == 1:
            cfg = self._config
            client.reconnect_delay_set(
                max(1, round(cfg.mqtt_reconnect_min_s)), max(1, round(cfg.mqtt_reconnect_max_s))
            )
        present = bool(flags.session_present)
        self.session_present = present
        with self._lock:
            self._in_flight.clear()  # acks outstanding at a disconnect never come
            self._refused.clear()
            if not present:  # the broker holds no filter (and nothing queued)
                self._held = frozenset()
                self._legacy = frozenset()
            elif self._held is None:
                self._held = frozenset()  # not known: subscribe what is wanted again
        if not present:
            self._state.update(self.session.username, reset=True)
        if self._watch_drops:
            client.subscribe(DROPPED_SYS_TOPIC, 0)
        self._connected.set()
        self.sync()
        log.info(
            "MQTT session %s connected to %s:%d (session present: %s)",
            self.session.username,
            self._config.mqtt_host,
            self._config.mqtt_port,
            present,
        )
        if self.ready:
            self._connected_gauge.set(1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        with self._lock:
            sent = self._in_flight.pop(mid, None)
        if sent is None:
            return  # the $SYS subscription, or one of an earlier connection
        _unsub, filters = sent
        granted = [f for f, r in zip(filters, reasons, strict=False) if not r.is_failure]
        refused = [f for f in filters if f not in set(granted)]
        # recorded first: provisioning reads the file once the session counts as ready
        self._state.update(self.session.username, added=granted)
        with self._lock:
            self._held = (self._held or frozenset()) | frozenset(granted)
            self._refused |= set(refused)
        if refused:
            log.error(
                "MQTT session %s: the broker refused %d subscription(s), e.g. %s: check the "
                "gateway accounts' read lines in the ACL; tried again at the next connect",
                self.session.username,
                len(refused),
                refused[0],
            )
        if self.ready:
            self._connected_gauge.set(1)

    def _on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        with self._lock:
            sent = self._in_flight.pop(mid, None)
            if sent is None:
                return
            filters = frozenset(sent[1])
            self._held = (self._held or frozenset()) - filters
            self._legacy -= filters
        self._state.update(self.session.username, removed=filters)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        self._new_generation()
        self._connected.clear()
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
        if msg.retain:  # from the retained store: once per new subscription, landed
            self._retained.inc()
        topic = msg.topic
        entry = self._topic_entries.get(topic)
        if entry is None:
            entry = self._new_topic(topic)
        entry[2] += 1
        payload = bytes(msg.payload)
        if entry[3] is not None:  # a Sparkplug B topic: decoded here, in delivery order
            payload = self._sparkplug_message(entry[3], topic, payload)
        envelope = Envelope(time.time_ns() // 1000, "mqtt", entry[0], entry[1], payload)
        self._submitted += 1  # written by paho's thread only
        try:
            self._inbox.put(envelope, msg.mid | (msg.qos << _MID_BITS) | self._gen_bits)
        except CommitterClosedError:
            self._submitted -= 1

    def _new_topic(self, topic: str) -> list[Any]:
        entry, reason = self._topics.lookup(topic)
        if reason is not None:
            self._metrics.mqtt_bad_topics.labels(reason).inc()
            key = (str(entry[1]), reason)
            self.bad[key] = self.bad.get(key, 0) + 1
        if len(entry) == 3:  # [landed topic, identity, count, Sparkplug topic or None]
            sparkplug = self._sparkplug is not None and reason is None
            entry.append(parse_topic(topic) if sparkplug else None)
        return entry

    def _sparkplug_message(self, parsed: SparkplugTopic, topic: str, raw: bytes) -> bytes:
        """The JSON document landed for a Sparkplug B message (docs/SPARKPLUG.md); the
        rebirth request it calls for is published from here (paho's thread, QoS 0)."""
        assert self._sparkplug is not None
        try:
            out = self._sparkplug.translate(parsed, topic, raw)
        except Exception:  # a decoder bug must not lose the message: landed as received
            log.exception("Sparkplug B message on %s not decoded: landed as received", topic)
            return raw
        metrics = self._metrics
        metrics.sparkplug_messages.labels(parsed.type, out.problem or "none").inc()
        if out.duplicate:
            metrics.sparkplug_redeliveries.inc()
        if out.rebirth is not None:
            ncmd_topic, ncmd = out.rebirth
            info = self._client.publish(ncmd_topic, ncmd, qos=0)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                metrics.sparkplug_rebirths.labels(out.problem or "unknown").inc()
                log.info("Sparkplug B: rebirth requested from %s (%s)", ncmd_topic, out.problem)
            else:
                log.warning("Sparkplug B: rebirth request on %s not sent (%s)", ncmd_topic, info.rc)
        return out.payload

    def take_counts(self) -> dict[str, int]:
        """Messages per device since the last call (for flood reports)."""
        return self._topics.take_counts()

    def take_bad(self) -> dict[tuple[str, str], int]:
        bad, self.bad = self.bad, {}
        return bad

    def _landed(self, tokens: list[int], error: BaseException | None) -> None:
        """The committer's report for a batch (its thread): on disk, or failed (no ack)."""
        sparkplug = self._sparkplug
        if error is None and sparkplug is not None and sparkplug.dirty:
            # The Sparkplug state these messages changed is on disk before they are acked
            # (a redelivery then lands with the same boot and seq: gateway/sparkplug/state.py)
            try:
                self._metrics.sparkplug_state_writes.inc(sparkplug.persist())
            except OSError as exc:
                log.error(
                    "Sparkplug B state not written (%s): %d message(s) not acked", exc, len(tokens)
                )
                error = exc
        if error is None:
            self._acks.extend(tokens)
            self._accepted.inc(len(tokens))
            self._ack_wake.set()
        else:
            self._landing_failed.inc(len(tokens))
        self._completed += len(tokens)  # written by this thread only

    def send_acks(self) -> None:
        """From another thread than paho's: not interleaved with a new connection."""
        with self._ack_lock:
            self._send_acks()

    def _send_acks(self) -> None:
        acks = self._acks
        ack = self._client.ack
        gen = self._gen_bits
        end = gen + (1 << _GEN_SHIFT)  # tokens of this connection: gen <= token < end
        while True:
            try:
                token = acks.popleft()
            except IndexError:
                return
            if not gen <= token < end:
                continue  # landed, but its connection is gone: the broker sends it again
            qos = (token - gen) >> _MID_BITS
            if qos:
                ack(token & 0xFFFF, qos)

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
        self.send_acks()  # what is on disk is acked before the DISCONNECT goes out
        self._client.disconnect()
        self._client.loop_stop()
        self.running = False
        self._connected.clear()
        self._connected_gauge.set(0)


def _chunks(filters: list[str]) -> Iterable[tuple[str, ...]]:
    """Filters in groups that fit one packet each."""
    chunk: list[str] = []
    size = 0
    for topic in filters:
        chunk.append(topic)
        size += len(topic) + 5
        if size >= _SUBSCRIBE_PACKET_BYTES:
            yield tuple(chunk)
            chunk, size = [], 0
    if chunk:
        yield tuple(chunk)
