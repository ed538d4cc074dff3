"""Benchmark: the gateway's ingest against baselines measured in the same run.

1. MQTT drain. A real Mosquitto with the production config (provisioned like the tests do)
   holds a backlog of ``--messages`` QoS 1 messages for the gateway's persistent session.
   Baseline: a plain paho subscriber (auto-ack, no disk) drains it. Then the same backlog
   again, drained by ``energylake gateway`` (fsync before every ack). Rates are counted from
   the first message to the last, so process start-up is not in either figure.
2. HTTP ingest. Readings/s with batches of ``--batch`` readings, ``--concurrency`` keep-alive
   connections from an aiohttp client. Baseline: a bare aiohttp server that reads the body
   and answers 202 (no parsing, no disk): the ceiling of the stack on this machine.

The gateway's MQTT rate comes from the arrival stamps it lands (``received_at_us``, taken in
its ``on_message``, as the plain subscriber stamps its own): first to last message.

It prints msg/s, readings/s, the ratios (issue 4's goal for MQTT: at least 0.9) and the
gateway's peak RSS.

The two sides take turns ``--repeat`` times (the machine is shared and noisy); every run is
printed, and the best of each side.

    .venv/bin/python -m bench.ingest [--messages 100000 --batch 100 --seconds 5 --repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psutil
from aiohttp import ClientSession, TCPConnector, web
from paho.mqtt.enums import CallbackAPIVersion

from devstack.gateway import make_book
from devstack.mosquitto import DeviceAccount, Mosquitto, start_mosquitto
from devstack.stack import free_port
from landing.reader import read_segment


def _client(broker: Mosquitto, user: str, password: str, *, clean: bool = True) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=user, clean_session=clean, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _meter(broker: Mosquitto) -> DeviceAccount:
    return next(d for d in broker.devices.values() if d.kind == "meter")


def _account(broker: Mosquitto) -> str:
    """The gateway session (one per tenant) that takes the backlog device's topics."""
    return broker.session_of(_meter(broker).device_id).username


def _session(broker: Mosquitto) -> None:
    """Create the gateway's persistent session with its subscription, then leave."""
    client = _client(broker, _account(broker), broker.gateway_password, clean=False)
    client.connect(broker.host, broker.port)
    client.loop_start()
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    # the tenant's filter, as the gateway subscribes it
    client.subscribe(f"emaas/v1/{_meter(broker).client_id}/+/+/telemetry", qos=1)
    done.wait(5)
    client.disconnect()
    client.loop_stop()


def _backlog(broker: Mosquitto, count: int) -> None:
    device = _meter(broker)
    client = _client(broker, device.username, device.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    # MQTT message ids are 16 bits: never have more than 20,000 unacknowledged (paho refuses
    # a publish whose id is still in flight with ERR_QUEUE_SIZE)
    window: deque[mqtt.MQTTMessageInfo] = deque()
    for seq in range(count):
        body = {
            "device_id": device.device_id,
            "seq": seq,
            "ts": 1_795_000_000_000_000 + seq,
            "readings": {"power_kw": 1.25, "voltage_l1_v": 230.5, "energy_import_kwh": 1e4},
        }
        window.append(client.publish(device.topic, orjson.dumps(body), qos=1))
        if len(window) > 20_000:
            window.popleft().wait_for_publish(120)
    for info in window:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def _plain_drain(broker: Mosquitto, count: int) -> float:
    stamps: list[float] = []
    done = threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) >= count:
            done.set()

    client = _client(broker, _account(broker), broker.gateway_password, clean=False)
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    done.wait(300)
    client.disconnect()
    client.loop_stop()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _start_gateway(data: Path, env: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    full |= {"ENERGYLAKE_DATA_DIR": str(data), "ENERGYLAKE_GATEWAY_MIN_FREE_BYTES": "0", **env}
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "cli", "gateway", *args],
        env=full,
        cwd=data,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class _PeakRss:
    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def _landed_rate(landing: Path, count: int) -> float:
    """Messages/s the gateway took in, from the arrival stamps it landed (its on_message
    clock, as the plain subscriber's is): first to last of the ``count`` MQTT records."""
    stamps: list[int] = []
    for path in sorted((landing / "closed").glob("*.seg")):
        records = read_segment(path)
        pairs = zip(records.received_at_us.tolist(), records.source, strict=True)
        stamps.extend(t for t, src in pairs if src == "mqtt")
        path.unlink()  # the next repeat starts from an empty landing log
    if len(stamps) < count:
        raise RuntimeError(f"the gateway landed {len(stamps)} of {count} messages")
    stamps.sort()
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e6)


def _gateway_drain(broker: Mosquitto, count: int) -> tuple[float, int]:
    port = free_port()
    env = {
        "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
        "ENERGYLAKE_GATEWAY_HTTP_PORT": str(port),
    }
    proc = _start_gateway(broker.data_dir, env, [])
    rss = _PeakRss(proc.pid)
    name = 'energylake_gateway_accepted_records_total{source="mqtt"}'
    got = 0.0
    deadline = time.monotonic() + 300
    # a light poll (5 per second): the count only says when to stop; the rate comes from
    # the landed arrival stamps, so scraping /metrics does not load the gateway much
    while time.monotonic() < deadline and got < count:
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            got = _metric(port, name)
    _stop(proc)
    peak = rss.stop()
    return _landed_rate(broker.data_dir / "landing", count), peak


async def _http_load(
    port: int,
    bodies: list[bytes],
    headers: list[dict[str, str]],
    seconds: float,
    concurrency: int,
    batch: int,
) -> float:
    sent = 0
    async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:
        stop_at = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal sent
            while time.perf_counter() < stop_at:
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/telemetry",
                    data=bodies[i % len(bodies)],
                    headers=headers[i % len(headers)],
                ) as r:
                    await r.read()
                    if r.status != 202:
                        raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
                sent += batch

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return sent / (time.perf_counter() - started)


def _bare_server(port: int) -> Callable[[], None]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=b'{"accepted":100}', content_type="application/json")

    ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=16 << 20)
        app.router.add_post("/v1/telemetry", handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        holder["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return stop


def _http_bench(tmp: Path, batch: int, seconds: float, concurrency: int) -> dict[str, float]:
    devices = [(f"m-{i}", "c-1", "b-1") for i in range(concurrency)]
    data = tmp / "http"
    tokens = make_book(data / "gateway" / "identities.json", devices)
    bodies = [
        orjson.dumps(
            [
                {
                    "device_id": d,
                    "seq": s,
                    "ts": 1_795_000_000_000_000 + s,
                    "readings": {"power_kw": 1.25, "voltage_l1_v": 230.5},
                }
                for s in range(batch)
            ]
        )
        for d, _, _ in devices
    ]
    headers = [
        {"Authorization": f"Bearer {tokens[d]}", "Content-Type": "application/json"}
        for d, _, _ in devices
    ]
    port = free_port()
    stop = _bare_server(port)
    # the load generator runs in its own process so it does not share our GIL
    baseline = _run_load(port, bodies, headers, seconds, concurrency, batch)
    stop()
    port = free_port()
    proc = _start_gateway(
        data,
        {
            "ENERGYLAKE_GATEWAY_HTTP_PORT": str(port),
            "ENERGYLAKE_GATEWAY_HTTP_RATE_PER_S": "1000000",
            "ENERGYLAKE_GATEWAY_HTTP_BURST": "1000000",
        },
        ["--no-mqtt"],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    rss = _PeakRss(proc.pid)
    ours = _run_load(port, bodies, headers, seconds, concurrency, batch)
    _stop(proc)
    return {"baseline": baseline, "gateway": ours, "peak_rss": float(rss.stop())}


def _run_load(
    port: int,
    bodies: list[bytes],
    headers: list[dict[str, str]],
    seconds: float,
    concurrency: int,
    batch: int,
) -> float:
    spec = json.dumps(
        {
            "port": port,
            "bodies": [b.decode() for b in bodies],
            "headers": headers,
            "seconds": seconds,
            "concurrency": concurrency,
            "batch": batch,
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--load-worker"],
        input=spec,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def _load_worker() -> None:
    spec = json.loads(sys.stdin.read())
    rate = asyncio.run(
        _http_load(
            spec["port"],
            [b.encode() for b in spec["bodies"]],
            spec["headers"],
            spec["seconds"],
            spec["concurrency"],
            spec["batch"],
        )
    )
    print(f"{rate:.1f}")


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="drains / loads of each side")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        _load_worker()
        return
    plain: list[float] = []
    ours: list[float] = []
    mqtt_rss = 0
    https: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        broker = start_mosquitto(tmp / "data" / "gateway")
        try:
            _session(broker)
            for _ in range(args.repeat):  # the two sides take turns
                _backlog(broker, args.messages)
                plain.append(_plain_drain(broker, args.messages))
                _backlog(broker, args.messages)
                rate, rss = _gateway_drain(broker, args.messages)
                ours.append(rate)
                mqtt_rss = max(mqtt_rss, rss)
        finally:
            broker.close()
        for i in range(args.repeat):
            https.append(_http_bench(tmp / f"http-{i}", args.batch, args.seconds, args.concurrency))
    bare = [h["baseline"] for h in https]
    gw = [h["gateway"] for h in https]
    http_rss = max(h["peak_rss"] for h in https)
    now = datetime.now(UTC)
    print(
        f"bench.ingest  {now:%Y-%m-%d %H:%M} UTC  {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, paho-mqtt {version('paho-mqtt')}, "
        f"aiohttp {version('aiohttp')}"
    )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"command: .venv/bin/python -m bench.ingest --messages {args.messages} "
        f"--batch {args.batch} --seconds {args.seconds:g} --concurrency {args.concurrency} "
        f"--repeat {args.repeat}"
    )
    print(f"MQTT drain of a {args.messages:,} QoS 1 message backlog (production Mosquitto config),")
    print("rates from the first message received to the last; best of each side, then every run:")
    print(
        f"  plain paho subscriber, auto-ack, no disk : {max(plain):10,.0f} msg/s  ({_fmt(plain)})"
    )
    print(f"  energylake gateway, fsync before ack     : {max(ours):10,.0f} msg/s  ({_fmt(ours)})")
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    print(
        f"  ratio gateway / plain (best / best)      : {max(ours) / max(plain):10.2f}  "
        f"(each turn: {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.9)"
    )
    print(f"  gateway peak RSS                         : {mqtt_rss / 2**20:10.0f} MiB")
    print(
        f"HTTP ingest, batches of {args.batch}, {args.concurrency} keep-alive connections, "
        f"{args.seconds:g} s each:"
    )
    print(
        f"  bare aiohttp (read body, 202)            : {max(bare):10,.0f} readings/s  "
        f"({_fmt(bare)})"
    )
    print(f"  energylake gateway (parse, check, fsync) : {max(gw):10,.0f} readings/s  ({_fmt(gw)})")
    print(f"  ratio gateway / bare (best / best)       : {max(gw) / max(bare):10.2f}")
    print(f"  gateway peak RSS                         : {http_rss / 2**20:10.0f} MiB")


if __name__ == "__main__":
    main()
