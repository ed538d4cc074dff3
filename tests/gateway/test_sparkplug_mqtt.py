"""Sparkplug B through a real Mosquitto (the production config and ACL) and the gateway
process: an edge node (a provisioned account) publishes BIRTH and DATA built as the
specification describes them; the landing log holds the decoded JSON under the original
topic, and the edge node receives the gateway's rebirth request (NCMD) after an unknown
alias and after a seq gap. A killed gateway restarts from its state file, and what the
broker sends again lands with the (boot, seq) of its first landing."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import DeviceAccount, Mosquitto
from gateway.sparkplug import sparkplug_b_pb2 as pb
from tests.gateway.conftest import GatewayProc, landed, start_gateway, wait_for
from tests.gateway.sparkplug_payloads import EdgeNode, Metric

pytestmark = pytest.mark.integration

METER = [
    Metric("Energy/import_kwh", 1, pb.Double, 10.5),
    Metric("Power/active_w", 2, pb.Int32, -5),
]


class EdgeClient:
    """A paho client logged in as the edge node's account, collecting its NCMDs."""

    def __init__(self, broker: Mosquitto, account: DeviceAccount, group: str) -> None:
        self.commands: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=account.username, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(account.username, account.password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"spBv1.0/{group}/NCMD/{account.username}", 1)
        assert subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.commands.append((msg.topic, bytes(msg.payload)))

    def publish(self, message: tuple[str, bytes]) -> None:
        topic, payload = message
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def rebirths(self) -> int:
        with self._lock:
            got = list(self.commands)
        count = 0
        for _topic, raw in got:
            (metric,) = pb.Payload.FromString(raw).metrics
            assert (metric.name, metric.datatype) == ("Node Control/Rebirth", pb.Boolean)
            count += metric.boolean_value
        return count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _gateway(broker: Mosquitto) -> GatewayProc:
    gw = start_gateway(
        broker.data_dir,
        {
            "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
            "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
            "ENERGYLAKE_GATEWAY_SPARKPLUG_REBIRTH_INTERVAL_S": "0.5",
        },
    )
    assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.get("/readyz").body
    return gw


def _documents(gw: GatewayProc, edge: str) -> list[dict[str, Any]]:
    out = []
    for envelope in landed(gw.landing):
        if envelope.topic.startswith("spBv1.0/"):
            assert (envelope.source, envelope.identity) == ("mqtt", edge)
            doc = orjson.loads(envelope.payload)
            assert envelope.topic == "/".join(
                [f"spBv1.0/{doc['group']}/{doc['type']}/{doc['edge_node']}"]
                + ([doc["device"]] if doc["device"] else [])
            )
            out.append(doc)
    return out


def _edge(mosquitto: Mosquitto) -> tuple[DeviceAccount, EdgeNode]:
    account = next(d for d in mosquitto.devices.values() if d.kind == "meter")
    node = EdgeNode("plant-a", account.username, metrics=[Metric("Node/temp_c", 1, pb.Float, 20.0)])
    node.devices = {"meter-1": list(METER)}
    return account, node


def test_sparkplug_is_decoded_landed_and_rebirth_requested(mosquitto: Mosquitto) -> None:
    account, node = _edge(mosquitto)
    gw = _gateway(mosquitto)
    edge = EdgeClient(mosquitto, account, node.group)
    try:
        edge.publish(node.nbirth())
        edge.publish(node.dbirth("meter-1"))
        edge.publish(node.data("meter-1", {2: -1234, 1: 11.5}))
        assert wait_for(lambda: len(_documents(gw, account.username)) == 3, 10)
        nbirth, dbirth, ddata = _documents(gw, account.username)
        assert (nbirth["type"], nbirth["bd_seq"], nbirth["seq"]) == ("NBIRTH", 0, 0)
        assert dbirth["metrics"] == {"Energy/import_kwh": 10.5, "Power/active_w": -5}
        assert ddata["metrics"] == {"Power/active_w": -1234, "Energy/import_kwh": 11.5}
        assert (ddata["device"], ddata["boot"], ddata["seq"], ddata["sp_seq"]) == (
            "meter-1",
            nbirth["boot"],
            1,
            2,
        )
        assert ddata["problem"] is None
        assert edge.rebirths() == 0
        # an unknown alias: landed with the problem, and a rebirth request
        edge.publish(node.data("meter-1", {99: 1}))
        assert wait_for(lambda: edge.rebirths() == 1, 10)
        assert wait_for(lambda: len(_documents(gw, account.username)) == 4, 10)
        unknown = _documents(gw, account.username)[-1]
        assert unknown["problem"]["code"] == "UNKNOWN_ALIAS"
        # the edge node answers with a rebirth; then a gap (two messages lost)
        edge.publish(node.nbirth())
        edge.publish(node.dbirth("meter-1"))
        node.seq += 2
        edge.publish(node.data("meter-1", {2: 1}))
        assert wait_for(lambda: len(_documents(gw, account.username)) == 7, 10)
        gap = _documents(gw, account.username)[-1]
        assert gap["problem"]["code"] == "SEQ_GAP"
        assert gap["boot"] == nbirth["boot"] + 1
        # rebirth requests are rate-limited per edge node (0.5 s here, 5 s by default): the
        # next message, in order but before the rebirth, is still not trusted and asks again
        time.sleep(0.6)
        edge.publish(node.data("meter-1", {2: 2}))
        assert wait_for(lambda: len(_documents(gw, account.username)) == 8, 10)
        assert _documents(gw, account.username)[-1]["problem"]["code"] == "SEQ_GAP"
        assert wait_for(lambda: edge.rebirths() >= 2, 10)
        # a payload that is not protobuf is landed as received
        topic = node.topic("DDATA", "meter-1")
        edge.publish((topic, b"\xff\xff\xff"))
        assert wait_for(lambda: any(e.payload == b"\xff\xff\xff" for e in landed(gw.landing)), 10)
        metrics = gw.get("/metrics").body.decode()
        assert (
            'energylake_gateway_sparkplug_rebirth_requests_total{reason="UNKNOWN_ALIAS"} 1.0'
            in (metrics)
        )
        assert 'energylake_gateway_sparkplug_rebirth_requests_total{reason="SEQ_GAP"}' in metrics
        # the gateway never reads commands back (the ACL): nothing landed on NCMD
        assert not any("/NCMD/" in e.topic for e in landed(gw.landing))
    finally:
        edge.close()
        gw.kill()


@pytest.mark.slow
def test_a_killed_gateway_restarts_from_its_state_and_redeliveries_keep_their_seq(
    mosquitto: Mosquitto,
) -> None:
    account, node = _edge(mosquitto)
    gw = _gateway(mosquitto)
    edge = EdgeClient(mosquitto, account, node.group)
    messages = [node.nbirth(), node.dbirth("meter-1")]
    messages += [node.data("meter-1", {2: i}) for i in range(400)]  # the seq wraps
    try:
        sent = [edge.client.publish(t, raw, qos=1) for t, raw in messages[:150]]
        assert wait_for(lambda: len(_documents(gw, account.username)) >= 30, 10)
        gw.kill()  # SIGKILL while messages are in flight: some landed but not acked
        for info in sent:
            info.wait_for_publish(5)
        for message in messages[150:300]:
            edge.publish(message)  # queued by the broker for the gateway's session
        gw = _gateway(mosquitto)
        for message in messages[300:]:
            edge.publish(message)
        raws = {base64.b64encode(raw).decode() for _topic, raw in messages}
        assert wait_for(lambda: {d["raw"] for d in _documents(gw, account.username)} >= raws, 20)
        docs = _documents(gw, account.username)
        first: dict[str, tuple[int, int]] = {}
        for doc in docs:  # a message landed twice carries the same (boot, seq) twice
            assert first.setdefault(doc["raw"], (doc["boot"], doc["seq"])) == (
                doc["boot"],
                doc["seq"],
            )
            assert doc["problem"] is None, doc
        boots = {doc["boot"] for doc in docs}
        assert len(boots) == 1  # one NBIRTH: one boot across the restart
        seqs = sorted({doc["seq"] for doc in docs if doc["device"] == "meter-1"})
        assert seqs == list(range(401))  # consecutive: no gap, nothing counted twice
        assert edge.rebirths() == 0
    finally:
        edge.close()
        gw.kill()
