"""Encryption in transit (issue 12, point 20): the gateway over HTTPS and a device over
MQTT-TLS through a real Mosquitto running the shipped config, with a CA and server
certificate this test makes; plain text is refused where TLS is configured.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from cli.app import app
from contracts import load_registry
from devstack.mosquitto import DeviceAccount, Mosquitto, start_mosquitto
from gateway.provisioning import ProvisionError
from lake.reference import load_reference
from lake.storage import Store
from simulator.config import SimConfig
from simulator.reference import build_fleet
from simulator.run import write_reference
from tests.gateway.conftest import HOST, landed, request, start_gateway, wait_for

pytestmark = pytest.mark.integration


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost: (ca, cert, key) PEM paths."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("energylake test CA"))
        .issuer_name(_name("energylake test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def _mqtt_connects(
    broker: Mosquitto, device: DeviceAccount, port: int, context: ssl.SSLContext | None
) -> tuple[bool, mqtt.Client]:
    """(True, client) when the broker accepts the login on ``port`` within 5 s."""
    ok, over = threading.Event(), threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device.username, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device.username, device.password)
    if context is not None:
        client.tls_set_context(context)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            ok.set()
        over.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_: over.set()  # the broker hung up: no CONNACK
    try:
        client.connect(broker.host, port)
    except (OSError, ssl.SSLError):
        return False, client
    client.loop_start()
    over.wait(5)
    return ok.is_set(), client


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.mark.slow
def test_https_and_mqtt_tls_carry_readings_and_plain_text_is_refused(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path / "pki")
    broker = start_mosquitto(tmp_path / "data" / "gateway", tls=(cert, key))
    try:
        assert broker.tls_port is not None
        conf = broker.conf_path.read_text()
        assert f"\nlistener {broker.tls_port} {HOST}\n" in conf  # rendered live
        assert f"\ncertfile {cert.resolve()}\n" in conf
        trust = ssl.create_default_context(cafile=str(ca))
        gw = start_gateway(
            broker.data_dir,
            {
                # the gateway's own MQTT connection stays on the plain loopback listener
                "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
                "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
                "ENERGYLAKE_GATEWAY_HTTP_TLS_CERT": str(cert),
                "ENERGYLAKE_GATEWAY_HTTP_TLS_KEY": str(key),
                "ENERGYLAKE_GATEWAY_HTTP_IDLE_TIMEOUT_S": "1",
            },
            ssl_context=trust,
        )
        try:
            assert wait_for(lambda: gw.get("/readyz").status == 200, 15), gw.log()[-2000:]
            assert "gateway ready: http=https://" in gw.log()
            meter, other, third = list(broker.devices.values())[:3]

            # a device over MQTT-TLS, through the broker, into the landing log
            connected, client = _mqtt_connects(broker, meter, broker.tls_port, trust)
            assert connected, broker.log()[-2000:]
            try:
                for seq in range(1, 6):
                    payload = orjson.dumps(
                        {"device_id": meter.device_id, "seq": seq, "ts": 1, "readings": {}}
                    )
                    client.publish(meter.topic, payload, qos=1).wait_for_publish(5)
            finally:
                _close(client)

            def mqtt_seqs() -> list[int]:
                return sorted(
                    orjson.loads(e.payload)["seq"]
                    for e in landed(gw.landing)
                    if e.identity == meter.device_id and e.source == "mqtt"
                )

            assert wait_for(lambda: mqtt_seqs() == [1, 2, 3, 4, 5], 10), mqtt_seqs()

            # a device over HTTPS
            body = orjson.dumps({"device_id": other.device_id, "seq": 1, "ts": 1, "readings": {}})
            reply = gw.post(body, other.token)
            assert reply.status == 202, reply.body

            # plain HTTP to the TLS port: no answer, nothing landed
            with pytest.raises((http.client.HTTPException, OSError)):
                request(
                    gw.port,
                    "POST",
                    "/v1/telemetry",
                    orjson.dumps({"device_id": third.device_id, "seq": 1, "ts": 1}),
                    {"Authorization": f"Bearer {third.token}", "Content-Type": "application/json"},
                    timeout_s=5,
                )
            # HTTPS with a certificate the client does not trust fails its check
            with pytest.raises(ssl.SSLCertVerificationError):
                request(gw.port, "GET", "/healthz", ssl_context=ssl.create_default_context())
            # plain MQTT to the TLS listener: no session
            connected, client = _mqtt_connects(broker, third, broker.tls_port, None)
            _close(client)
            assert not connected
            # a connection that never starts its handshake is closed after the idle timeout
            with socket.create_connection((HOST, gw.port), timeout=5) as silent:
                started = time.monotonic()
                assert silent.recv(100) == b""
                assert time.monotonic() - started < 4
            assert gw.get("/healthz").status == 200  # the refusals cost the gateway nothing
            assert not [e for e in landed(gw.landing) if e.identity == third.device_id]
            assert gw.terminate() == 0
        finally:
            gw.kill()
        https = [e for e in landed(gw.landing) if e.source == "http"]
        assert [e.identity for e in https] == [other.device_id]
    finally:
        broker.close()


def test_provision_renders_the_tls_listener_commented_out_without_certificates(
    tmp_path: Path,
) -> None:
    broker = start_mosquitto(tmp_path / "data" / "gateway")  # the default: plain only
    try:
        conf = broker.conf_path.read_text()
        assert "\n#listener 8883 0.0.0.0\n" in conf
        assert "\n#certfile /etc/mosquitto/certs/server.crt\n" in conf
        assert "@@" not in conf
        assert broker.tls_port is None
    finally:
        broker.close()


def test_devices_provision_renders_the_tls_listener_from_its_flags(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    registry = load_registry()
    fleet = build_fleet(SimConfig(clients=1, branches=1, seed=3))
    write_reference(fleet, registry, tmp_path / "ref")
    load_reference(Store.from_uri(data_dir / "lake"), tmp_path / "ref", registry)
    _, cert, key = make_pki(tmp_path / "pki")
    base = ["devices", "provision", "--data-dir", str(data_dir)]
    half = CliRunner().invoke(app, [*base, "--tls-cert", str(cert)])
    assert half.exit_code == ProvisionError.exit_code
    assert "give both --tls-cert and --tls-key" in " ".join(half.output.split())
    done = CliRunner().invoke(
        app, [*base, "--tls-cert", str(cert), "--tls-key", str(key), "--tls-port", "18883"]
    )
    assert done.exit_code == 0, done.output
    conf = (data_dir / "gateway" / "mosquitto.conf").read_text()
    assert "\nlistener 18883 0.0.0.0\n" in conf
    assert f"\nkeyfile {key.resolve()}\n" in conf
    assert "\ntls_version tlsv1.2\n" in conf
    assert "\nlistener 1883 127.0.0.1\n" in conf  # the plain one stays on loopback
