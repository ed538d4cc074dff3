"""The gateway's MQTT sessions against a real Mosquitto: no window in which the broker
acknowledges a message that no gateway session is subscribed to.

A tenant's session subscribes the tenant's whole topic space and one shared session the
tenant-less topics, so a device provisioned while the gateway is away is covered the
moment the broker lets it in; a change of the session book (an upgrade, a tenant removed)
subscribes the new sessions before the old ones let go, and a retired session drains
before its account is removed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipelines.provision import BrokerOptions, provision
from simulator.config import SimConfig
from tests.brokers import Mosquitto, fleet_registry, start_mosquitto
from tests.gateway.conftest import landed, wait_for
from tests.gateway.test_mqtt_hardening import (
    _close,
    _device,
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
