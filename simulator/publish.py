"""Simulated telemetry published over real sockets: MQTT to the broker, HTTP to the gateway.

``Publisher`` is a ``sink`` for ``simulator.run.simulate`` (which still writes the
reference data and the truth manifest). It collects every branch's messages, then
``publish()`` sends them in reception order (received_at, then seq), paced at
``rate_per_s`` or as fast as possible:

- MQTT: one paho client per device, logged in as that device (username = device id,
  password = its token), MQTT 5 with a persistent session, QoS 1, on the device's
  canonical topic (which carries the client and branch it claims). A message counts as
  acknowledged when its PUBACK arrives with a success code; a PUBACK with a failure code
  (0x87 Not authorized: the broker's ACL pins a device to its own tenant's topics, and
  refuses a claim of another tenant's) is a refusal. (An MQTT 3.1.1 device cannot be told:
  the broker acknowledges a publish it refuses and drops it.) Payloads above
  ``max_payload_bytes`` are not sent over MQTT (the broker would drop the connection):
  they are recorded as ``not_sent``.
- HTTP: ``POST <url>/v1/telemetry`` with the device's bearer token, up to ``http_batch``
  readings per request as a JSON array, each reading carrying the client and branch it
  claims. urllib3 retries connection errors, 429 and 503 (honouring Retry-After) with
  the same body, so a retried reading keeps its ``seq`` and is deduplicated downstream.
  A 2xx acknowledges every reading of the request. Malformed or oversized payloads go
  alone, as they are.

Which transport a device uses is fixed per device (a stable hash of its id against
``http_share``). Devices unknown to the registry try anyway, with a made-up secret, and
are refused at the edge. Every message's outcome is recorded (``Delivery``) so a test can
check that everything acknowledged reached the lake.

Why urllib3: it is the HTTP client under requests and botocore (already installed),
thread-safe connection pools, and a ``Retry`` policy with status lists, Retry-After and
backoff built in -- the retry logic this publisher needs without writing it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from urllib3.util.retry import Retry

from contracts import ContractRegistry
from contracts.errors import ConfigError
from simulator.config import SimConfig
from simulator.reference import build_fleet
from simulator.run import SimResult, simulate
from simulator.stream import Message

__all__ = [
    "DELIVERIES_NAME",
    "PUBLISH_SUMMARY_NAME",
    "Delivery",
    "PublishReport",
    "PublishTargets",
    "PublishedSimulation",
    "Publisher",
    "simulate_and_publish",
]

PUBLISH_SUMMARY_NAME = "publish.json"
DELIVERIES_NAME = "deliveries.ndjson"
_WORKERS = 4


@dataclass(frozen=True, slots=True)
class PublishTargets:
    """Where and how to publish. At least one of ``mqtt`` and ``http`` is needed."""

    mqtt: tuple[str, int] | None = None
    http: str | None = None  # base URL of the gateway, e.g. http://127.0.0.1:8080
    http_share: float = 0.5  # with both: the share of devices that use HTTP
    rate_per_s: float | None = None  # messages per second overall; None = as fast as possible
    http_batch: int = 100
    http_linger_s: float = 1.0  # a device's partial batch is sent after this long
    http_retries: int = 30
    max_payload_bytes: int = 65536
    ack_timeout_s: float = 60.0  # how long to wait for the last PUBACKs and responses
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mqtt is None and self.http is None:
            raise ConfigError("give an MQTT broker, an HTTP URL, or both", setting="--mqtt/--http")
        if not 0.0 <= self.http_share <= 1.0:
            raise ConfigError(
                "http_share must be within [0, 1]", setting="--http-share", value=self.http_share
            )
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ConfigError(
                "rate_per_s must be positive (or None for as fast as possible)",
                setting="--rate",
                value=self.rate_per_s,
            )
        if not 1 <= self.http_batch <= 10_000:
            raise ConfigError(
                "http_batch must be within 1..10000", setting="--http-batch", value=self.http_batch
            )

    def transport_for(self, device_id: str) -> str:
        """``mqtt`` or ``http`` for a device: stable for its id and the share."""
        if self.http is None:
            return "mqtt"
        if self.mqtt is None:
            return "http"
        digest = hashlib.sha256(f"transport/{device_id}".encode()).digest()
        return "http" if int.from_bytes(digest[:8], "big") / 2**64 < self.http_share else "mqtt"


@dataclass(slots=True)
class Delivery:
    """One message and what became of it: acked, refused, unacked or not_sent."""

    device_id: str
    seq: int
    transport: str
    topic: str
    status: str = "unacked"
    detail: str = ""

    @property
    def acked(self) -> bool:
        return self.status == "acked"


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    payload: bytes
    received_at: float
    claims: tuple[str, str]
    raw: bool  # send alone and as is (malformed, non-finite, oversized)
    alone: bool = False  # send in a request of its own (claims another branch)
    account: str = ""  # the MQTT account (a vendor device's MQTT name or edge node)

    @property
    def username(self) -> str:
        return self.account or self.delivery.device_id


@dataclass(frozen=True, slots=True)
class PublishReport:
    deliveries: list[Delivery]
    elapsed_s: float

    @property
    def outcomes(self) -> dict[str, int]:
        counts = Counter(f"{d.transport}:{d.status}" for d in self.deliveries)
        return dict(sorted(counts.items()))

    @property
    def acked(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.acked]

    def acked_keys(self) -> set[tuple[str, int]]:
        """(device_id, seq) of every acknowledged message."""
        return {(d.device_id, d.seq) for d in self.deliveries if d.acked}

    def summary(self) -> dict[str, Any]:
        n = len(self.deliveries)
        return {
            "messages": n,
            "acked": len(self.acked),
            "outcomes": self.outcomes,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(n / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
        }

    def write(self, folder: Path) -> None:
        """``publish.json`` (summary) and ``deliveries.ndjson`` (one line per message)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PUBLISH_SUMMARY_NAME).write_text(json.dumps(self.summary(), indent=2) + "\n")
        with (folder / DELIVERIES_NAME).open("wb") as out:
            for d in self.deliveries:
                row = {
                    "device_id": d.device_id,
                    "seq": d.seq,
                    "transport": d.transport,
                    "topic": d.topic,
                    "status": d.status,
                    "detail": d.detail,
                }
                out.write(orjson.dumps(row) + b"\n")


_SESSION_EXPIRY_S = 3600


class _MqttDevice:
    """One device's paho client in its own network thread."""

    def __init__(self, device_id: str, secret: str, targets: PublishTargets) -> None:
        assert targets.mqtt is not None
        self.device_id = device_id
        self.connected = threading.Event()
        self.refused: str | None = None
        self.pending: list[tuple[_Item, mqtt.MQTTMessageInfo]] = []
        self._acked_mids: set[int] = set()  # PUBACKs of messages queued while disconnected
        self._refused_mids: dict[int, str] = {}  # PUBACKs with a failure reason code
        self._mids_lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(device_id, secret)
        self.client.reconnect_delay_set(1, 2)
        self.client.max_queued_messages_set(0)  # unbounded: the pacer bounds the rate
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        host, port = targets.mqtt
        session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        session.SessionExpiryInterval = _SESSION_EXPIRY_S  # kept across a reconnect
        self.client.connect_async(host, port, keepalive=30, clean_start=False, properties=session)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.connected.set()  # settled: the wait is over
            self.client.disconnect()
        else:
            self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._mids_lock:
            self._acked_mids.add(mid)
            if reason is not None and reason.is_failure:
                self._refused_mids[mid] = f"PUBACK {reason}"

    def _is_acked(self, info: mqtt.MQTTMessageInfo) -> bool:
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # Published while the broker was away: paho keeps it and sends it after the
            # reconnect, but is_published() raises for this rc; its PUBACK shows here.
            with self._mids_lock:
                return info.mid in self._acked_mids
        return info.is_published()

    def publish(self, item: _Item) -> None:
        if self.refused is not None:
            item.delivery.status, item.delivery.detail = "refused", self.refused
            return
        info = self.client.publish(item.delivery.topic, item.payload, qos=1)
        self.pending.append((item, info))

    def settle(self, deadline: float) -> None:
        for item, info in self.pending:
            while not self._is_acked(info) and time.monotonic() < deadline:
                if self.refused is not None:
                    break
                time.sleep(0.005)
            if self._is_acked(info):
                with self._mids_lock:
                    refused = self._refused_mids.get(info.mid)
                if refused is not None:
                    item.delivery.status, item.delivery.detail = "refused", refused
                else:
                    item.delivery.status = "acked"
            elif self.refused is not None:
                item.delivery.status, item.delivery.detail = "refused", self.refused
            else:
                item.delivery.detail = "no PUBACK before the deadline"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _HttpSender:
    """Batches per device, posted from worker threads (one per device-hash: order kept)."""

    def __init__(self, targets: PublishTargets, secrets: Mapping[str, str]) -> None:
        assert targets.http is not None
        self.url = targets.http.rstrip("/") + "/v1/telemetry"
        self.targets = targets
        self.secrets = secrets
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=_WORKERS,
            timeout=urllib3.Timeout(connect=targets.connect_timeout_s, read=30.0),
        )
        self.retry = Retry(
            total=targets.http_retries,
            connect=targets.http_retries,
            read=targets.http_retries,
            status=targets.http_retries,
            other=targets.http_retries,
            allowed_methods=None,  # POST too: a retried body keeps its seq (deduplicated)
            status_forcelist=(429, 503),
            backoff_factor=0.1,
            backoff_max=2.0,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.workers = [ThreadPoolExecutor(max_workers=1) for _ in range(_WORKERS)]
        self.futures: list[Future[None]] = []
        self.buffers: dict[str, list[_Item]] = {}
        self.opened: dict[str, float] = {}

    def add(self, item: _Item, now: float) -> None:
        device_id = item.delivery.device_id
        if item.raw or item.alone:
            self._submit(device_id, [item])  # one bad reading must not sink a batch
            return
        buffer = self.buffers.setdefault(device_id, [])
        if not buffer:
            self.opened[device_id] = now
        buffer.append(item)
        if len(buffer) >= self.targets.http_batch:
            self._submit(device_id, self.buffers.pop(device_id))

    def flush(self, now: float | None = None) -> None:
        """Send partial batches older than the linger time (all of them when ``now`` is None)."""
        for device_id in list(self.buffers):
            if now is None or now - self.opened[device_id] >= self.targets.http_linger_s:
                self._submit(device_id, self.buffers.pop(device_id))

    def _submit(self, device_id: str, items: list[_Item]) -> None:
        worker = int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16) % _WORKERS
        self.futures.append(self.workers[worker].submit(self._post, device_id, items))

    def _post(self, device_id: str, items: list[_Item]) -> None:
        if len(items) == 1 and items[0].raw:
            body = items[0].payload
        else:
            body = b"[" + b",".join(_with_claims(i) for i in items) + b"]"
        headers = {
            "Authorization": f"Bearer {self.secrets[device_id]}",
            "Content-Type": "application/json",
        }
        try:
            response = self.pool.request(
                "POST", self.url, body=body, headers=headers, retries=self.retry
            )
        except urllib3.exceptions.HTTPError as exc:
            for item in items:
                item.delivery.detail = f"{type(exc).__name__}: {exc}"[:300]
            return
        status = "acked" if 200 <= response.status < 300 else "refused"
        detail = str(response.status)
        if status == "refused":
            # RFC 9457 problem documents carry a stable reason code: keep it.
            try:
                reason = json.loads(response.data).get("reason")
            except (ValueError, AttributeError):
                reason = None
            if isinstance(reason, str):
                detail = f"{response.status} {reason}"
        for item in items:
            item.delivery.status, item.delivery.detail = status, detail

    def settle(self, deadline: float) -> None:
        self.flush()
        for future in self.futures:
            try:
                future.result(timeout=max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                break  # what did not answer stays "unacked"

    def close(self) -> None:
        for worker in self.workers:
            worker.shutdown(wait=True, cancel_futures=True)
        self.pool.clear()


def _with_claims(item: _Item) -> bytes:
    """The reading with the client and branch it claims (what a topic says over MQTT)."""
    client, branch = item.claims
    head = orjson.dumps({"client_id": client, "branch_id": branch})[:-1]
    return head + b"," + item.payload[1:]


def _unregistered_secret(device_id: str) -> str:
    return hashlib.sha256(f"energylake-sim-unregistered/{device_id}".encode()).hexdigest()


class Publisher:
    """A ``simulate`` sink that publishes everything it collected when ``publish()`` runs."""

    def __init__(
        self,
        targets: PublishTargets,
        secrets: Mapping[str, str],
        home: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """``secrets``: device id -> token; ``home``: device id -> its registered (client,
        branch), so a reading claiming another branch goes over HTTP in a request of its own.
        """
        self.targets = targets
        self.secrets = dict(secrets)
        self.home = dict(home or {})
        self.items: list[_Item] = []
        self.report: PublishReport | None = None

    def __call__(self, messages: list[Message], seed: int) -> None:
        limit = self.targets.max_payload_bytes
        for msg in messages:
            payload = msg.payload(msg.seq)
            # a vendor format has no HTTP route: its device speaks MQTT only
            vendor = msg.fmt != "canonical"
            if vendor and self.targets.mqtt is None:
                raise ConfigError(
                    f"{msg.fmt} device {msg.device_id} publishes over MQTT: give a broker",
                    setting="--mqtt",
                )
            transport = "mqtt" if vendor else self.targets.transport_for(msg.device_id)
            delivery = Delivery(msg.device_id, msg.seq, transport, msg.topic)
            claims = (msg.claim_client, msg.claim_branch)
            item = _Item(
                delivery,
                payload,
                msg.received_at,
                claims,
                raw=msg.mangle is not None or len(payload) > limit,
                alone=self.home.get(msg.device_id, claims) != claims,
                account=msg.username,
            )
            self.items.append(item)

    def publish(self) -> PublishReport:
        """Send everything in reception order; wait for the acks; return every outcome."""
        items = sorted(self.items, key=lambda i: (i.received_at, i.delivery.seq))
        secrets = {
            d: self.secrets.get(d) or _unregistered_secret(d)
            for d in {i.delivery.device_id for i in items}
        }
        # an account's secret: its own when it is a device (an edge node), else its device's
        accounts = {
            i.username: self.secrets.get(i.username) or secrets[i.delivery.device_id]
            for i in items
            if i.delivery.transport == "mqtt"
        }
        started = time.monotonic()
        mqtt_devices: dict[str, _MqttDevice] = {}
        http = _HttpSender(self.targets, secrets) if self.targets.http else None
        try:
            if self.targets.mqtt is not None:
                for account in sorted(accounts):
                    mqtt_devices[account] = _MqttDevice(account, accounts[account], self.targets)
                deadline = time.monotonic() + self.targets.connect_timeout_s
                for device in mqtt_devices.values():
                    device.connected.wait(max(0.0, deadline - time.monotonic()))
            self._send(items, mqtt_devices, http)
            deadline = time.monotonic() + self.targets.ack_timeout_s
            if http is not None:
                http.settle(deadline)
            for device in mqtt_devices.values():
                device.settle(deadline)
        finally:
            for device in mqtt_devices.values():
                device.close()
            if http is not None:
                http.close()
        self.report = PublishReport([i.delivery for i in items], time.monotonic() - started)
        return self.report

    def _send(
        self, items: list[_Item], mqtt_devices: dict[str, _MqttDevice], http: _HttpSender | None
    ) -> None:
        rate = self.targets.rate_per_s
        t0 = time.monotonic()
        for n, item in enumerate(items):
            if rate is not None:
                wait = t0 + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            now = time.monotonic()
            if item.delivery.transport == "mqtt":
                if len(item.payload) > self.targets.max_payload_bytes:
                    item.delivery.status = "not_sent"
                    item.delivery.detail = "payload above the broker's packet limit"
                else:
                    mqtt_devices[item.username].publish(item)
            elif http is not None:
                http.add(item, now)
            if http is not None and n % 256 == 0:
                http.flush(now)


@dataclass(frozen=True, slots=True)
class PublishedSimulation:
    result: SimResult
    report: PublishReport
    secrets: dict[str, str] = field(repr=False)


def simulate_and_publish(
    config: SimConfig,
    out: Path,
    targets: PublishTargets,
    registry: ContractRegistry | None = None,
) -> PublishedSimulation:
    """Simulate into ``out`` (reference data, truth manifest), then publish the telemetry.

    Writes ``out/publish.json`` and ``out/deliveries.ndjson`` (see ``PublishReport``).
    """
    fleet = build_fleet(config)  # deterministic: the same fleet simulate() builds
    home = {d.device_id: (d.client_id, d.branch_id) for d in fleet.devices}
    publisher = Publisher(targets, fleet.tokens, home)
    result = simulate(config, out, registry=registry, sink=publisher)
    report = publisher.publish()
    report.write(out)
    return PublishedSimulation(result, report, dict(fleet.tokens))
