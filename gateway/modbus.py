"""The Modbus TCP poller: reads devices on their cadence through register maps and lands
each reading in the landing log as source ``modbus``.

Devices are plain ``ModbusDevice`` values (the CLI builds them from the device registry;
this package does not read the lake). One asyncio task per TCP endpoint: the devices behind
one endpoint (several unit ids on a serial gateway) share its connection and are polled one
request at a time, while endpoints never wait for each other, so a slow or dead device
delays only the devices on its own connection.

A successful poll lands one record: topic ``canonical_topic(client, branch, device)``,
identity the device id, payload the canonical envelope ``{"device_id", "seq", "ts", "boot",
"readings"}`` (``ts``: epoch seconds when the answer arrived; readings already in the
contract's units, so no ``units``), appended and ``sync()``-ed before it counts as landed.

Sequence numbers (seq): per device, write-ahead. ``<state_dir>/seq/<device_id>.json`` holds
the boot epoch and the highest seq handed out; the next seq is written there and fsync'd
(atomic replace) *before* the record it numbers is appended. A crash between the two leaves
a gap (the pipeline and ``energylake status`` see a missing reading, which is the truth: no
reading landed), never a number used twice with other content (the pipeline's SEQ_CONFLICT).
Why not derive the seq from the clock or from the landing log: a clock can step back, and
scanning the log at start is slow and misses records already archived. ``boot`` is the
epoch second the state file was created: if the state is lost, numbering restarts at 1
under a new boot, so even then no (device, boot, seq) repeats. Cost: one small fsync'd file
replace per poll, measured in milliseconds, against cadences of seconds.

Failures (counted per device and reason, ``energylake_modbus_*`` metrics, and in the status
file): ``timeout`` (no answer within ``timeout_s``), ``connection`` (refused, reset, lost:
the device disappeared), ``exception`` (a Modbus exception response; the code is in the
detail), ``garbage`` (a wrong register count, a float that is NaN or infinite, a code the
map's ``values`` do not list), ``landing`` (the landing log refused the record), ``internal``
(a bug; logged with its traceback). A failed poll lands nothing and is retried after an
exponential backoff (``backoff_base_s`` doubling per consecutive failure, capped at
``backoff_max_s``, minus up to ``jitter_share`` of it at random so a fleet that failed
together does not retry together); the first success returns the device to its cadence.
Garbage fails the whole poll rather than landing the other fields: a NaN or a wrong count
means the map or the device is wrong (word order, address), and a reading assembled around
it would look valid while it is not. Values out of range are not garbage: they land and the
pipeline's contract checks quarantine them with a reason. Sentinel codes ("not available")
pass through scaled; the pipeline stores them as NULL with the SENTINEL flag.

Status file (``<state_dir>/status.json``, replaced atomically at most every
``status_interval_s`` and at stop)::

    {"version": 1, "written_at": "2026-11-01T06:00:00.000000Z", "pid": 4242,
     "running": true,
     "devices": {"<device_id>": {
         "endpoint": "10.0.0.5:502", "unit_id": 1, "register_map": "dse_gencomm",
         "cadence_s": 60.0, "state": "ok" | "failing" | "pending",
         "last_success": "<UTC ISO>" | null, "last_seq": 17 | null, "boot": 1793512345,
         "consecutive_failures": 0,
         "last_error": {"reason": "timeout", "detail": "...", "at": "<UTC ISO>"} | null,
         "next_attempt": "<UTC ISO>", "polls": 20, "landed": 17,
         "failures": {"timeout": 3}}},
     "skipped": {"<device_id>": "why it is not polled"}}

Stop: ``stop()`` (the CLI calls it on SIGTERM / SIGINT) lets each endpoint finish the poll
in hand, including its landing sync, then closes the connections and the landing writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from contracts.errors import ConfigError, EnergylakeError
from durable.files import atomic_write
from gateway.config import canonical_topic
from gateway.modbus_maps import GarbageError, ReadBlock, RegisterMap, decode_field
from landing.format import Envelope, LandingError
from landing.writer import LandingWriter

__all__ = [
    "REASONS",
    "ModbusDevice",
    "ModbusMetrics",
    "ModbusPoller",
    "PollerOptions",
    "SeqStore",
    "parse_endpoint",
]

log = logging.getLogger("energylake.modbus")

Reason = Literal["timeout", "connection", "exception", "garbage", "landing", "internal"]
REASONS: Final[tuple[Reason, ...]] = (
    "timeout",
    "connection",
    "exception",
    "garbage",
    "landing",
    "internal",
)
STATUS_VERSION: Final = 1


class PollError(EnergylakeError):
    """One poll that did not give a reading (caught by the poller, counted, retried)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason: Reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (the devices contract's ``modbus_endpoint``) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"modbus endpoint {text!r} is not host:port", setting="modbus_endpoint", value=text
        )
    return host, int(port)


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One device to poll: who it is, where it answers, how often, with which map."""

    device_id: str
    client_id: str
    branch_id: str
    host: str
    port: int
    unit_id: int
    cadence_s: float
    register_map: RegisterMap

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PollerOptions:
    """How the poller talks to devices and writes what it reads."""

    timeout_s: float = 3.0  # per request, and for a connect
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    jitter_share: float = 0.2  # a retry comes up to this share of its backoff early
    status_interval_s: float = 1.0
    writer_id: str = "modbus"
    roll_s: float = 60.0  # landing segments close after this many seconds
    fsync: bool = True


class ModbusMetrics:
    """Counters, gauges and a histogram named ``energylake_modbus_*`` (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = PromCounter(
            "energylake_modbus_polls",
            "Polls of a device, by outcome (ok or a failure reason).",
            ["device", "outcome"],
            registry=r,
        )
        self.failures = PromCounter(
            "energylake_modbus_failures",
            "Failed polls by device and reason (timeout, connection, exception, garbage, "
            "landing, internal).",
            ["device", "reason"],
            registry=r,
        )
        self.landed = PromCounter(
            "energylake_modbus_landed_records",
            "Readings appended and synced to the landing log.",
            ["device"],
            registry=r,
        )
        self.consecutive = Gauge(
            "energylake_modbus_consecutive_failures",
            "Failed polls in a row (0 after a success).",
            ["device"],
            registry=r,
        )
        self.poll_seconds = Histogram(
            "energylake_modbus_poll_seconds",
            "Time of one successful poll: the reads, the seq and the landing sync.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )


class SeqStore:
    """Write-ahead sequence numbers per device (see the module doc)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._folder.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[int, int]] = {}

    def _path(self, device_id: str) -> Path:
        return self._folder / f"{device_id}.json"

    def current(self, device_id: str) -> tuple[int, int] | None:
        """(boot, highest seq handed out) or None when the device has no state yet."""
        if device_id in self._cache:
            return self._cache[device_id]
        path = self._path(device_id)
        if not path.exists():
            return None
        try:
            data = orjson.loads(path.read_bytes())
            state = (int(data["boot"]), int(data["seq"]))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LandingError(
                f"modbus seq state {path} is unreadable ({exc}); move it aside to start a "
                "new boot epoch (numbering restarts at 1 under a new boot)"
            ) from exc
        self._cache[device_id] = state
        return state

    def reserve(self, device_id: str) -> tuple[int, int]:
        """The next (boot, seq) of a device, durable before it is returned."""
        state = self.current(device_id)
        boot, seq = state if state is not None else (int(time.time()), 0)
        seq += 1
        body = {"device_id": device_id, "boot": boot, "seq": seq}
        atomic_write(self._path(device_id), orjson.dumps(body))
        self._cache[device_id] = (boot, seq)
        return boot, seq


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _DeviceState:
    device: ModbusDevice
    blocks: tuple[ReadBlock, ...]
    next_at: float = 0.0  # loop time
    next_at_epoch: float = 0.0
    last_success: float | None = None
    last_seq: int | None = None
    boot: int | None = None
    consecutive: int = 0
    last_error: dict[str, Any] | None = None
    polls: int = 0
    landed: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        d = self.device
        if self.consecutive:
            state = "failing"
        elif self.last_success is not None:
            state = "ok"
        else:
            state = "pending"
        return {
            "endpoint": d.endpoint,
            "unit_id": d.unit_id,
            "register_map": d.register_map.name,
            "cadence_s": d.cadence_s,
            "state": state,
            "last_success": _iso(self.last_success),
            "last_seq": self.last_seq,
            "boot": self.boot,
            "consecutive_failures": self.consecutive,
            "last_error": self.last_error,
            "next_attempt": _iso(self.next_at_epoch),
            "polls": self.polls,
            "landed": self.landed,
            "failures": dict(self.failures),
        }


@dataclass
class _Endpoint:
    host: str
    port: int
    devices: list[_DeviceState]
    client: AsyncModbusTcpClient | None = None


class ModbusPoller:
    """Polls ``devices`` until ``stop()``; one task per endpoint (see the module doc)."""

    def __init__(
        self,
        devices: list[ModbusDevice],
        *,
        landing_dir: Path,
        state_dir: Path,
        options: PollerOptions | None = None,
        metrics: ModbusMetrics | None = None,
        skipped: dict[str, str] | None = None,
    ) -> None:
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"devices listed twice: {dup}", setting="devices", value=dup)
        self.options = options or PollerOptions()
        self.metrics = metrics or ModbusMetrics()
        self._landing_dir = landing_dir
        self._state_dir = state_dir
        self._seqs = SeqStore(state_dir / "seq")
        self._skipped = dict(skipped or {})
        self._states = {d.device_id: _DeviceState(d, d.register_map.blocks()) for d in devices}
        endpoints: dict[tuple[str, int], list[_DeviceState]] = {}
        for st in self._states.values():
            endpoints.setdefault((st.device.host, st.device.port), []).append(st)
        self._endpoints = [_Endpoint(h, p, sts) for (h, p), sts in endpoints.items()]
        self._stopping: asyncio.Event | None = None
        self._writer: LandingWriter | None = None
        self._dirty = True
        self._running = False
        self._random = random.Random()

    @property
    def status_path(self) -> Path:
        return self._state_dir / "status.json"

    def stop(self) -> None:
        """Ask the poller to stop after the polls in hand (call from the loop's thread)."""
        if self._stopping is not None:
            self._stopping.set()

    def status(self) -> dict[str, Any]:
        """What the status file holds (see the module doc)."""
        return {
            "version": STATUS_VERSION,
            "written_at": _iso(time.time()),
            "pid": os.getpid(),
            "running": self._running,
            "devices": {k: st.report() for k, st in sorted(self._states.items())},
            "skipped": dict(sorted(self._skipped.items())),
        }

    async def run(self) -> None:
        """Poll until ``stop()``; then finish the polls in hand and close everything."""
        self._stopping = asyncio.Event()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._writer = LandingWriter(
            self._landing_dir,
            self.options.writer_id,
            roll_seconds=self.options.roll_s,
            fsync=self.options.fsync,
        )
        self._running = True
        loop = asyncio.get_running_loop()
        now, epoch = loop.time(), time.time()
        for st in self._states.values():
            st.next_at, st.next_at_epoch = now, epoch
            known = self._seqs.current(st.device.device_id)
            if known is not None:
                st.boot, st.last_seq = known
        tasks = [asyncio.create_task(self._endpoint_loop(ep)) for ep in self._endpoints]
        status_task = asyncio.create_task(self._status_loop())
        try:
            await asyncio.gather(*tasks)
        finally:
            self._stopping.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_task
            for ep in self._endpoints:
                _close(ep)
            writer, self._writer = self._writer, None
            try:
                await asyncio.to_thread(writer.close)
            finally:
                self._running = False
                await asyncio.to_thread(self._write_status)

    # ------------------------------------------------------------------ scheduling

    async def _endpoint_loop(self, ep: _Endpoint) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            st = min(ep.devices, key=lambda s: s.next_at)
            delay_s = st.next_at - loop.time()
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay_s)
                continue
            await self._poll(ep, st)
        _close(ep)

    def _schedule(self, st: _DeviceState, due: float, now: float) -> None:
        st.next_at = due
        st.next_at_epoch = time.time() + (due - now)
        self._dirty = True

    async def _poll(self, ep: _Endpoint, st: _DeviceState) -> None:
        loop = asyncio.get_running_loop()
        due = st.next_at
        started = loop.time()
        device = st.device
        st.polls += 1
        try:
            readings = await self._read(ep, st)
            landed_at = time.time()
            # shielded: a stop (or a cancel) never interrupts a record between append and sync
            seq = await asyncio.shield(asyncio.to_thread(self._land, st, readings, landed_at))
        except PollError as err:
            self._failed(ep, st, err.reason, err.detail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never crash the poller: count it, log it, retry
            log.exception("modbus poll of %s failed unexpectedly", device.device_id)
            self._failed(ep, st, "internal", f"{type(exc).__name__}: {exc}")
        else:
            now = loop.time()
            recovering = st.consecutive > 0
            st.last_seq = seq
            st.last_success = time.time()
            st.consecutive = 0
            st.last_error = None
            st.landed += 1
            self.metrics.polls.labels(device.device_id, "ok").inc()
            self.metrics.landed.labels(device.device_id).inc()
            self.metrics.consecutive.labels(device.device_id).set(0)
            self.metrics.poll_seconds.observe(now - started)
            cadence = device.cadence_s
            base = started if recovering else due
            steps = max(1, int((now - base) // cadence) + 1)
            self._schedule(st, base + steps * cadence, now)
            return
        now = loop.time()
        self._schedule(st, now + self._backoff_s(st.consecutive), now)

    def _backoff_s(self, failures: int) -> float:
        o = self.options
        full = min(o.backoff_max_s, o.backoff_base_s * (2 ** min(failures - 1, 62)))
        return float(full * (1.0 - o.jitter_share * self._random.random()))

    def _failed(self, ep: _Endpoint, st: _DeviceState, reason: Reason, detail: str) -> None:
        device_id = st.device.device_id
        st.consecutive += 1
        st.failures[reason] += 1
        st.last_error = {"reason": reason, "detail": detail, "at": _iso(time.time())}
        self.metrics.polls.labels(device_id, reason).inc()
        self.metrics.failures.labels(device_id, reason).inc()
        self.metrics.consecutive.labels(device_id).set(st.consecutive)
        if reason in ("timeout", "connection", "garbage", "internal"):
            _close(ep)  # a late or torn answer must not be read as the next one's
        log.warning(
            "modbus %s (%s unit %d): %s: %s; failure %d in a row",
            device_id,
            st.device.endpoint,
            st.device.unit_id,
            reason,
            detail,
            st.consecutive,
        )

    # ------------------------------------------------------------------ Modbus

    async def _client(self, ep: _Endpoint) -> AsyncModbusTcpClient:
        if ep.client is not None and ep.client.connected:
            return ep.client
        _close(ep)
        timeout_s = self.options.timeout_s
        client = AsyncModbusTcpClient(
            ep.host, port=ep.port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        ep.client = client
        try:
            ok = await asyncio.wait_for(client.connect(), timeout_s)
        except TimeoutError:
            raise PollError(
                "timeout", f"no connection to {ep.host}:{ep.port} within {timeout_s:g} s"
            ) from None
        except (OSError, ModbusException) as exc:
            raise PollError("connection", f"{ep.host}:{ep.port}: {exc}") from None
        if not ok:
            raise PollError("connection", f"cannot connect to {ep.host}:{ep.port}")
        return client

    async def _read(self, ep: _Endpoint, st: _DeviceState) -> dict[str, float | str]:
        client = await self._client(ep)
        unit = st.device.unit_id
        readings: dict[str, float | str] = {}
        for block in st.blocks:
            call = (
                client.read_input_registers
                if block.function == "input"
                else client.read_holding_registers
            )
            where = f"{block.function} {block.address}+{block.count}"
            try:
                response = await asyncio.wait_for(
                    call(block.address, count=block.count, device_id=unit),
                    self.options.timeout_s * 2,
                )
            except TimeoutError:
                raise PollError("timeout", f"{where}: no answer") from None
            except ConnectionException as exc:
                raise PollError("connection", f"{where}: {exc}") from None
            except ModbusIOException as exc:
                reason: Reason = "timeout" if "No response" in str(exc) else "connection"
                if not client.connected:
                    reason = "connection"
                raise PollError(reason, f"{where}: {exc}") from None
            except ModbusException as exc:
                raise PollError("garbage", f"{where}: {exc}") from None
            except OSError as exc:
                raise PollError("connection", f"{where}: {exc}") from None
            if response.isError():
                code = getattr(response, "exception_code", None)
                raise PollError("exception", f"{where}: exception code {code}")
            registers = list(getattr(response, "registers", []) or [])
            if len(registers) != block.count:
                raise PollError("garbage", f"{where}: {len(registers)} registers in the answer")
            for f in block.fields:
                lo = f.address - block.address
                try:
                    value = decode_field(f, registers[lo : lo + f.count])
                except GarbageError as exc:
                    raise PollError("garbage", f"{where}: {exc}") from None
                if value is not None:
                    readings[f.name] = value
        return readings

    # ------------------------------------------------------------------ landing

    def _land(self, st: _DeviceState, readings: dict[str, float | str], ts: float) -> int:
        """Reserve the seq (durable), append, sync: runs in a worker thread."""
        writer = self._writer
        if writer is None:
            raise PollError("landing", "the poller is not running")
        d = st.device
        try:
            boot, seq = self._seqs.reserve(d.device_id)
        except (OSError, LandingError) as exc:
            raise PollError("landing", f"seq state: {exc}") from None
        st.boot = boot
        body = {"device_id": d.device_id, "seq": seq, "ts": ts, "boot": boot, "readings": readings}
        envelope = Envelope(
            received_at_us=int(time.time() * 1_000_000),
            source="modbus",
            topic=canonical_topic(d.client_id, d.branch_id, d.device_id),
            identity=d.device_id,
            payload=orjson.dumps(body),
        )
        try:
            writer.append(envelope)
            writer.sync()
        except (OSError, LandingError) as exc:
            raise PollError("landing", f"seq {seq}: {exc}") from None
        return seq

    # ------------------------------------------------------------------ status

    async def _status_loop(self) -> None:
        while True:
            if self._dirty:
                self._dirty = False
                try:
                    await asyncio.to_thread(self._write_status)
                except OSError as exc:
                    log.warning("modbus status file %s: %s", self.status_path, exc)
            await asyncio.sleep(self.options.status_interval_s)

    def _write_status(self) -> None:
        atomic_write(self.status_path, orjson.dumps(self.status(), option=orjson.OPT_INDENT_2))


def _close(ep: _Endpoint) -> None:
    client, ep.client = ep.client, None
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
