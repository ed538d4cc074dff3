"""The simulator publishing over real sockets: MQTT to a real Mosquitto (and HTTP below)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import Mosquitto
from simulator.config import FaultRates
from simulator.publish import DELIVERIES_NAME, PUBLISH_SUMMARY_NAME, Publisher, PublishTargets
from simulator.run import MANIFEST_NAME, simulate

pytestmark = pytest.mark.timeout(120)


class _Drain:
    """The gateway's account subscribed to every device topic, QoS 1, counting messages."""

    def __init__(self, broker: Mosquitto) -> None:
        self.received: Counter[tuple[str, bytes]] = Counter()
        self.count = 0
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="drain")
        self.client.username_pw_set(broker.gateway_username, broker.gateway_password)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            assert not reason.is_failure, reason
            c.subscribe([("emaas/v1/#", 1), ("tele/#", 1)])

        def on_subscribe(*_a: Any) -> None:
            ready.set()

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.received[(msg.topic, bytes(msg.payload))] += 1
                self.count += 1

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5), "drain did not subscribe"

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_mqtt_publisher_delivers_every_acked_message_and_records_acks(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    drain = _Drain(mosquitto)
    try:
        targets = PublishTargets(mqtt=(mosquitto.host, mosquitto.port))
        publisher = Publisher(targets, mosquitto.fleet.tokens)
        result = simulate(mosquitto.sim_config, tmp_path / "sim", sink=publisher)
        report = publisher.publish()
        items = publisher.items
        # The truth manifest is written as on every other route, and covers every message.
        manifest = json.loads((tmp_path / "sim" / MANIFEST_NAME).read_text())
        assert manifest == result.manifest
        assert manifest["lines"] == len(items) == len(report.deliveries)
        registered = set(mosquitto.devices)
        expected_status = [
            "refused"
            if i.delivery.device_id not in registered
            else "not_sent"
            if len(i.payload) > targets.max_payload_bytes
            else "acked"
            for i in items
        ]
        assert [i.delivery.status for i in items] == expected_status
        # The fault profile exercises all three outcomes.
        assert set(expected_status) == {"acked", "refused", "not_sent"}
        acked = Counter((i.delivery.topic, i.payload) for i in items if i.delivery.acked)
        drain.wait_for(sum(acked.values()))
        time.sleep(0.2)  # anything extra would show up by now
        assert drain.received == acked
        assert report.acked_keys() == {
            (i.delivery.device_id, i.delivery.seq) for i in items if i.delivery.acked
        }
    finally:
        drain.close()


def test_mqtt_publisher_paces_to_the_rate_and_writes_its_report(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from simulator.publish import simulate_and_publish

    config = replace(mosquitto.sim_config, cadence_s=900)  # same fleet, fewer readings
    rate = 400.0
    out = tmp_path / "sim"
    published = simulate_and_publish(
        config, out, PublishTargets(mqtt=(mosquitto.host, mosquitto.port), rate_per_s=rate)
    )
    report = published.report
    n = len(report.deliveries)
    assert n > 200
    assert report.elapsed_s >= (n - 1) / rate
    assert report.elapsed_s < (n - 1) / rate + 5.0
    summary = json.loads((out / PUBLISH_SUMMARY_NAME).read_text())
    assert summary["messages"] == n
    assert summary["acked"] == len(report.acked) > 0
    lines = (out / DELIVERIES_NAME).read_bytes().splitlines()
    assert len(lines) == n
    assert sum(json.loads(line)["status"] == "acked" for line in lines) == summary["acked"]
    # No secret is written next to the results.
    text = (out / PUBLISH_SUMMARY_NAME).read_text() + (out / DELIVERIES_NAME).read_text()
    assert not any(token in text for token in published.secrets.values())


def test_transport_choice_is_per_device_and_stable() -> None:
    both = PublishTargets(mqtt=("127.0.0.1", 1), http="http://127.0.0.1:2", http_share=0.5)
    ids = [f"em-{i:08x}" for i in range(400)]
    picks = [both.transport_for(d) for d in ids]
    assert picks == [both.transport_for(d) for d in ids]
    assert 120 < picks.count("http") < 280
    only_mqtt = PublishTargets(mqtt=("127.0.0.1", 1))
    assert {only_mqtt.transport_for(d) for d in ids} == {"mqtt"}
    from contracts.errors import ConfigError

    with pytest.raises(ConfigError, match="MQTT broker, an HTTP URL") as caught:
        PublishTargets()
    assert caught.value.setting == "--mqtt/--http"


def test_mqtt_and_http_publishing_through_the_real_gateway_lands_everything_acked(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Half the devices over MQTT (via Mosquitto), half over HTTP, into the real gateway:
    every message the publisher saw acknowledged is in the landing log."""
    import orjson

    from tests.gateway.conftest import landed, running_gateway, wait_for

    env = {"ENERGYLAKE_GATEWAY_MQTT_PORT": str(mosquitto.port)}
    with running_gateway(mosquitto.data_dir, env=env) as gateway:
        assert wait_for(lambda: gateway.get("/readyz").status == 200, 10), gateway.log()
        targets = PublishTargets(
            mqtt=(mosquitto.host, mosquitto.port),
            http=f"http://127.0.0.1:{gateway.port}",
            http_share=0.5,
            http_batch=50,
        )
        home = {d.device_id: (d.client_id, d.branch_id) for d in mosquitto.fleet.devices}
        publisher = Publisher(targets, mosquitto.fleet.tokens, home)
        faults = FaultRates().with_overrides({"wrong_branch": 0.02})
        config = replace(mosquitto.sim_config, cadence_s=300, faults=faults)
        simulate(config, tmp_path / "sim", sink=publisher)
        report = publisher.publish()
        items = publisher.items
        by_transport = Counter(i.delivery.transport for i in items if i.delivery.acked)
        assert by_transport["mqtt"] > 0
        assert by_transport["http"] > 0
        want_mqtt = Counter(
            (i.delivery.topic, i.payload)
            for i in items
            if i.delivery.acked and i.delivery.transport == "mqtt"
        )
        want_http = {
            (i.delivery.device_id, i.delivery.seq)
            for i in items
            if i.delivery.acked and i.delivery.transport == "http"
        }

        def landed_now() -> tuple[Counter[tuple[str, bytes]], set[tuple[str, int]]]:
            envelopes = landed(gateway.landing)
            mqtt_got = Counter((e.topic, e.payload) for e in envelopes if e.source == "mqtt")
            http_got = {
                (e.identity, int(orjson.loads(e.payload)["seq"]))
                for e in envelopes
                if e.source == "http"
            }
            return mqtt_got, http_got

        def complete() -> bool:
            mqtt_got, http_got = landed_now()
            return not (want_mqtt - mqtt_got) and want_http <= http_got

        assert wait_for(complete, 30, step=0.2), gateway.log()[-2000:]
        # HTTP: a wrong-branch claim is refused with 403; an unknown device with 401.
        refused = Counter(
            i.delivery.detail
            for i in items
            if i.delivery.transport == "http" and not i.delivery.acked
        )
        # The detail is the status and the gateway's problem reason code.
        assert {d.split(" ")[0] for d in refused} <= {"400", "401", "403", "413"}
        assert all(len(d.split(" ")) == 2 for d in refused), refused
        for i in items:
            if i.delivery.transport != "http" or i.delivery.device_id not in home:
                continue
            if i.claims != home[i.delivery.device_id]:
                assert i.delivery.detail == "403 identity_mismatch"  # another branch's claim, alone
            elif not i.raw:
                assert i.delivery.acked, i.delivery  # good readings never share its fate
        assert refused["403 identity_mismatch"] > 0
        assert report.summary()["acked"] == sum(by_transport.values())


def test_simulate_publish_command(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    cfg = mosquitto.sim_config
    common = ["simulate-publish", "--clients", str(cfg.clients), "--branches", str(cfg.branches)]
    common += ["--seed", str(cfg.seed), "--cadence", "900", "--out", str(tmp_path / "sim")]
    result = CliRunner().invoke(app, [*common, "--mqtt", f"{mosquitto.host}:{mosquitto.port}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "sim" / PUBLISH_SUMMARY_NAME).read_text())
    assert f"acknowledged {summary['acked']}" in result.output
    assert summary["acked"] > 0
    assert summary["outcomes"].get("mqtt:unacked", 0) == 0
    for token in mosquitto.fleet.tokens.values():
        assert token not in result.output
    bad = CliRunner().invoke(app, [*common, "--mqtt", "no-port"])
    assert bad.exit_code == 2
    assert "HOST:PORT" in bad.output
    neither = CliRunner().invoke(app, common)
    assert neither.exit_code == 2
    assert "MQTT broker, an HTTP URL" in neither.output
