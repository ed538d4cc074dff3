"""A real Mosquitto for tests: the production config, a provisioned fleet, a free port.

``start_mosquitto(folder)`` simulates a small fleet's registry (the simulator's device
rows under the devices contract), runs the real ``gateway.provisioning.provision`` into
``folder`` (password file, ACL, identity book, gateway account, and
``infra/mosquitto/mosquitto.conf`` rendered for 127.0.0.1, a free port and a persistence
folder of its own), then starts ``/usr/sbin/mosquitto -c folder/mosquitto.conf``.

``start_mosquitto(folder, tls=(cert, key))`` also renders the config's TLS listener (on
127.0.0.1, a free port: ``Mosquitto.tls_port``) with that certificate and key.

The ``mosquitto`` fixture in ``tests/conftest.py`` wraps it. A test gets the host and
port, the gateway's accounts (one session per tenant; ``gateway_username`` is the first,
``session_of(device)`` the one taking a device's canonical topics), every device's account
(username = device id, password = its token), the identity book, and ``stop()`` (SIGTERM,
the broker saves its database),
``kill()`` (SIGKILL), ``start()``, ``restart()`` and ``reload()`` (SIGHUP). The process is
always ended by its PID when the test finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from devstack.stack import StackError, accepts, free_port
from gateway.provisioning import (
    BOOK_FILE,
    BROKER_CONF_FILE,
    GATEWAY_CREDENTIALS_FILE,
    BrokerOptions,
    ProvisionReport,
    provision,
    revoke,
)
from gateway.sessions import MqttSession, SessionBook, read_session_book
from simulator.config import SimConfig
from simulator.reference import Fleet, build_fleet
from simulator.stream import topic_for

__all__ = ["MOSQUITTO", "DeviceAccount", "Mosquitto", "fleet_registry", "start_mosquitto"]

MOSQUITTO = Path(os.environ.get("ENERGYLAKE_TEST_MOSQUITTO", "/usr/sbin/mosquitto"))
HOST = "127.0.0.1"
# 1 client x 2 branches: a meter and solar in each, a DG set in one (5 devices).
DEFAULT_FLEET = SimConfig(clients=1, branches=2, days=1, seed=7)


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """One device's MQTT login (its HTTP bearer token is the same secret)."""

    device_id: str
    client_id: str
    branch_id: str
    kind: str
    password: str

    @property
    def username(self) -> str:
        return self.device_id

    @property
    def token(self) -> str:
        return self.password

    @property
    def topic(self) -> str:
        """Its canonical telemetry topic."""
        return topic_for(self.client_id, self.branch_id, self.device_id)

    @property
    def tasmota_topic(self) -> str:
        return f"tele/{self.device_id}/SENSOR"


@functools.cache
def fleet_registry(config: SimConfig = DEFAULT_FLEET) -> tuple[Fleet, pa.Table]:
    """The simulated fleet and its device registry rows under the devices contract."""
    from contracts import load_registry

    fleet = build_fleet(config)
    schema = load_registry().get("devices").arrow_schema()
    return fleet, pa.Table.from_pylist(fleet.rows()["devices"], schema=schema)


@dataclass
class Mosquitto:
    """A Mosquitto process on 127.0.0.1 running the rendered production config."""

    folder: Path  # the provision output folder (DATA_DIR/gateway)
    port: int
    sim_config: SimConfig
    fleet: Fleet
    devices: dict[str, DeviceAccount]
    report: ProvisionReport
    host: str = HOST
    proc: subprocess.Popen[bytes] | None = None
    tls_port: int | None = None  # the TLS listener's port when rendered with one
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        # stdout/stderr of the process; the config's own log file (what the gateway and
        # `energylake status` read for drops) is folder/mosquitto.log
        self.log_path = self.folder.parent / "mosquitto.log"

    # -- what tests read ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The data_dir whose ``gateway/`` folder holds the provisioned files."""
        return self.folder.parent

    @property
    def conf_path(self) -> Path:
        return self.folder / BROKER_CONF_FILE

    @property
    def identity_book(self) -> Path:
        return self.folder / BOOK_FILE

    @property
    def gateway_credentials_path(self) -> Path:
        return self.folder / GATEWAY_CREDENTIALS_FILE

    @property
    def sessions(self) -> SessionBook:
        return read_session_book(self.gateway_credentials_path)

    @property
    def gateway_username(self) -> str:
        """One of the gateway's accounts (each may read every device topic): the shared one."""
        return self.sessions.sessions[0].username

    @property
    def gateway_password(self) -> str:
        return self.sessions.password

    def session_of(self, device_id: str) -> MqttSession:
        """The gateway session taking the device's canonical topic (its tenant's)."""
        client = self.devices[device_id].client_id if device_id in self.devices else None
        session = self.sessions.session_of(device_id, client)
        assert session is not None, f"no gateway session takes {device_id}"
        return session

    @property
    def broker_log(self) -> Path:
        return self.folder / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- process control ---------------------------------------------------------------
    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start the broker (if not running) and wait until its port accepts connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config
                [str(MOSQUITTO), "-c", str(self.conf_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(
                    f"mosquitto exited with {self.proc.returncode}; log:\n{self.log()[-2000:]}"
                )
            if accepts(self.port):
                return
            time.sleep(0.01)
        self.kill()
        raise StackError(f"mosquitto did not accept connections on {self.port} in {timeout_s}s")

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM): the broker saves its persistence database first."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: what was queued since the last autosave is lost."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Graceful stop, then start on the same port with the same persistence folder."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: reread the password file and ACL (what ``devices revoke`` triggers)."""
        if self.proc is None or self.proc.poll() is not None:
            raise StackError("mosquitto is not running")
        self.proc.send_signal(signal.SIGHUP)

    def revoke(self, device_id: str) -> None:
        """``energylake devices revoke``'s work, then a reload of this broker."""
        revoke(self.folder, device_id)
        self.reload()
        time.sleep(0.2)  # the broker handles SIGHUP in its next loop iteration

    def close(self) -> None:
        """End the process this object started (by its PID, through Popen)."""
        with contextlib.suppress(Exception):
            self.stop(timeout_s=5)
        self.kill()


def start_mosquitto(
    folder: Path,
    *,
    sim_config: SimConfig = DEFAULT_FLEET,
    attempts: int = 3,
    tls: tuple[Path, Path] | None = None,
    max_queued_messages: int = 300_000,
    sys_interval_s: int = 10,
) -> Mosquitto:
    """Provision ``sim_config``'s fleet into ``folder`` and start a broker on a free port
    (and a TLS listener with ``tls``, a PEM certificate chain and its key, on another; with
    each gateway session's queue bound and the $SYS period given).

    Fails the test (never skips) when the mosquitto binary is missing.
    """
    if not MOSQUITTO.exists() or shutil.which(str(MOSQUITTO)) is None:
        raise StackError(
            f"{MOSQUITTO} not found: `make test` installs it "
            "(apt-get install -y mosquitto mosquitto-clients)"
        )
    fleet, registry = fleet_registry(sim_config)
    last: Exception | None = None
    for _attempt in range(attempts):
        port = free_port()
        tls_port = free_port() if tls is not None else None
        options = BrokerOptions(
            port=port,
            bind=HOST,
            persistence_dir=folder.parent / "mosquitto-data",
            pid_file=folder.parent / "mosquitto.pid",
            max_queued_messages=max_queued_messages,
            sys_interval_s=sys_interval_s,
        )
        if tls is not None and tls_port is not None:
            options = dataclasses.replace(
                options, tls_cert=tls[0], tls_key=tls[1], tls_port=tls_port, tls_bind=HOST
            )
        report = provision(registry, folder, credentials=fleet.tokens, broker=options)
        devices = {
            d.device_id: DeviceAccount(
                d.device_id, d.client_id, d.branch_id, d.kind, fleet.tokens[d.device_id]
            )
            for d in fleet.devices
        }
        broker = Mosquitto(folder, port, sim_config, fleet, devices, report, tls_port=tls_port)
        try:
            broker.start()
        except RuntimeError as exc:  # e.g. the port was taken between probe and bind
            broker.close()
            last = exc
            continue
        return broker
    raise StackError(f"mosquitto did not start: {last}")
