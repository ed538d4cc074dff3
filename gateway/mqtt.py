"""The MQTT door: the gateway's persistent sessions, one per tenant and one shared.

Sessions (``gateway/sessions.py``): one ``MqttConsumer`` (``gateway/mqtt_session.py``) per
session, each its own broker account, persistent session and bounded broker queue. A
tenant's session subscribes the tenant's whole topic space, so one device or tenant that
floods while the gateway is away can only overflow its own tenant's queue, and a device
provisioned while the gateway is away is covered at once. ``MqttDoor`` runs them with
one supervisor thread and one acker thread:

- backpressure: while ``paused()`` is true (landing disk full, writer failed, processor
  lag) every session lets in-flight messages be acked, disconnects and stays away; the
  broker queues for each. They reconnect, with exponential backoff, once it clears;
- the session book is reloaded when it changes. Make before break: filters a session no
  longer wants, and whole sessions no longer in the book (*retired*), are let go only
  once every current session holds all its filters (SUBACK). A retired session then
  unsubscribes, stays connected until its queue has drained (nothing in flight, nothing
  received for ``mqtt_drain_quiet_s``), is recorded drained in the state file and leaves;
  ``devices provision`` removes its account after that. Retired sessions do not count
  for ``/readyz``;
- floods (a device over ``mqtt_flood_messages`` per window) and bad topics are audited,
  one record per device and window with the count;
- the broker's log is tailed for drop episodes (metric and audit record per session),
  and the first session reads the broker's count of dropped messages ($SYS).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from audit.log import AuditLog
from gateway.brokerlog import BrokerLogTail
from gateway.commit import GroupCommitter
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqtt_session import MqttConsumer
from gateway.sessions import (
    MqttSession,
    SessionBookError,
    SessionState,
    read_session_book,
    session_filters,
)
from gateway.sparkplug import SparkplugState

__all__ = ["MqttConsumer", "MqttDoor"]

log = logging.getLogger(__name__)
_ACK_GRACE_S = 0.002  # how long acks wait for paho's thread before the acker sends them
_MIN_CACHE_BYTES = 64 * 1024


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
        self._state = SessionState(config.mqtt_session_state)
        # One Sparkplug B state for every session (an edge node's messages reach one)
        self.sparkplug = (
            SparkplugState(
                config.sparkplug_folder,
                rebirth_interval_s=config.sparkplug_rebirth_interval_s,
            )
            if config.sparkplug_enabled
            else None
        )
        sessions = config.mqtt_sessions
        if sessions is None:
            sessions = (MqttSession(config.mqtt_username or config.mqtt_client_id),)
        self._cache_bytes = max(
            _MIN_CACHE_BYTES, config.mqtt_topic_cache_bytes // max(1, len(sessions))
        )
        self._ack_wake = threading.Event()
        self._consumers: dict[str, MqttConsumer] = {}
        self._retired: dict[str, MqttConsumer] = {}
        self._quiet: dict[str, tuple[int, float]] = {}  # retired: (submitted, since)
        # New tenant sessions the shared session stands in for until they hold their filters
        self._covering: set[str] = set()
        self._cover: frozenset[str] = frozenset()
        self._state.revive(s.username for s in sessions)
        for session in sessions:
            self._add(session)
        drained = self._state.drained()
        for session in config.mqtt_retired_sessions:
            if session.username not in drained:
                self._retire(self._add(session, retired=True))
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

    def _legacy(self, session: MqttSession) -> frozenset[str]:
        """Filters an older book may have left in this broker session, when the state file
        does not know what it holds (unsubscribed once safe; unknown filters are harmless)."""
        if self._state.filters(session.username) is not None:
            return frozenset()
        patterns = self._config.patterns
        out = session_filters(MqttSession(session.username, scope="all"), patterns)
        if session.devices:
            out |= session_filters(
                MqttSession(session.username, devices=session.devices, scope="devices"), patterns
            )
        return out

    def _add(self, session: MqttSession, *, retired: bool = False) -> MqttConsumer:
        legacy = self._config.mqtt_sessions is None
        wanted = frozenset() if retired else session_filters(session, self._config.patterns)
        consumer = MqttConsumer(
            self._config,
            session,
            self._committer,
            self._metrics,
            password=self._password,
            client_id=self._config.mqtt_client_id if legacy else session.username,
            cache_bytes=self._cache_bytes,
            ack_wake=self._ack_wake,
            state=self._state,
            wanted=wanted,
            legacy=self._legacy(session),
            watch_drops=not self._consumers and not retired,  # the broker's drop counter
            sparkplug=self.sparkplug,
        )
        (self._retired if retired else self._consumers)[session.username] = consumer
        return consumer

    def _retire(self, consumer: MqttConsumer) -> None:
        """Let go of every filter (once the current sessions hold theirs), then drain."""
        session = consumer.session
        self._consumers.pop(session.username, None)
        self._retired[session.username] = consumer
        held = self._state.filters(session.username) or frozenset()
        consumer.set_wanted((), held | session_filters(session, self._config.patterns))
        consumer.allow_removals(False)
        log.info("MQTT session %s retired: it drains, then leaves", session.username)

    # -- public

    @property
    def consumers(self) -> list[MqttConsumer]:
        """Every session, the retired ones (still draining) last."""
        return [*self._consumers.values(), *self._retired.values()]

    @property
    def retired(self) -> list[MqttConsumer]:
        return list(self._retired.values())

    @property
    def connected(self) -> bool:
        """Every current session connected and holding its filters (what /readyz reports);
        retired sessions do not count."""
        return all(c.ready for c in list(self._consumers.values()))

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connected

    def start(self) -> None:
        self._started = True
        self._supervisor.start()
        self._acker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones reach disk and be acked, disconnect."""
        consumers = self.consumers
        for c in consumers:
            c.stop_intake()
        deadline = time.monotonic() + timeout_s
        while any(c.pending() for c in consumers) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout_s)
        self._ack_wake.set()
        if self._acker.is_alive():
            self._acker.join(timeout_s)
        for c in consumers:
            c.disconnect()
        self._report_floods()

    # -- supervision

    def _supervise(self) -> None:
        cfg = self._config
        next_look = next_window = time.monotonic()
        next_window += cfg.mqtt_flood_window_s
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_look:
                next_look = now + cfg.monitor_interval_s
                self._reload_sessions()
                self._read_broker_log()
            self._apply_pressure()
            ready = self.connected  # after a reload: its new sessions count
            self._metrics.mqtt_connected.set(1 if ready else 0)
            self._make_before_break(ready)
            if now >= next_window:
                next_window = now + cfg.mqtt_flood_window_s
                self._report_floods()
            self._stop.wait(0.2)

    def _make_before_break(self, ready: bool) -> None:
        """Removals only when every current session holds its filters; drain the retired."""
        if self._covering:
            self._update_cover()
        for c in list(self._consumers.values()):
            c.allow_removals(ready)
            c.sync()
        now = time.monotonic()
        for name, c in list(self._retired.items()):
            c.allow_removals(ready)
            c.sync()
            if not c.connected:
                self._quiet.pop(name, None)
                continue
            if c.session_present is False:
                self._drained(c, "the broker held no session for it")
                continue
            if not (ready and c.settled) or c.pending() or c.acks_waiting:
                self._quiet.pop(name, None)
                continue
            seen, since = self._quiet.get(name, (-1, now))
            if seen != c.submitted:
                self._quiet[name] = (c.submitted, now)
            elif now - since >= self._config.mqtt_drain_quiet_s:
                self._drained(c, f"nothing received for {now - since:.1f} s")

    def _drained(self, consumer: MqttConsumer, why: str) -> None:
        name = consumer.session.username
        consumer.disconnect()
        self._state.mark_drained(name)
        self._retired.pop(name, None)
        self._quiet.pop(name, None)
        log.info(
            "MQTT session %s drained (%s): recorded; `energylake devices provision` now "
            "removes its account",
            name,
            why,
        )

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
        """New tenants, removed ones and a new password from a rewritten session book."""
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
            log.warning("the gateway's MQTT password changed: used from the next connect")
            self._password = book.password
            for c in self.consumers:
                c.set_password(book.password)
        self._state.revive(s.username for s in book.sessions)
        patterns = self._config.patterns
        for session in book.sessions:
            consumer = self._consumers.get(session.username) or self._retired.pop(
                session.username, None
            )
            if consumer is None:
                log.info("MQTT session %s added (tenant %s)", session.username, session.tenant)
                self._add(session)  # connected by the next pressure check
                if session.scope == "tenant" and self._state.filters(session.username) is None:
                    self._covering.add(session.username)
            else:
                self._consumers[session.username] = consumer
                consumer.session = session
                extra = self._cover if session.scope in ("shared", "all") else frozenset()
                consumer.set_wanted(session_filters(session, patterns) | extra)
        current = {s.username for s in book.sessions}
        for name in set(self._consumers) - current:
            self._retire(self._consumers[name])
        drained = self._state.drained()
        for session in book.retired:
            name = session.username
            if name not in self._retired and name not in drained and name not in current:
                self._retire(self._add(session, retired=True))
        self._update_cover()

    def _update_cover(self) -> None:
        """The shared session also subscribes a new tenant's filters until the tenant's own
        session holds them: its devices may publish as soon as the broker reloads its
        accounts, before that session has connected (its account comes with the same
        reload)."""
        self._covering = {
            name
            for name in self._covering
            if name in self._consumers and not self._consumers[name].ready
        }
        shared = next(
            (c for c in self._consumers.values() if c.session.scope in ("shared", "all")), None
        )
        if shared is None:
            return
        patterns = self._config.patterns
        cover = frozenset(
            f
            for name in self._covering
            for f in session_filters(self._consumers[name].session, patterns)
        )
        if cover != self._cover:
            self._cover = cover
            shared.set_wanted(session_filters(shared.session, patterns) | cover)

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
