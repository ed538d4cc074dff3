"""The gateway's MQTT sessions against a real Mosquitto: no window in which the broker
acknowledges a message that no gateway session is subscribed to.

A tenant's session subscribes the tenant's whole topic space and one shared session the
tenant-less topics, so a device provisioned while the gateway is away is covered the
moment the broker lets it in; a change of the session book (an upgrade, a tenant removed)
subscribes the new sessions before the old ones let go, and a retired session drains
before its account is removed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pyarrow.compute as pc
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import DeviceAccount, Mosquitto, fleet_registry, start_mosquitto
from gateway.commit import GroupCommitter
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqtt_session import MqttConsumer
from gateway.provisioning import (
    ACL_FILE,
    PASSWORD_FILE,
    BrokerOptions,
    mosquitto_hash,
    provision,
    read_password_file,
)
from gateway.sessions import SESSION_STATE_FILE, MqttSession, SessionState, session_filters
from landing.writer import LandingWriter
from simulator.config import SimConfig
from tests.gateway.conftest import landed, wait_for
from tests.gateway.test_mqtt_hardening import (
    _close,
    _device,
    _device_when_allowed,
    _gateway,
    _payload,
    _publish_all,
    _seqs,
)

pytestmark = pytest.mark.integration

TWO_TENANTS = SimConfig(clients=2, branches=1, days=1, seed=7)
QUEUE = 2000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = start_mosquitto(
        tmp_path / "data" / "gateway", sim_config=TWO_TENANTS, max_queued_messages=QUEUE
    )
    try:
        yield broker
    finally:
        broker.close()


def _options(broker: Mosquitto) -> BrokerOptions:
    return BrokerOptions(
        port=broker.port,
        bind=broker.host,
        persistence_dir=broker.data_dir / "mosquitto-data",
        pid_file=broker.data_dir / "mosquitto.pid",
        max_queued_messages=QUEUE,
    )


@pytest.mark.slow
def test_a_device_provisioned_while_the_gateway_is_stopped_loses_nothing(
    broker: Mosquitto,
) -> None:
    fleet, registry = fleet_registry(TWO_TENANTS)
    meter = next(d for d in broker.devices.values() if d.kind == "meter")
    early = registry.filter(pc.not_equal(registry["device_id"], meter.device_id))
    kept = set(early["device_id"].to_pylist())
    provision(
        early,
        broker.folder,
        credentials={d: t for d, t in fleet.tokens.items() if d in kept},
        broker=_options(broker),
    )
    broker.reload()
    gw = _gateway(broker)  # the gateway's sessions exist at the broker ...
    assert gw.terminate() == 0  # ... and the gateway is away (stopped, paused, upgrading)
    provision(registry, broker.folder, credentials=fleet.tokens, broker=_options(broker))
    broker.reload()
    client = _device(broker, meter)
    try:
        live = [(meter.topic, _payload(meter.device_id, s)) for s in range(1, 11)]
        _publish_all(client, live)  # QoS 1, every one acknowledged by the broker
        _publish_all(client, [(meter.topic, _payload(meter.device_id, 11))], retain=True)
        tasmota = [(meter.tasmota_topic, _payload(meter.device_id, s)) for s in range(12, 17)]
        _publish_all(client, tasmota)
        gw = _gateway(broker)
        want = set(range(1, 17))
        assert wait_for(lambda: set(_seqs(landed(gw.landing), meter.device_id)) == want, 10), (
            f"acknowledged by the broker and never landed: "
            f"{sorted(want - set(_seqs(landed(gw.landing), meter.device_id)))}"
        )
        assert gw.terminate() == 0
    finally:
        _close(client)
        gw.kill()


@pytest.mark.slow
def test_a_retained_publication_the_gateway_never_received_live_lands_once(
    broker: Mosquitto,
) -> None:
    """Published retained before any gateway session subscribed: the broker's replay at
    the first SUBSCRIBE (RETAIN 1) is its only copy. Restarts subscribe nothing, so it is
    not replayed again."""
    meter = next(d for d in broker.devices.values() if d.kind == "meter")
    client = _device(broker, meter)
    gw = None
    try:
        _publish_all(client, [(meter.topic, _payload(meter.device_id, 1))], retain=True)
        gw = _gateway(broker)
        assert wait_for(lambda: 1 in _seqs(landed(gw.landing), meter.device_id), 10), (
            "the retained publication never landed"
        )
        for _restart in range(2):
            assert gw.terminate() == 0
            gw = _gateway(broker)
        time.sleep(0.5)  # a replay, if any, would be in by now
        assert _seqs(landed(gw.landing), meter.device_id) == Counter({1: 1})
        assert gw.terminate() == 0
    finally:
        _close(client)
        if gw is not None:
            gw.kill()


class _Publisher:
    """A device publishing at QoS 1 every 20 ms; remembers every seq the broker acked."""

    def __init__(self, broker: Mosquitto, device: DeviceAccount) -> None:
        self.device = device
        self.acked: list[int] = []
        self._client = _device(broker, device)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.02):
            seq += 1
            info = self._client.publish(
                self.device.topic, _payload(self.device.device_id, seq), qos=1
            )
            info.wait_for_publish(10)
            if info.is_published():
                self.acked.append(seq)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        _close(self._client)


def _old_book(broker: Mosquitto, version: int) -> list[str]:
    """Replace the session book by one of an older version (1: one account for all; 2:
    two shards per tenant, subscribed per device), with its accounts at the broker."""
    password = broker.sessions.password
    tenants: dict[str, list[str]] = {}
    for d in sorted(broker.devices.values(), key=lambda d: d.device_id):
        tenants.setdefault(d.client_id, []).append(d.device_id)
    if version == 1:
        accounts = ["energylake-gateway"]
        body: dict[str, object] = {"username": accounts[0], "password": password}
    else:
        shards = [
            (f"energylake-gateway.{t}.{n}", t, members[n::2])
            for t, members in sorted(tenants.items())
            for n in range(2)
        ]
        accounts = [name for name, _t, _m in shards]
        body = {
            "version": 2,
            "password": password,
            "sessions": [{"username": n, "tenant": t, "devices": m} for n, t, m in shards],
        }
    broker.gateway_credentials_path.write_text(json.dumps(body))
    with (broker.folder / PASSWORD_FILE).open("a") as out:
        out.writelines(f"{a}:{mosquitto_hash(password)}\n" for a in accounts)
    with (broker.folder / ACL_FILE).open("a") as out:
        out.writelines(f"\nuser {a}\ntopic read emaas/v1/#\ntopic read tele/#\n" for a in accounts)
    broker.reload()
    return accounts


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_a_book_upgrade_while_a_device_publishes_loses_nothing_and_drains_the_old_sessions(
    broker: Mosquitto, version: int
) -> None:
    fleet, registry = fleet_registry(TWO_TENANTS)
    meter = next(d for d in broker.devices.values() if d.kind == "meter")
    old = _old_book(broker, version)
    gw = _gateway(broker, ENERGYLAKE_GATEWAY_MQTT_DRAIN_QUIET_S="1")
    publisher = _Publisher(broker, meter)
    try:
        time.sleep(1.0)
        provision(registry, broker.folder, credentials=fleet.tokens, broker=_options(broker))
        broker.reload()  # what the operator does after provisioning
        time.sleep(3.0)
        publisher.stop()
        acked = set(publisher.acked)
        assert len(acked) > 50

        def lost() -> list[int]:
            return sorted(acked - set(_seqs(landed(gw.landing), meter.device_id)))

        assert wait_for(lambda: not lost(), 15), f"{len(lost())} of {len(acked)} acked lost"
        assert wait_for(lambda: gw.get("/readyz").status == 200, 10)
        retired = [a for a in old if a not in {s.username for s in broker.sessions.sessions}]
        state = broker.folder / SESSION_STATE_FILE
        if retired:  # the version 2 shards: drained, recorded, then their accounts go
            assert wait_for(
                lambda: (
                    state.exists() and set(retired) <= set(json.loads(state.read_text())["drained"])
                ),
                15,
            ), state.read_text() if state.exists() else "no state file"
            report = provision(registry, broker.folder, broker=_options(broker))
            assert report.retired_sessions == ()
            assert not set(retired) & set(read_password_file(broker.folder / PASSWORD_FILE))
        assert gw.terminate() == 0
        log = gw.log_path.read_text()
        for name in retired:
            assert f"MQTT session {name} drained" in log
    finally:
        publisher.stop()
        gw.kill()


class _GatedWriter(LandingWriter):
    """A landing writer whose fsync waits for a permit: a slow disk, on demand."""

    permits: threading.Semaphore

    def sync(self) -> None:
        assert self.permits.acquire(timeout=30), "the test never released the disk"
        super().sync()


def _consumer(
    broker: Mosquitto, tmp_path: Path, session: MqttSession, open_writer: Any = None
) -> tuple[MqttConsumer, GroupCommitter, GatewayConfig]:
    """One session's consumer in this process, with a real committer and landing log."""
    book = broker.sessions
    config = GatewayConfig(
        landing_dir=tmp_path / "landing",
        identity_book=broker.identity_book,
        audit_dir=tmp_path / "audit",
        mqtt_port=broker.port,
        mqtt_password=book.password,
        mqtt_sessions=(session,),
        mqtt_reconnect_min_s=1,
        mqtt_reconnect_max_s=1,
    )
    committer = GroupCommitter(
        open_writer or (lambda: LandingWriter(config.landing_dir, "gw", fsync=False))
    )
    committer.start()
    consumer = MqttConsumer(
        config,
        session,
        committer,
        GatewayMetrics(),
        password=book.password,
        client_id=session.username,
        cache_bytes=1 << 20,
        ack_wake=threading.Event(),
        state=SessionState(None),
        wanted=session_filters(session, config.patterns),
    )
    return consumer, committer, config


@pytest.mark.slow
def test_a_subscribe_whose_suback_never_came_is_sent_again_on_reconnect(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The broker saved the session (SIGUSR1), then died before it read the next
    SUBSCRIBE: it comes back with the session present but without that filter. The
    filter counts as held only once its SUBACK came, so the reconnect sends it again."""
    meters = [d for d in broker.devices.values() if d.kind == "meter"]
    meter = meters[0]
    other = next(m for m in meters if m.client_id != meter.client_id)
    session = broker.session_of(meter.device_id)
    consumer, committer, config = _consumer(broker, tmp_path, session)
    consumer.connect()
    device = None
    try:
        assert wait_for(lambda: consumer.ready, 10)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGUSR1)  # the broker writes its database now
        time.sleep(0.5)
        broker.proc.send_signal(signal.SIGSTOP)
        extra = f"emaas/v1/{other.client_id}/+/+/telemetry"
        consumer.set_wanted({*session_filters(session, config.patterns), extra})
        time.sleep(0.3)  # the SUBSCRIBE is out, the broker never reads it
        broker.kill()  # (SIGKILL ends a stopped process)
        broker.start()
        assert wait_for(lambda: consumer.connects == 2, 15)
        assert consumer.session_present is True
        assert wait_for(lambda: consumer.ready, 10)
        device = _device(broker, other)
        _publish_all(device, [(other.topic, _payload(other.device_id, 5))])
        assert wait_for(lambda: 5 in _seqs(landed(config.landing_dir), other.device_id), 5), (
            "the filter whose SUBACK never came was never subscribed again"
        )
    finally:
        if device is not None:
            _close(device)
        consumer.disconnect()
        committer.stop(5)


@pytest.mark.slow
def test_an_ack_from_an_earlier_connection_is_never_sent_on_a_new_one(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """M1 is delivered, its landing is slow; the broker loses the gateway's session (a
    restart without its database) and the next message, M2, comes with the same message
    id. M1 landing must not acknowledge M2: M2 is not on disk, so the broker keeps it."""
    meter = next(d for d in broker.devices.values() if d.kind == "meter")
    book = broker.sessions
    session = broker.session_of(meter.device_id)
    permits = threading.Semaphore(0)

    def open_writer() -> LandingWriter:
        writer = _GatedWriter(tmp_path / "landing", "gw", fsync=False)
        writer.permits = permits
        return writer

    consumer, committer, _config = _consumer(broker, tmp_path, session, open_writer)
    consumer.connect()
    device = None
    try:
        assert wait_for(lambda: consumer.ready, 10)
        device = _device(broker, meter)
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 1))])  # M1
        assert wait_for(lambda: consumer.pending() == 1, 5)  # delivered, landing slowly
        _close(device)
        broker.kill()
        for db in (broker.data_dir / "mosquitto-data").glob("*.db"):
            db.unlink()  # the broker comes back without the gateway's session
        broker.start()
        assert wait_for(lambda: consumer.connects == 2 and consumer.ready, 15)
        assert consumer.session_present is False
        device = _device(broker, meter)
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 2))])  # M2
        assert wait_for(lambda: consumer.pending() == 2, 5)
        permits.release()  # M1 reaches the disk (M2 waits for the next fsync) ...
        assert wait_for(lambda: consumer.pending() == 1, 5)
        consumer.send_acks()  # ... and its ack is due (what the acker thread does)
        time.sleep(0.3)
        consumer.stop_intake()
        consumer.disconnect()  # M2 never reached the disk: never acked
        taken = _take_over(broker, session.username, book.password)
        assert [orjson.loads(p)["seq"] for p in taken] == [2], (
            "the broker no longer holds M2: an ack from the earlier connection acked it"
        )
    finally:
        if device is not None:
            _close(device)
        permits.release(10)
        consumer.disconnect()
        committer.stop(5)


def _take_over(broker: Mosquitto, username: str, password: str) -> list[bytes]:
    """What the broker still holds for a gateway session (connect as it, without acking)."""
    got: list[bytes] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=username,
        clean_session=False,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()
    return got


@pytest.mark.slow
def test_a_device_claiming_another_tenant_cannot_fill_that_tenants_queue(
    tmp_path: Path,
) -> None:
    """The ACL pins each device's canonical topic to its own tenant: a claim on another
    tenant's topic is refused by the broker (MQTT 3.1.1: still PUBACKed, then dropped;
    MQTT 5: PUBACK 0x87 Not authorized) and never reaches that tenant's queue."""
    small = start_mosquitto(
        tmp_path / "data" / "gateway", sim_config=TWO_TENANTS, max_queued_messages=200
    )
    gw = None
    clients: list[mqtt.Client] = []
    try:
        meters = [d for d in small.devices.values() if d.kind == "meter"]
        claimer = meters[0]
        victim = next(m for m in meters if m.client_id != claimer.client_id)
        gw = _gateway(small)
        assert gw.terminate() == 0  # the sessions exist at the broker; the gateway is away
        claim = f"emaas/v1/{victim.client_id}/{victim.branch_id}/{claimer.device_id}/telemetry"
        clients = [_device(small, claimer), _device(small, victim)]
        _publish_all(clients[0], [(claim, _payload(claimer.device_id, s)) for s in range(1000)])
        victim_seqs = range(1, 101)
        _publish_all(
            clients[1], [(victim.topic, _payload(victim.device_id, s)) for s in victim_seqs]
        )
        gw = _gateway(small)
        assert wait_for(
            lambda: set(victim_seqs) <= set(_seqs(landed(gw.landing), victim.device_id)), 10
        ), "the other tenant's acknowledged messages were dropped"
        time.sleep(0.5)
        assert not _seqs(landed(gw.landing), claimer.device_id)  # refused at the broker
        assert "Outgoing messages are being dropped" not in small.broker_log.read_text()
        # what the device sees: MQTT 3.1.1 a normal PUBACK (above), MQTT 5 reason 0x87
        _close(clients.pop(0))
        reasons: list[str] = []
        v5 = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=claimer.username, protocol=mqtt.MQTTv5
        )
        v5.username_pw_set(claimer.username, claimer.password)
        v5.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(str(reason))
        v5.connect(small.host, small.port)
        v5.loop_start()
        clients.append(v5)
        v5.publish(claim, _payload(claimer.device_id, 5000), qos=1).wait_for_publish(5)
        assert wait_for(lambda: reasons == ["Not authorized"], 5), reasons
        assert v5.is_connected()
        assert gw.terminate() == 0
    finally:
        for client in clients:
            _close(client)
        if gw is not None:
            gw.kill()
        small.close()


@pytest.mark.slow
def test_a_session_added_after_a_password_change_connects_with_the_new_password(
    broker: Mosquitto,
) -> None:
    fleet, registry = fleet_registry(TWO_TENANTS)
    meters = [d for d in broker.devices.values() if d.kind == "meter"]
    late = meters[-1]
    early = registry.filter(pc.not_equal(registry["client_id"], late.client_id))
    report = provision(early, broker.folder, broker=_options(broker))
    for name in report.retired_sessions:  # as if a gateway had drained them: gone
        SessionState(broker.folder / SESSION_STATE_FILE).mark_drained(name)
    provision(early, broker.folder, broker=_options(broker))
    broker.reload()
    gw = _gateway(broker)
    try:
        old_password = broker.sessions.password
        broker.gateway_credentials_path.unlink()  # rotate: provisioning makes a new one
        provision(registry, broker.folder, credentials=fleet.tokens, broker=_options(broker))
        assert broker.sessions.password != old_password
        broker.reload()
        state = broker.folder / SESSION_STATE_FILE
        tenant = f"emaas/v1/{late.client_id}/+/+/telemetry"
        assert wait_for(lambda: tenant in SessionState(state).held(), 15), gw.log()[-1500:]
        assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.log()[-1500:]
        # the new tenant's devices get their accounts once its session holds its filter
        provision(registry, broker.folder, credentials=fleet.tokens, broker=_options(broker))
        broker.reload()
        client = _device_when_allowed(broker, late, 5)
        _publish_all(client, [(late.topic, _payload(late.device_id, 3))])
        _close(client)
        assert wait_for(lambda: 3 in _seqs(landed(gw.landing), late.device_id), 10)
        assert gw.terminate() == 0
    finally:
        gw.kill()
