"""Issue 12 at the MQTT door, against a real Mosquitto with the production config and the
real gateway process: a flooding tenant cannot make the broker drop another tenant's
acknowledged messages (and its own drops are counted and visible), retained publications
land once, QoS 0 messages sent while the gateway is away land (within a bound), and
bloated topics land bounded without growing the gateway.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psutil
import pyarrow.compute as pc
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from contracts import load_registry
from devstack.mosquitto import DeviceAccount, Mosquitto, fleet_registry, start_mosquitto
from gateway.provisioning import PASSWORD_FILE, BrokerOptions, provision, read_password_file
from gateway.sessions import SESSION_STATE_FILE, SessionState
from gateway.topics import BAD_TOPIC_PREFIX
from landing.format import Envelope
from landing.reader import iter_segment_tables, read_segment
from pipelines.status import broker_drops
from simulator.config import SimConfig
from tests.gateway.conftest import GatewayProc, landed, start_gateway, wait_for
from transforms.decode import DecodeSchema, decode_chunk
from transforms.frames import ROW, Chunk

pytestmark = pytest.mark.integration

TWO_TENANTS = SimConfig(clients=2, branches=1, days=1, seed=7)
QUEUE = 200  # each gateway session's broker queue in these tests


@pytest.fixture
def small_queues(tmp_path: Path) -> Iterator[Mosquitto]:
    """Two tenants, a broker queue of QUEUE messages per gateway session, $SYS every 1 s."""
    broker = start_mosquitto(
        tmp_path / "data" / "gateway",
        sim_config=TWO_TENANTS,
        max_queued_messages=QUEUE,
        sys_interval_s=1,
    )
    try:
        yield broker
    finally:
        broker.close()


def _device(broker: Mosquitto, device: DeviceAccount) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device.username, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device.username, device.password)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _on_device_connect(accepted: threading.Event, *args: Any) -> None:
    if not args[3].is_failure:  # (client, userdata, flags, reason, properties)
        accepted.set()


def _device_when_allowed(broker: Mosquitto, device: DeviceAccount, timeout: float) -> mqtt.Client:
    """The device's connection, tried every 10 ms until the broker accepts its account."""
    deadline = time.monotonic() + timeout
    while True:
        accepted = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device.username, protocol=mqtt.MQTTv311
        )
        client.username_pw_set(device.username, device.password)
        client.on_connect = functools.partial(_on_device_connect, accepted)
        client.connect(broker.host, broker.port)
        client.loop_start()
        if accepted.wait(0.2):
            return client
        client.loop_stop()
        client.disconnect()
        assert time.monotonic() < deadline, f"the broker never let {device.device_id} in"
        time.sleep(0.01)


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _payload(device: str, seq: int) -> bytes:
    return orjson.dumps(
        {"device_id": device, "seq": seq, "ts": 1_795_000_000_000_000 + seq, "readings": {}}
    )


def _publish_all(
    client: mqtt.Client, items: list[tuple[str, bytes]], *, qos: int = 1, retain: bool = False
) -> None:
    """Publish and wait for every PUBACK (QoS 1), in windows under paho's id space."""
    window: list[mqtt.MQTTMessageInfo] = []
    for topic, body in items:
        window.append(client.publish(topic, body, qos=qos, retain=retain))
        if len(window) >= 500:
            for info in window:
                info.wait_for_publish(20)
                assert info.is_published()
            window = []
    for info in window:
        info.wait_for_publish(20)
        assert info.is_published()


def _gateway(broker: Mosquitto, **env: str) -> GatewayProc:
    settings = {
        "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
        "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.3",
        **env,
    }
    gw = start_gateway(broker.data_dir, settings)
    assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.get("/readyz").body
    return gw


def _all_landed(gw: GatewayProc, *more: Path) -> list[Envelope]:
    out = landed(gw.landing)
    for folder in more:
        for seg in sorted(folder.glob("*.seg")):
            out.extend(read_segment(seg).envelopes())
    return out


def _seqs(envelopes: list[Envelope], device: str) -> Counter[int]:
    return Counter(
        int(orjson.loads(e.payload)["seq"])
        for e in envelopes
        if e.identity == device and e.payload.startswith(b"{")
    )


def _metric(gw: GatewayProc, line_start: str) -> float | None:
    for line in gw.get("/metrics").body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _audit(broker: Mosquitto, event: str) -> list[dict[str, object]]:
    out = []
    for path in sorted((broker.data_dir / "audit" / "gateway").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == event:
                out.append(record)
    return out


def _pause(gw: GatewayProc, broker: Mosquitto, device: DeviceAccount, client: mqtt.Client) -> None:
    """Make the gateway disconnect through its own backpressure (processor lag bound 0:
    one closed segment is too much), as in production when the processor falls behind."""
    _publish_all(client, [(device.topic, _payload(device.device_id, 0))])
    assert wait_for(lambda: any((gw.landing / "closed").glob("*.seg")), 10)
    assert wait_for(lambda: _metric(gw, "energylake_gateway_mqtt_connected") == 0.0, 10)


class _Processor:
    """Stands in for `energylake process`: takes every closed segment, every 50 ms, so the
    gateway's lag bound clears and stays clear (it reconnects on its own)."""

    def __init__(self, gw: GatewayProc, taken: Path) -> None:
        self._closed = gw.landing / "closed"
        self.taken = taken
        taken.mkdir(exist_ok=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for seg in self._closed.glob("*.seg"):
                seg.rename(self.taken / seg.name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.slow
def test_a_flooding_tenant_cannot_make_the_broker_drop_another_tenants_messages(
    small_queues: Mosquitto,
) -> None:
    broker = small_queues
    meters = [d for d in broker.devices.values() if d.kind == "meter"]
    flooder = meters[0]
    victim = next(m for m in meters if m.client_id != flooder.client_id)
    flood_session = broker.session_of(flooder.device_id).username
    assert broker.session_of(victim.device_id).username != flood_session
    gw = _gateway(
        broker,
        ENERGYLAKE_GATEWAY_MAX_LAG_BYTES="0",
        ENERGYLAKE_GATEWAY_MQTT_FLOOD_MESSAGES="100",
        ENERGYLAKE_GATEWAY_MQTT_FLOOD_WINDOW_S="1",
    )
    taken = broker.data_dir / "taken-by-processor"
    flood, other = _device(broker, flooder), _device(broker, victim)
    processor: _Processor | None = None
    try:
        _pause(gw, broker, victim, other)
        # The flood: five times the queue, every message acknowledged by the broker ...
        flood_seqs = range(1, 5 * QUEUE + 1)
        _publish_all(flood, [(flooder.topic, _payload(flooder.device_id, s)) for s in flood_seqs])
        # ... and then the other tenant's messages, also acknowledged by the broker
        victim_seqs = range(1, 51)
        _publish_all(other, [(victim.topic, _payload(victim.device_id, s)) for s in victim_seqs])
        time.sleep(0.5)
        assert _metric(gw, "energylake_gateway_mqtt_connected") == 0.0  # still away
        processor = _Processor(gw, taken)

        def victim_landed() -> set[int]:
            return set(_seqs(_all_landed(gw, taken), victim.device_id))

        assert wait_for(lambda: set(victim_seqs) <= victim_landed(), 20), (
            f"{len(set(victim_seqs) - victim_landed())} of the other tenant's "
            f"{len(victim_seqs)} acknowledged messages never landed"
        )
        # The flooder lost what did not fit its own session's queue, and that shows: the
        # broker's log names its session, the $SYS counter has the number.
        assert wait_for(lambda: gw.get("/readyz").status == 200, 10)
        time.sleep(1.0)  # let the drained flood settle
        flooded = set(_seqs(_all_landed(gw, taken), flooder.device_id)) & set(flood_seqs)
        dropped = len(flood_seqs) - len(flooded)
        assert 0 < dropped <= len(flood_seqs) - QUEUE
        episodes = f'energylake_gateway_broker_drop_episodes_total{{session="{flood_session}"}}'
        assert wait_for(lambda: (_metric(gw, episodes) or 0) >= 1, 5), gw.get("/metrics").body
        assert wait_for(
            lambda: _metric(gw, "energylake_gateway_broker_dropped_messages") == dropped, 5
        ), (_metric(gw, "energylake_gateway_broker_dropped_messages"), dropped)
        drops = _audit(broker, "mqtt_broker_dropping")
        assert [d["client_id"] for d in drops] == [flooder.client_id]
        floods = _audit(broker, "mqtt_device_flood")
        assert wait_for(lambda: _audit(broker, "mqtt_device_flood"), 5)
        floods = _audit(broker, "mqtt_device_flood")
        assert {f["device_id"] for f in floods} == {flooder.device_id}
        # and `energylake status` shows the episode, for the flooding tenant only
        status = broker_drops(
            broker.broker_log,
            broker.gateway_credentials_path,
            datetime.now(UTC) - timedelta(hours=1),
        )
        assert status.readable
        assert [(r["session"], r["tenant"]) for r in status.sessions] == [
            (flood_session, flooder.client_id)
        ]
        assert gw.terminate() == 0
    finally:
        if processor is not None:
            processor.stop()
        _close(flood)
        _close(other)
        gw.kill()


@pytest.mark.slow
def test_retained_publications_land_once_whatever_the_reconnects(mosquitto: Mosquitto) -> None:
    meter = next(d for d in mosquitto.devices.values() if d.kind == "meter")
    bad = b"retained, and not JSON"
    gw = _gateway(mosquitto)
    device = _device(mosquitto, meter)
    try:
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 1))], retain=True)
        _publish_all(device, [(meter.tasmota_topic, bad)], retain=True)
        assert wait_for(lambda: len(landed(gw.landing)) == 2, 10)
        # reconnect: the gateway restarts (the broker kept its sessions and their
        # filters); a retained publication also arrives while the gateway is away
        assert gw.terminate() == 0
        gw = _gateway(mosquitto)
        assert gw.terminate() == 0
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 2))], retain=True)
        gw = _gateway(mosquitto)
        assert wait_for(lambda: 2 in _seqs(landed(gw.landing), meter.device_id), 10)
        time.sleep(0.5)  # a replay, if landed, would be in by now
        replayed = _metric(gw, "energylake_gateway_mqtt_retained_total")
        assert gw.terminate() == 0
        envelopes = landed(gw.landing)
        assert _seqs(envelopes, meter.device_id) == Counter({1: 1, 2: 1})
        assert [e.payload for e in envelopes].count(bad) == 1
        # a reconnect to a session the broker kept sends no SUBSCRIBE: nothing replayed
        assert replayed == 0
    finally:
        _close(device)
        gw.kill()


@pytest.mark.slow
def test_qos0_messages_sent_while_the_gateway_is_away_land_within_the_queue_bound(
    small_queues: Mosquitto,
) -> None:
    broker = small_queues
    meter = next(d for d in broker.devices.values() if d.kind == "meter")
    gw = _gateway(broker)
    assert gw.terminate() == 0  # the gateway's sessions exist; the gateway is away
    device = _device(broker, meter)
    try:
        # Tasmota's default: QoS 0. A QoS 1 message after them is the barrier: once the
        # broker acks it, it has handled every QoS 0 message before it on the connection.
        _publish_all(
            device, [(meter.topic, _payload(meter.device_id, s)) for s in range(100)], qos=0
        )
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 100))])
        gw = _gateway(broker)
        assert wait_for(lambda: len(_seqs(landed(gw.landing), meter.device_id)) == 101, 10), (
            f"{101 - len(_seqs(landed(gw.landing), meter.device_id))} QoS 0 messages lost"
        )
        assert gw.terminate() == 0
        # The queue is bounded for QoS 0 as for QoS 1: past it the broker drops (and logs).
        seqs = range(1000, 1000 + 3 * QUEUE)
        _publish_all(device, [(meter.topic, _payload(meter.device_id, s)) for s in seqs], qos=0)
        _publish_all(device, [(meter.topic, _payload(meter.device_id, 9999))])
        gw = _gateway(broker)
        assert wait_for(
            lambda: len(set(_seqs(landed(gw.landing), meter.device_id)) & set(seqs)) >= QUEUE, 10
        )
        time.sleep(0.5)
        assert len(set(_seqs(landed(gw.landing), meter.device_id)) & set(seqs)) == QUEUE
        session = broker.session_of(meter.device_id).username
        assert f"Outgoing messages are being dropped for client {session}." in (
            broker.broker_log.read_text()
        )
        assert gw.terminate() == 0
    finally:
        _close(device)
        gw.kill()


@pytest.mark.slow
def test_bloated_topics_land_bounded_once_each_and_the_gateway_does_not_grow(
    mosquitto: Mosquitto,
) -> None:
    meter = next(d for d in mosquitto.devices.values() if d.kind == "meter")
    gw = _gateway(mosquitto, ENERGYLAKE_GATEWAY_MQTT_FLOOD_WINDOW_S="1")
    device = _device(mosquitto, meter)
    try:
        good = [(meter.topic, _payload(meter.device_id, 0))]
        _publish_all(device, good)  # warm up: the gateway's steady state before the bloat
        assert wait_for(lambda: len(landed(gw.landing)) == 1, 10)
        time.sleep(0.5)
        rss_before = psutil.Process(gw.proc.pid).memory_info().rss
        # 2,000 distinct 60 KB topics (the ACL's '+' lets any text through), then one with
        # a segment that is not an id
        bloated = [
            (
                f"emaas/v1/{meter.client_id}/{i:05d}{'b' * 60_000}/{meter.device_id}/telemetry",
                _payload(meter.device_id, i),
            )
            for i in range(1, 2001)
        ]
        _publish_all(device, bloated)
        odd = f"emaas/v1/{meter.client_id}/my branch/{meter.device_id}/telemetry"
        _publish_all(device, [(odd, _payload(meter.device_id, 5000))])
        assert wait_for(lambda: len(landed(gw.landing)) == 2002, 30)
        time.sleep(0.5)
        grown = psutil.Process(gw.proc.pid).memory_info().rss - rss_before
        envelopes = landed(gw.landing)
        assert _seqs(envelopes, meter.device_id) == Counter(range(2001)) + Counter([5000])
        assert max(len(e.topic) for e in envelopes) <= 256
        markers = [e.topic for e in envelopes if e.topic.startswith(BAD_TOPIC_PREFIX)]
        assert len(markers) == 2001
        assert len(set(markers)) == 2001
        assert sum(m.startswith(f"{BAD_TOPIC_PREFIX}too_long/") for m in markers) == 2000
        assert grown < 40 * 1024 * 1024, f"the gateway grew by {grown / 2**20:.0f} MiB"
        bad = 'energylake_gateway_mqtt_bad_topics_total{reason="too_long"}'
        assert _metric(gw, bad) == 2000
        assert wait_for(lambda: _audit(mosquitto, "mqtt_bad_topic"), 5)
        assert {r["device_id"] for r in _audit(mosquitto, "mqtt_bad_topic")} == {meter.device_id}
        assert gw.terminate() == 0
        # The pipeline's decoder quarantines every marker record, and only those.
        schema = DecodeSchema.from_registry(load_registry())
        for seg in sorted((gw.landing / "closed").glob("*.seg")):
            for part in iter_segment_tables(seg, 100_000):
                chunk = Chunk(envelopes=part.table)
                decode_chunk(chunk, schema, payload_limit=65536)
                rejected = dict(zip(*_reject_rows(chunk), strict=True))
                for row, topic in enumerate(part.table.column("topic").to_pylist()):
                    if topic.startswith(BAD_TOPIC_PREFIX):
                        assert rejected.get(row) == "MALFORMED_PAYLOAD", topic
                    else:
                        assert row not in rejected
    finally:
        _close(device)
        gw.kill()


def _reject_rows(chunk: Chunk) -> tuple[list[int], list[str]]:
    rejects = chunk.rejects
    return rejects[ROW].to_list(), rejects["reason_code"].to_list()


@pytest.mark.slow
def test_devices_and_tenants_provisioned_while_the_gateway_runs_are_taken_at_once(
    small_queues: Mosquitto,
) -> None:
    """A device of a known tenant is covered by its tenant's session at once; a new
    tenant's devices are covered by the shared session from the moment the gateway has
    reloaded the book until the tenant's own session (whose account the broker loads with
    the same reload as the devices') holds its filters. No readiness wait in between: the
    devices publish right after the broker's reload."""
    broker = small_queues
    fleet, registry = fleet_registry(TWO_TENANTS)
    meters = [d for d in broker.devices.values() if d.kind == "meter"]
    late_device = meters[0]  # one device of the first tenant ...
    late_tenant = next(m.client_id for m in meters if m.client_id != late_device.client_id)
    early = registry.filter(
        pc.and_(
            pc.not_equal(registry["device_id"], late_device.device_id),
            pc.not_equal(registry["client_id"], late_tenant),  # ... and a whole tenant
        )
    )
    options = BrokerOptions(
        port=broker.port,
        bind=broker.host,
        persistence_dir=broker.data_dir / "mosquitto-data",
        pid_file=broker.data_dir / "mosquitto.pid",
        max_queued_messages=QUEUE,
        sys_interval_s=1,
    )
    kept = set(early["device_id"].to_pylist())
    tokens = {d: t for d, t in fleet.tokens.items() if d in kept}
    report = provision(early, broker.folder, credentials=tokens, broker=options)
    state = SessionState(broker.folder / SESSION_STATE_FILE)
    for name in report.retired_sessions:  # the broker's fixture provisioned every tenant:
        state.mark_drained(name)  # as if a gateway had drained that tenant's session ...
    provision(early, broker.folder, credentials=tokens, broker=options)  # ... it is gone
    assert late_tenant not in "".join(read_password_file(broker.folder / PASSWORD_FILE))
    broker.reload()
    gw = _gateway(broker)
    try:
        sessions_before = {s.username for s in broker.sessions.sessions}
        first = provision(registry, broker.folder, credentials=fleet.tokens, broker=options)
        new_session = broker.session_of(meters[-1].device_id).username
        assert new_session not in sessions_before
        # the known tenant's new device gets its account at once (its tenant's filter is
        # held); the new tenant's devices wait until a gateway session holds theirs
        new_devices = {d.device_id for d in broker.devices.values() if d.client_id == late_tenant}
        assert set(first.pending) == new_devices
        assert not new_devices & set(read_password_file(broker.folder / PASSWORD_FILE))
        broker.reload()  # the new session's account
        tenant_filter = f"emaas/v1/{late_tenant}/+/+/telemetry"
        state_path = broker.folder / SESSION_STATE_FILE  # what the gateway records
        assert wait_for(lambda: tenant_filter in SessionState(state_path).held(), 10)
        second = provision(registry, broker.folder, credentials=fleet.tokens, broker=options)
        assert second.pending == ()
        broker.reload()  # the operator reloads the broker after provisioning
        late = [late_device, next(m for m in meters if m.client_id == late_tenant)]
        for device in late:  # each publishes the moment the broker lets it in
            client = _device_when_allowed(broker, device, 5)
            _publish_all(client, [(device.topic, _payload(device.device_id, 7))])
            _close(client)
        assert wait_for(
            lambda: all(7 in _seqs(landed(gw.landing), d.device_id) for d in late), 10
        ), [(d.device_id, _seqs(landed(gw.landing), d.device_id)) for d in late]
        assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.get("/readyz").body
        assert gw.terminate() == 0
    finally:
        gw.kill()
