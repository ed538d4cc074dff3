"""The gateway's MQTT door against a real Mosquitto running the production config.

Acks are checked from the broker's side: after the gateway is killed, a client that takes
over the gateway's persistent session receives exactly what the gateway had not acked.
Everything else was acked, and every acked message must be in the landing log.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import DeviceAccount, Mosquitto
from landing.reader import read_segment
from tests.gateway.conftest import GatewayProc, landed, start_gateway, wait_for

pytestmark = pytest.mark.integration


def _device_client(broker: Mosquitto, device: DeviceAccount) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device.username, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device.username, device.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _payload(device: str, seq: int) -> bytes:
    return orjson.dumps(
        {"device_id": device, "seq": seq, "ts": 1_795_000_000_000_000 + seq, "readings": {}}
    )


def _gateway(broker: Mosquitto, **env: str) -> GatewayProc:
    settings = {
        "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
        "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
        **env,
    }
    gw = start_gateway(broker.data_dir, settings)
    assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.get("/readyz").body
    return gw


def _seqs(landing: Path, device: str) -> list[int]:
    return [
        int(orjson.loads(e.payload)["seq"])
        for e in landed(landing)
        if e.identity == device and e.source == "mqtt" and e.topic.startswith("emaas/")
    ]


def _take_over_session(broker: Mosquitto, seconds: float) -> list[tuple[str, bytes]]:
    """Connect as the gateway (its persistent sessions, one per tenant) and collect what
    the broker still holds for them: messages queued or sent but never acked."""
    got: list[tuple[str, bytes]] = []
    book = broker.sessions
    clients = []
    for session in book.sessions:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session.username,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(session.username, book.password)
        client.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload)))
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append(client)
    time.sleep(seconds)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return got


@pytest.mark.slow
def test_mqtt_message_lands_in_a_closed_segment_then_sigterm_drains(mosquitto: Mosquitto) -> None:
    meter = next(d for d in mosquitto.devices.values() if d.kind == "meter")
    gw = _gateway(mosquitto)
    try:
        device = _device_client(mosquitto, meter)
        device.publish(meter.topic, _payload(meter.device_id, 1), qos=1).wait_for_publish(5)
        device.publish(
            meter.tasmota_topic, b'{"Time":"2026-11-16T10:00:00","ENERGY":{"Power":5}}', qos=1
        ).wait_for_publish(5)

        def closed() -> list[Any]:
            return [
                e
                for seg in sorted((gw.landing / "closed").glob("*.seg"))
                for e in read_segment(seg).envelopes()
            ]

        assert wait_for(lambda: len(closed()) >= 2, 10)
        records = {e.topic: e for e in closed()}
        canonical = records[meter.topic]
        assert (canonical.source, canonical.identity) == ("mqtt", meter.device_id)
        assert orjson.loads(canonical.payload)["seq"] == 1
        assert records[meter.tasmota_topic].identity == meter.device_id
        metrics = gw.get("/metrics").body.decode()
        assert "energylake_gateway_mqtt_connected 1.0" in metrics
        assert 'energylake_gateway_accepted_records_total{source="mqtt"} 2.0' in metrics
        # SIGTERM with a message in the open segment: it is closed, exit 0
        device.publish(meter.topic, _payload(meter.device_id, 2), qos=1).wait_for_publish(5)
        assert wait_for(lambda: 2 in _seqs(gw.landing, meter.device_id), 5)
        device.disconnect()
        device.loop_stop()
        assert gw.terminate() == 0
        assert not list((gw.landing / "open").glob("*.seg"))
        assert sorted(_seqs(gw.landing, meter.device_id)) == [1, 2]
        # nothing left unacked in the gateway's session
        assert _take_over_session(mosquitto, 1.0) == []
    finally:
        gw.kill()


@pytest.mark.slow
def test_sigkill_and_restart_lose_nothing_that_was_acked(mosquitto: Mosquitto) -> None:
    meters = [d for d in mosquitto.devices.values() if d.kind == "meter"][:2]
    gw = _gateway(mosquitto, ENERGYLAKE_GATEWAY_ROLL_SECONDS="60")
    clients = {m.device_id: _device_client(mosquitto, m) for m in meters}
    published: list[tuple[str, int]] = []
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        while not stop.is_set() and seq < 3000:
            for meter in meters:
                info = clients[meter.device_id].publish(
                    meter.topic, _payload(meter.device_id, seq), qos=1
                )
                info.wait_for_publish(5)
                published.append((meter.device_id, seq))
            seq += 1
            time.sleep(0.001)

    rng = random.Random(os.getpid())
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 0.8))
            gw.kill()  # SIGKILL, mid-stream
            gw = _gateway(mosquitto, ENERGYLAKE_GATEWAY_ROLL_SECONDS="60")
        time.sleep(0.5)
    finally:
        stop.set()
        publisher.join(30)
        for client in clients.values():
            client.disconnect()
            client.loop_stop()
    time.sleep(0.5)
    gw.kill()  # the last one too: whatever it had not acked stays with the broker
    pending = {
        (orjson.loads(p)["device_id"], orjson.loads(p)["seq"])
        for _, p in _take_over_session(mosquitto, 2.0)
    }
    on_disk = {(m.device_id, s) for m in meters for s in _seqs(gw.landing, m.device_id)}
    acked = set(published) - pending
    assert len(published) > 200
    assert acked, "the gateway acked nothing"
    missing = acked - on_disk
    assert not missing, f"{len(missing)} acked messages are not in the landing log"
    assert set(published) <= on_disk | pending  # the broker was not killed: nothing lost


@pytest.mark.slow
def test_backpressure_stalls_mqtt_and_http_then_resumes(mosquitto: Mosquitto) -> None:
    meter = next(d for d in mosquitto.devices.values() if d.kind == "meter")
    # any closed segment not yet taken by the processor counts as too much lag
    gw = _gateway(mosquitto, ENERGYLAKE_GATEWAY_MAX_LAG_BYTES="0")
    device = _device_client(mosquitto, meter)
    taken = mosquitto.data_dir / "taken-by-processor"
    taken.mkdir()
    try:
        device.publish(meter.topic, _payload(meter.device_id, 0), qos=1).wait_for_publish(5)
        assert wait_for(lambda: any((gw.landing / "closed").glob("*.seg")), 10)
        assert wait_for(lambda: gw.get("/readyz").status == 503, 5)
        assert wait_for(
            lambda: "energylake_gateway_mqtt_connected 0.0" in gw.get("/metrics").body.decode(), 5
        )
        http = gw.post(_payload(meter.device_id, 100), meter.token)
        assert http.status == 503
        assert http.json()["reason"] == "processor_lag"
        assert int(http.headers["retry-after"]) >= 1
        for seq in range(1, 21):
            device.publish(meter.topic, _payload(meter.device_id, seq), qos=1).wait_for_publish(5)
        time.sleep(1.0)
        assert _seqs(gw.landing, meter.device_id) == [0]  # stalled: nothing taken, nothing acked
        # the processor takes the closed segments: the gateway resumes on its own
        for seg in (gw.landing / "closed").glob("*.seg"):
            seg.rename(taken / seg.name)
        assert wait_for(lambda: len(set(_seqs(gw.landing, meter.device_id))) == 20, 15)
        assert gw.post(_payload(meter.device_id, 100), meter.token).status in (202, 503)
        assert gw.terminate() == 0
    finally:
        device.disconnect()
        device.loop_stop()
        gw.kill()
