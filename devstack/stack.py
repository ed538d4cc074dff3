"""A private one-machine deployment: Mosquitto with the production config, and
``energylake run`` (the gateway and ``process --follow``), for the demo and the benchmarks.

Everything it starts it ends by PID: the broker with SIGTERM (a graceful stop keeps its
persistent sessions), ``run`` with SIGTERM (it drains both children). Child output goes to
``<data_dir>/logs/`` so the caller's terminal stays readable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from contracts.errors import EnergylakeError
from gateway.provisioning import BrokerOptions, ProvisionReport, provision
from lake.reference import load_device_registry
from lake.storage import Store
from pipelines.settings import PRIVATE_UMASK, Settings
from pipelines.status import backlog

__all__ = ["MOSQUITTO", "LocalStack", "StackError", "accepts", "free_port"]

MOSQUITTO = Path(os.environ.get("ENERGYLAKE_MOSQUITTO", "/usr/sbin/mosquitto"))
HOST = "127.0.0.1"


class StackError(EnergylakeError, RuntimeError):
    """A part of the local stack did not start, or did not stop cleanly; also a
    ``RuntimeError``, as before the hierarchy."""


def free_port() -> int:
    """A TCP port free on loopback now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something listens on the loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


class LocalStack:
    """Provision, start the broker, start ``energylake run``; stop all on exit."""

    def __init__(
        self,
        settings: Settings,
        *,
        follow_interval_s: float = 1.0,
        roll_seconds: float = 2.0,
    ) -> None:
        self.settings = settings
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.follow_interval_s = follow_interval_s
        self.roll_seconds = roll_seconds
        self.gateway_dir = settings.data_dir / "gateway"
        self.logs = settings.data_dir / "logs"
        self._broker: subprocess.Popen[bytes] | None = None
        self._run: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    # -- set-up

    def provision(self, credentials: dict[str, str]) -> ProvisionReport:
        """Password file, ACL, identity book and broker config from the lake's registry."""
        registry = load_device_registry(Store.from_uri(self.settings.lake))
        return provision(
            registry,
            self.gateway_dir,
            credentials=credentials,
            broker=BrokerOptions(
                port=self.mqtt_port,
                bind=HOST,
                persistence_dir=self.settings.data_dir / "mosquitto-data",
                pid_file=self.settings.data_dir / "mosquitto.pid",
            ),
        )

    def _log(self, name: str) -> IO[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        handle = (self.logs / f"{name}.log").open("ab")
        self._files.append(handle)
        return handle

    def start_broker(self, timeout_s: float = 10.0) -> None:
        if not MOSQUITTO.exists() or shutil.which(str(MOSQUITTO)) is None:
            raise StackError(
                f"{MOSQUITTO} not found: install it (apt-get install -y mosquitto); "
                "`make demo` does this for you"
            )
        conf = self.gateway_dir / "mosquitto.conf"
        log = self._log("mosquitto")
        self._broker = subprocess.Popen(  # noqa: S603 - our own binary and config
            [str(MOSQUITTO), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=PRIVATE_UMASK,  # its database and pid file too, whoever started the stack
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._broker.poll() is not None:
                raise StackError(
                    f"mosquitto exited with {self._broker.returncode}; see {self.logs}"
                )
            if accepts(self.mqtt_port):
                return
            time.sleep(0.05)
        raise StackError(f"mosquitto did not listen on {self.mqtt_port} within {timeout_s} s")

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
        env.update(
            ENERGYLAKE_DATA_DIR=str(self.settings.data_dir),
            ENERGYLAKE_GATEWAY_MQTT_PORT=str(self.mqtt_port),
            ENERGYLAKE_GATEWAY_HTTP_PORT=str(self.http_port),
            ENERGYLAKE_FOLLOW_INTERVAL_S=str(self.follow_interval_s),
            ENERGYLAKE_GATEWAY_ROLL_S=str(self.roll_seconds),
        )
        if self.settings.lake_uri:
            env["ENERGYLAKE_LAKE_URI"] = self.settings.lake_uri
        return env

    def start_run(self, timeout_s: float = 30.0) -> None:
        """``energylake run``; returns once the gateway answers /readyz."""
        log = self._log("run")
        self._run = subprocess.Popen(
            [sys.executable, "-m", "cli", "run"],
            env=self.child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=PRIVATE_UMASK,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._run.poll() is not None:
                raise StackError(f"energylake run exited with {self._run.returncode}; see logs")
            url = f"{self.http_url}/readyz"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=1) as reply,  # noqa: S310 - loopback http
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"the gateway was not ready within {timeout_s} s; see {self.logs}")

    # -- running

    def wait_caught_up(self, timeout_s: float = 120.0, quiet_s: float = 3.0) -> bool:
        """True once the landing log holds nothing unprocessed (open segments included:
        the gateway rolls an idle one after ``roll_seconds``) for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            b = backlog(self.settings.landing)
            if b.closed_segments == 0 and b.open_segments == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet_s:
                    return True
            else:
                quiet_since = None
            time.sleep(0.25)
        return False

    # -- stopping

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM ``run`` (both children drain) and the broker; their exit codes checked."""
        code: int | None = None
        if self._run is not None and self._run.poll() is None:
            self._run.send_signal(signal.SIGTERM)
            try:
                code = self._run.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._run.kill()
                self._run.wait()
                code = -9
        elif self._run is not None:
            code = self._run.returncode
        if self._broker is not None and self._broker.poll() is None:
            self._broker.send_signal(signal.SIGTERM)
            try:
                self._broker.wait(15)
            except subprocess.TimeoutExpired:
                self._broker.kill()
                self._broker.wait()
        for handle in self._files:
            handle.close()
        self._files.clear()
        return code

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
