"""End-to-end worlds: a real Mosquitto, the real gateway and ``energylake process`` into Delta.

``world(config)`` builds one: the simulated fleet of ``config`` provisioned into a
Mosquitto running the production config (devstack/mosquitto.py), the fleet's reference data
loaded into a lake on local disk, and helpers to start / SIGKILL the gateway
(``python -m cli gateway``, tests/gateway/conftest.py) and the processor
(``energylake process --follow``) as subprocesses, to run ``process`` to the end in this
process, and to read what the lake holds. Everything started is ended by its PID.

Event times: the simulator's day is ``recent_day()`` (yesterday in Asia/Kolkata), so
readings are within the pipeline's 7-day window of the gateway's reception time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
import polars as pl
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from analytics.queries import read_frame
from contracts import load_registry
from devstack.gateway import GatewayProc, free_port, landed, start_gateway, wait_for
from devstack.mosquitto import DeviceAccount, Mosquitto, start_mosquitto
from lake.layout import UNASSIGNED_TENANT, tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import BatchReport, process_once
from pipelines.settings import Settings, load_settings
from simulator.config import FaultRates, SimConfig
from simulator.run import simulate
from simulator.stream import Message

READINGS = load_registry().readings_datasets

__all__ = [
    "ENERGYLAKE",
    "World",
    "close_client",
    "connack",
    "device_client",
    "e2e_config",
    "recent_day",
    "worlds",
]

ENERGYLAKE = Path(sys.executable).with_name("energylake")


def recent_day() -> date:
    """Yesterday in Asia/Kolkata (the simulator's local day): a day that ended recently."""
    return datetime.now(ZoneInfo("Asia/Kolkata")).date() - timedelta(days=1)


def device_client(broker: Mosquitto, device: DeviceAccount) -> mqtt.Client:
    """A connected paho client logged in as ``device`` (QoS 1 publishes, own thread)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device.username, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device.username, device.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def close_client(client: mqtt.Client) -> None:
    with contextlib.suppress(Exception):
        client.disconnect()
        client.loop_stop()


def connack(broker: Mosquitto, username: str | None, password: str | None) -> str:
    """Connect and return the CONNACK's reason ("Success" or the refusal)."""
    got: list[str] = []
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{username}", protocol=mqtt.MQTTv311
    )
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        got.append(str(reason))
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(5), "no CONNACK"
    finally:
        close_client(client)
    return got[0]


@dataclass
class World:
    """A broker, a lake with the fleet's reference data, and the gateway / processor."""

    broker: Mosquitto
    config: SimConfig
    settings: Settings
    work: Path
    gateway_env: dict[str, str]
    http_port: int = field(default_factory=free_port)  # fixed: devices keep one URL
    gateway: GatewayProc | None = None
    processor: subprocess.Popen[bytes] | None = None
    processor_logs: list[Path] = field(default_factory=list)
    gateway_starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def store(self) -> Store:
        return Store.from_uri(self.settings.lake)

    @property
    def landing(self) -> Path:
        return self.settings.landing

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sim_dir(self) -> Path:
        return self.work / "sim"

    # -- the fleet's messages -----------------------------------------------------------
    def messages(self, config: SimConfig | None = None) -> list[Message]:
        """Every message the simulator sends for ``config`` (default: the world's),
        in delivery order; also (re)writes the reference data under ``sim_dir``."""
        got: list[Message] = []
        simulate(config or self.config, self.sim_dir, sink=lambda msgs, _seed: got.extend(msgs))
        return sorted(got, key=lambda m: (m.received_at, m.seq))

    def device(self, kind: str, n: int = 0) -> DeviceAccount:
        return [d for d in self.broker.devices.values() if d.kind == kind][n]

    # -- gateway ------------------------------------------------------------------------
    def start_gateway(self, *, ready: bool = True) -> GatewayProc:
        """Start ``energylake gateway`` (as systemd would restart it) and wait for /readyz."""
        self.gateway = start_gateway(self.data_dir, self.gateway_env, port=self.http_port)
        self.gateway_starts += 1
        if ready:
            gw = self.gateway
            ok = wait_for(lambda: gw.get("/readyz").status == 200, 20, 0.05)
            assert ok, f"gateway not ready: {gw.get('/readyz').body!r}\n{gw.log()[-2000:]}"
        return self.gateway

    def kill_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.kill()

    def landed_keys(self, source: str | None = None) -> list[tuple[str, int]]:
        """(identity, seq) of every landed record whose payload has an integer seq."""
        out = []
        for env in landed(self.landing):
            if source is not None and env.source != source:
                continue
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                seq = orjson.loads(env.payload)["seq"]
                if isinstance(seq, int):
                    out.append((env.identity, seq))
        return out

    # -- processor ------------------------------------------------------------------------
    def start_processor(self) -> subprocess.Popen[bytes]:
        """``energylake process --follow`` as a subprocess (its own session)."""
        log_path = self.work / f"process-{len(self.processor_logs)}.log"
        self.processor_logs.append(log_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
        env["ENERGYLAKE_FOLLOW_INTERVAL_S"] = "0.3"
        with log_path.open("wb") as log:
            self.processor = subprocess.Popen(
                [str(ENERGYLAKE), "process", "--follow", "--data-dir", str(self.data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work,
                start_new_session=True,
            )
        return self.processor

    def kill_processor(self) -> None:
        proc = self.processor
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def stop_processor(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (finish the batch in hand, exit); the exit code."""
        proc = self.processor
        if proc is None:
            return None
        # it says when it follows (its signal handlers are in place from before that line);
        # a SIGTERM while the interpreter itself is starting would be the default action's
        log = self.processor_logs[-1]
        wait_for(lambda: proc.poll() is not None or b"following " in log.read_bytes(), 60, 0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def processor_log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.processor_logs)

    def process_all(self) -> list[BatchReport]:
        """``energylake process`` until nothing is left (in this process)."""
        reports = []
        while (report := process_once(self.settings)) is not None:
            reports.append(report)
        return reports

    def closed_segments(self) -> list[Path]:
        return sorted((self.landing / "closed").glob("*.seg"))

    def open_segments(self) -> list[Path]:
        return sorted((self.landing / "open").glob("*.seg"))

    # -- the lake ---------------------------------------------------------------------
    def readings(self, columns: list[str] | None = None) -> pl.DataFrame:
        """Every readings row of every tenant (with a ``dataset`` column)."""
        cols = columns or ["device_id", "seq"]
        frames = [
            read_frame(self.store, t, d, cols).with_columns(pl.lit(d).alias("dataset"))
            for t in tenants(self.store)
            for d in READINGS
        ]
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema={**dict.fromkeys(cols, pl.String), "dataset": pl.String})
        return pl.concat(frames, how="diagonal_relaxed")

    def quarantine(self) -> pl.DataFrame:
        cols = ["identity", "device_id", "seq", "reason_code", "source", "topic", "detail"]
        cols += ["payload_sha256", "claimed_device_id", "claimed_device_sha256"]
        frames = [
            read_frame(self.store, t, "quarantine", cols)
            for t in [*tenants(self.store), UNASSIGNED_TENANT]
        ]
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema=dict.fromkeys(cols, pl.String))
        return pl.concat(frames, how="diagonal_relaxed")

    def close(self) -> None:
        self.kill_gateway()
        self.kill_processor()
        self.broker.close()


def e2e_config(**overrides: Any) -> SimConfig:
    """The devstack/mosquitto.py fleet (1 client x 2 branches, 5 devices) on a recent day."""
    base = SimConfig(clients=1, branches=2, days=1, seed=7, faults=FaultRates.none())
    return replace(base, start=recent_day(), **overrides)


@contextlib.contextmanager
def worlds(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., World]]:
    """``make(config, **gateway_env)`` builds a world under ``tmp``; all are closed after."""
    for name in list(os.environ):
        if name.startswith("ENERGYLAKE_"):
            monkeypatch.delenv(name)
    work = tmp / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no ./energylake.toml: only our settings count
    made: list[World] = []

    def make(config: SimConfig | None = None, **gateway_env: str) -> World:
        config = config or e2e_config()
        data_dir = tmp / "data"
        broker = start_mosquitto(data_dir / "gateway", sim_config=config)
        settings = load_settings(data_dir=data_dir)
        env = {
            "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
            "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
            **gateway_env,
        }
        w = World(broker, config, settings, work, env)
        made.append(w)
        # the fleet's reference data in the lake: `energylake reference load`'s work
        simulate(config, w.sim_dir, sink=lambda _m, _s: None)
        load_reference(w.store, w.sim_dir / "reference", load_registry())
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., World]]:
    """``world(config, **gateway_env)``: a fresh world for ``config`` (see the module doc)."""
    with worlds(tmp_path, monkeypatch) as make:
        yield make
