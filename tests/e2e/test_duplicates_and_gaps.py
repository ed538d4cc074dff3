"""Duplicates appear once, and seq gaps are reported (issue 4, "What proves it" 6).

- QoS 1 redelivery: the gateway reaches Mosquitto through a TCP proxy that can cut the
  gateway -> broker direction. With it cut, the gateway lands and fsyncs messages but its
  PUBACKs never arrive (a network cut after landing, before the ack). The gateway is then
  SIGKILLed and restarted; the broker resends every unacked message of the persistent
  session, so each is landed twice. The lake holds each (device_id, seq) once and the
  batch counts the duplicates.
- HTTP retries of the same seq: the same request posted again (both answered 202, so
  landed twice), and once more after the first copy is committed: one row each.
- Seq gaps: one MQTT device skips three seqs and one HTTP device two; ``energylake status
  --json`` reports exactly those, and its ``--metrics`` textfile carries them.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable

import orjson
import polars as pl
import pytest

from devstack.gateway import HOST, wait_for
from pipelines.process import ingest_stats
from simulator.stream import Message
from tests.e2e.conftest import ENERGYLAKE, World, close_client, device_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


class AckCutProxy:
    """A TCP proxy to the broker; ``cut()`` drops everything the gateway sends from then
    on (its PUBACKs) on the connections open now, while broker -> gateway still flows."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self._cut: set[int] = set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = {id(down) for down, _ in self._pairs}

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((HOST, self.target_port))
            with self._lock:
                self._pairs.append((down, up))
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and id(src) in self._cut:
                    continue  # the gateway's bytes (PUBACKs) vanish
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for pair in self._pairs:
                for s in pair:
                    with contextlib.suppress(OSError):
                        s.close()


def _by_device(messages: list[Message]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for m in messages:
        out.setdefault(m.device_id, []).append(m)
    return {d: sorted(ms, key=lambda m: m.seq) for d, ms in out.items()}


def _lake_count(w: World) -> Counter[tuple[str, int]]:
    lake = w.readings(["device_id", "seq"])
    return Counter((str(d), int(s)) for d, s in lake.select("device_id", "seq").iter_rows())


def _duplicates(w: World) -> int:
    return sum(n for kind, *_, n in ingest_stats(w.settings) if kind == "duplicates")


def test_qos1_redelivery_after_a_lost_ack_lands_twice_and_is_in_the_lake_once(
    world: Callable[..., World],
) -> None:
    w = world()
    proxy = AckCutProxy(w.broker.port)
    w.gateway_env["ENERGYLAKE_GATEWAY_MQTT_PORT"] = str(proxy.port)
    meter = w.device("meter")
    msgs = _by_device(w.messages())[meter.device_id][:100]
    first, second = msgs[:50], msgs[50:]
    client = device_client(w.broker, meter)
    try:
        w.start_gateway()
        for m in first:
            client.publish(meter.topic, m.payload(0), qos=1).wait_for_publish(5)
        want_first = {(meter.device_id, m.seq) for m in first}
        assert wait_for(lambda: want_first <= set(w.landed_keys("mqtt")), 10)
        gw = w.gateway
        assert gw is not None
        acked = 'energylake_gateway_accepted_records_total{source="mqtt"} 50.0'
        assert wait_for(lambda: acked in gw.get("/metrics").body.decode(), 10)
        time.sleep(0.5)  # paho's network thread sends the PUBACKs; the broker takes them
        proxy.cut()  # from now on the gateway's PUBACKs do not reach the broker
        for m in second:
            client.publish(meter.topic, m.payload(0), qos=1).wait_for_publish(5)
        want_second = {(meter.device_id, m.seq) for m in second}
        assert wait_for(lambda: want_second <= set(w.landed_keys("mqtt")), 10)
        w.kill_gateway()  # landed and fsynced, never acked as far as the broker knows
        w.start_gateway()
        assert wait_for(
            lambda: all(Counter(w.landed_keys("mqtt"))[k] == 2 for k in want_second), 15
        ), "the broker did not redeliver the unacked messages"
        twice = Counter(w.landed_keys("mqtt"))
        redelivered = sum(1 for k in want_second if twice[k] == 2)
        assert all(twice[k] == 1 for k in want_first)  # acked: never sent again
        assert w.gateway is not None
        assert w.gateway.terminate() == 0
    finally:
        close_client(client)
        proxy.close()
    w.process_all()
    lake = _lake_count(w)
    assert {k: lake[k] for k in want_first | want_second} == dict.fromkeys(
        want_first | want_second, 1
    )
    assert _duplicates(w) == redelivered == len(second)
    print(f"\nQoS 1 redelivery: {redelivered} messages landed twice, once each in the lake")


def test_http_retries_of_the_same_seq_appear_once(world: Callable[..., World]) -> None:
    w = world()
    meter = w.device("meter")
    msgs = _by_device(w.messages())[meter.device_id][:40]
    body = b"[" + b",".join(m.payload(0) for m in msgs[:30]) + b"]"
    gw = w.start_gateway()
    for _ in range(2):  # a client that did not see the first answer posts it again
        reply = gw.post(body, meter.token)
        assert reply.status == 202, reply.body
        assert reply.json()["accepted"] == 30
    assert gw.terminate() == 0
    w.process_all()
    assert _duplicates(w) == 30
    # Again after the first copies are committed: deduplicated against the lake, and the
    # new readings (seq 30..39) still go in.
    gw = w.start_gateway()
    again = b"[" + b",".join(m.payload(0) for m in msgs[20:]) + b"]"
    assert gw.post(again, meter.token).status == 202
    assert gw.terminate() == 0
    w.process_all()
    lake = _lake_count(w)
    keys = {(meter.device_id, m.seq) for m in msgs}
    assert {k: lake[k] for k in keys} == dict.fromkeys(keys, 1)
    assert sum(lake.values()) == len(keys)
    assert _duplicates(w) == 30 + 10


def test_seq_gaps_are_reported_by_status_and_its_metrics(world: Callable[..., World]) -> None:
    """Dropped seqs are missing; quarantined ones (one with its seq readable, one not) are
    not; a restart of the numbering is a restart, not a gap."""
    w = world()
    devices = _by_device(w.messages())
    meter, solar = w.device("meter"), w.device("solar")
    dropped = {meter.device_id: {10, 11, 12}, solar.device_id: {20, 21}}
    gw = w.start_gateway()
    client = device_client(w.broker, meter)
    sent: dict[str, list[int]] = {}
    try:
        for device in (meter, solar):
            msgs = devices[device.device_id][:40]
            keep = [m for k, m in enumerate(msgs) if k not in dropped[device.device_id]]
            sent[device.device_id] = [m.seq for m in keep]
            if device is meter:  # over MQTT
                for m in keep:
                    payload = m.payload(0)
                    if m is msgs[30]:  # quarantined (OUT_OF_RANGE), its seq readable
                        reading = orjson.loads(payload)
                        reading["readings"]["voltage_l1_v"] = 999.0
                        payload = orjson.dumps(reading)
                    elif m is msgs[31]:  # quarantined (MALFORMED_PAYLOAD), no seq to read
                        payload = payload[: len(payload) // 2]
                    client.publish(meter.topic, payload, qos=1).wait_for_publish(5)
                # then it reboots: readings 40.. numbered from 0 again
                for k, m in enumerate(devices[meter.device_id][40:50]):
                    reading = orjson.loads(m.payload(0)) | {"seq": k}
                    client.publish(meter.topic, orjson.dumps(reading), qos=1).wait_for_publish(5)
            else:  # over HTTP
                body = b"[" + b",".join(m.payload(0) for m in keep) + b"]"
                assert gw.post(body, solar.token).status == 202
        sent[meter.device_id] = [
            s
            for s in sent[meter.device_id]
            if s
            not in (
                devices[meter.device_id][30].seq,
                devices[meter.device_id][31].seq,
            )
        ] + list(range(10))
        want = {(d, s) for d, seqs in sent.items() for s in seqs}
        assert wait_for(lambda: want <= set(w.landed_keys()), 10)
    finally:
        close_client(client)
    assert gw.terminate() == 0
    w.process_all()
    prom = w.work / "metrics" / "energylake.prom"
    result = subprocess.run(
        [
            str(ENERGYLAKE),
            "status",
            "--json",
            "--hours",
            "96",
            "--metrics",
            str(prom),
            "--data-dir",
            str(w.data_dir),
        ],
        capture_output=True,
        cwd=w.work,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr.decode()  # 1: messages are missing
    status = json.loads(result.stdout)
    missing = {g["device_id"]: g["missing"] for g in status["gaps"]}
    assert missing == {meter.device_id: 3, solar.device_id: 2}
    assert status["missing_total"] == 5
    assert status["devices_with_gaps"] == 2
    assert status["quarantined_total"] == 1
    assert status["unreadable_total"] == 1
    assert status["restarts_total"] == 1  # the meter's reboot
    text = prom.read_text()
    assert re.search(r'energylake_seq_missing\{pipeline="main"\} 5\.0', text), text
    for device_id, n in missing.items():
        line = re.search(
            rf"energylake_seq_missing_by_device\{{[^}}]*device_id=\"{device_id}\"[^}}]*\}} (\S+)",
            text,
        )
        assert line is not None, text
        assert float(line.group(1)) == n
    lake = w.readings(["device_id", "seq"])
    for device_id, seqs in sent.items():
        held = sorted(lake.filter(pl.col("device_id") == device_id)["seq"].to_list())
        assert held == sorted(seqs)
