"""The production Mosquitto config, run for real: authentication, ACL, revocation, restarts."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devstack.mosquitto import DeviceAccount, Mosquitto, start_mosquitto

pytestmark = pytest.mark.timeout(60)


@dataclass
class _Session:
    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    refused: list[Any] = field(default_factory=list)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)


def _connect(
    broker: Mosquitto,
    username: str | None,
    password: str | None,
    *,
    client_id: str = "",
    clean: bool = True,
    wait: float = 5.0,
) -> _Session:
    """A paho client (MQTT 3.1.1) in its own network thread; waits for CONNACK or refusal."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
        clean_session=clean,
    )
    session = _Session(client)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            session.refused.append(reason)
        else:
            session.connected.set()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        session.received.append((msg.topic, bytes(msg.payload)))

    def on_subscribe(_c: Any, _u: Any, _m: Any, _r: Any, _p: Any) -> None:
        session.subscribed.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        session.disconnected.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(60, 60)  # no silent reconnects during a test
    if username is not None:
        client.username_pw_set(username, password)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not session.connected.is_set() and not session.refused:
        time.sleep(0.01)
    return session


def _close(*sessions: _Session) -> None:
    for s in sessions:
        s.client.disconnect()
        s.client.loop_stop()


def _gateway(broker: Mosquitto) -> _Session:
    gw = _connect(broker, broker.gateway_username, broker.gateway_password)
    assert gw.connected.is_set(), gw.refused
    gw.client.subscribe([("emaas/v1/#", 1), ("tele/#", 1)])
    assert gw.subscribed.wait(5)
    return gw


def _publish(session: _Session, topic: str, payload: bytes) -> None:
    info = session.client.publish(topic, payload, qos=1)
    info.wait_for_publish(timeout=5)
    assert info.is_published()


def _other(char: str) -> str:
    return "1" if char == "0" else "0"


def _two_devices(broker: Mosquitto) -> tuple[DeviceAccount, DeviceAccount]:
    first, second = sorted(broker.devices.values(), key=lambda d: d.device_id)[:2]
    return first, second


def test_fixture_starts_fast_on_loopback_with_the_production_config(tmp_path: Any) -> None:
    started = time.monotonic()
    broker = start_mosquitto(tmp_path / "data" / "gateway")
    try:
        elapsed = time.monotonic() - started
        assert broker.running
        assert broker.host == "127.0.0.1"
        assert elapsed < 1.0, f"broker took {elapsed:.2f}s to start"
        conf = broker.conf_path.read_text()
        assert f"listener {broker.port} 127.0.0.1" in conf
        assert "@@" not in conf
        assert "allow_anonymous false" in conf
        assert broker.identity_book.exists()
        assert len(broker.devices) >= 3
    finally:
        broker.close()
    assert not broker.running


def test_provisioned_passwords_are_accepted(mosquitto: Mosquitto) -> None:
    sessions = [_connect(mosquitto, d.username, d.password) for d in mosquitto.devices.values()]
    sessions.append(_connect(mosquitto, mosquitto.gateway_username, mosquitto.gateway_password))
    try:
        assert all(s.connected.is_set() for s in sessions), [s.refused for s in sessions]
    finally:
        _close(*sessions)


@pytest.mark.parametrize(
    "who", ["anonymous", "wrong-password", "unknown-user", "other-devices-token"]
)
def test_clients_without_valid_credentials_are_refused(mosquitto: Mosquitto, who: str) -> None:
    first, second = _two_devices(mosquitto)
    username, password = {
        "anonymous": (None, None),
        "wrong-password": (first.username, first.password[:-1] + _other(first.password[-1])),
        "unknown-user": ("em-ffffffff", first.password),
        "other-devices-token": (first.username, second.password),
    }[who]
    session = _connect(mosquitto, username, password)
    try:
        assert not session.connected.is_set()
        assert session.refused, "the broker neither accepted nor refused the connection"
        assert session.refused[0].getName() == "Not authorized"
    finally:
        _close(session)


def test_acl_lets_a_device_publish_only_its_own_topics(mosquitto: Mosquitto) -> None:
    first, second = _two_devices(mosquitto)
    gw = _gateway(mosquitto)
    dev = _connect(mosquitto, first.username, first.password)
    try:
        assert dev.connected.is_set()
        # Its own canonical and Tasmota topics pass; a topic naming another device (in the
        # canonical device position or Tasmota's) does not reach the gateway.
        _publish(dev, second.topic, b'{"spoof": 1}')
        _publish(dev, second.tasmota_topic, b'{"spoof": 2}')
        _publish(dev, f"emaas/v1/{first.client_id}/{first.branch_id}/x/telemetry", b"{}")
        _publish(dev, "emaas/v1/other/topic", b"{}")
        _publish(dev, first.topic, b'{"own": 1}')
        _publish(dev, first.tasmota_topic, b'{"own": 2}')
        deadline = time.monotonic() + 5
        while len(gw.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # anything denied but late would show up by now
        assert sorted(gw.received) == sorted(
            [(first.topic, b'{"own": 1}'), (first.tasmota_topic, b'{"own": 2}')]
        )
    finally:
        _close(gw, dev)


def test_a_device_claiming_another_branch_passes_the_acl(mosquitto: Mosquitto) -> None:
    """Branch is checked downstream (BRANCH_MISMATCH); the ACL pins only the device."""
    first, _ = _two_devices(mosquitto)
    gw = _gateway(mosquitto)
    dev = _connect(mosquitto, first.username, first.password)
    topic = f"emaas/v1/{first.client_id}/not-my-branch/{first.device_id}/telemetry"
    try:
        _publish(dev, topic, b"{}")
        deadline = time.monotonic() + 5
        while not gw.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gw.received == [(topic, b"{}")]
    finally:
        _close(gw, dev)


def test_devices_cannot_read_telemetry(mosquitto: Mosquitto) -> None:
    first, second = _two_devices(mosquitto)
    spy = _connect(mosquitto, second.username, second.password)
    dev = _connect(mosquitto, first.username, first.password)
    gw = _gateway(mosquitto)
    try:
        spy.client.subscribe([("emaas/v1/#", 1), ("#", 1)])
        spy.subscribed.wait(5)
        _publish(dev, first.topic, b"{}")
        deadline = time.monotonic() + 5
        while not gw.received and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert gw.received
        assert spy.received == []
    finally:
        _close(spy, dev, gw)


def test_oversized_packet_disconnects_the_publisher(mosquitto: Mosquitto) -> None:
    first, _ = _two_devices(mosquitto)
    gw = _gateway(mosquitto)
    dev = _connect(mosquitto, first.username, first.password)
    try:
        dev.client.publish(first.topic, b"x" * (70 * 1024), qos=1)
        assert dev.disconnected.wait(5), "the broker kept a client that sent > max_packet_size"
        time.sleep(0.2)
        assert gw.received == []
        assert not gw.disconnected.is_set()
    finally:
        _close(gw, dev)


def test_revoked_device_cannot_connect_after_reload(mosquitto: Mosquitto) -> None:
    first, second = _two_devices(mosquitto)
    before = _connect(mosquitto, first.username, first.password)
    assert before.connected.is_set()
    _close(before)
    mosquitto.revoke(first.device_id)
    after = _connect(mosquitto, first.username, first.password)
    other = _connect(mosquitto, second.username, second.password)
    try:
        assert not after.connected.is_set()
        assert after.refused
        assert other.connected.is_set()
    finally:
        _close(after, other)


def test_gateway_session_survives_a_graceful_restart(mosquitto: Mosquitto) -> None:
    """The persistent session and its QoS 1 queue outlive a SIGTERM restart (persistence)."""
    first, _ = _two_devices(mosquitto)
    gw = _connect(mosquitto, mosquitto.gateway_username, mosquitto.gateway_password, clean=False)
    gw.client.subscribe("emaas/v1/#", qos=1)
    assert gw.subscribed.wait(5)
    _close(gw)  # offline: the broker queues for it
    dev = _connect(mosquitto, first.username, first.password)
    for i in range(50):
        _publish(dev, first.topic, f'{{"seq": {i}}}'.encode())
    _close(dev)
    mosquitto.restart()
    gw2 = _connect(mosquitto, mosquitto.gateway_username, mosquitto.gateway_password, clean=False)
    try:
        deadline = time.monotonic() + 5
        while len(gw2.received) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [p for _, p in gw2.received] == [f'{{"seq": {i}}}'.encode() for i in range(50)]
    finally:
        _close(gw2)


def test_a_device_with_a_retained_will_can_connect(mosquitto: Mosquitto) -> None:
    """Tasmota connects with a retained will (tele/<topic>/LWT) by default; a broker that
    refuses retained messages (retain_available false) refuses that CONNECT outright, so
    the config keeps them available and the gateway lands a retained publication once."""
    first, _ = _two_devices(mosquitto)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=first.username, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(first.username, first.password)
    client.will_set(f"tele/{first.device_id}/LWT", b"Offline", qos=1, retain=True)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or connected.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert connected.wait(5), "the broker refused a client with a retained will"
    finally:
        client.disconnect()
        client.loop_stop()
