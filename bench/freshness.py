"""Benchmark: end-to-end freshness, from an MQTT publish to the row being visible in DuckDB.

The real path, every part a process of its own on this machine:

1. a private Mosquitto with the production config (``infra/mosquitto/mosquitto.conf``
   rendered by ``devices provision`` for a free loopback port, as ``devstack/mosquitto.py`` does)
   and a simulated fleet (``--clients x --branches``) provisioned into its password file,
   ACL and identity book; the fleet's reference data loaded into a fresh lake;
2. ``energylake gateway`` (MQTT + HTTP) and ``energylake process --follow``, as a user runs
   them, configured through ENERGYLAKE_* variables: segment roll ``--roll-s`` (the
   gateway's default, 2 s) and follow interval ``--follow-s`` (1 s; the default is 5 s);
3. a paced publisher in its own process: one paho client per device, logged in as the
   device, QoS 1 on its canonical topic, ``--rate`` messages/s in total for ``--seconds``.
   Payloads are canonical envelopes with the device's simulated readings (counters held,
   stuck-prone fields varied), ``seq`` counting up and ``ts`` = the wall clock at publish;
4. this process polls the readings tables with DuckDB ``delta_scan`` (``lake.duck``) every
   ``--poll-s`` and records when each ``(device_id, seq)`` is first seen. Freshness =
   that moment - ``ts`` (the publish time). The stored ``received_at`` (the gateway's
   clock at arrival) splits it into broker + gateway and landing-to-lake.

Before the measured window one probe message must travel the whole path (the processor
has imported Beam and run a batch). It prints p50/p90/p99/max freshness (issue 4's goal:
p99 under 15 s at 5,000 msg/s for 60 s), the achieved publish rate, messages lost (acked
by the broker but never visible), peak RSS and CPU of every process, and the processor's
batch reports (``done.json``). Every process it starts is ended by its PID.

    .venv/bin/python -m bench.freshness [--rate 5000 --seconds 60 --roll-s 2 --follow-s 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import psutil

from contracts import load_registry
from lake.delta import table_exists
from lake.duck import connect
from lake.layout import table_rel
from lake.reference import load_reference
from lake.storage import Store
from simulator.config import SimConfig
from simulator.run import simulate
from simulator.stream import Message
from transforms.series import COUNTER_ALLOWANCE, STUCK_FIELDS

_CLI = "from cli.app import main; main()"
PROBE_SEQ = 0  # the probe message; the measured run counts from 1
_MIB = 2**20


# --- the publisher (a process of its own: `python -m bench.freshness --publisher`) ----------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device as the publisher uses it: login, topic and a readings template."""

    device_id: str
    password: str
    topic: str
    dataset: str
    readings: dict[str, Any]


def _varied(spec: DeviceSpec, seq: int) -> dict[str, Any]:
    """The template with its stuck-prone fields stepping a little (counters stay put, so
    no rise is implausible however fast the device publishes)."""
    readings = dict(spec.readings)
    for name in STUCK_FIELDS.get(spec.dataset, ()):
        value = readings.get(name)
        if isinstance(value, int | float):
            readings[name] = round(float(value) + ((seq % 7) - 3) * 0.1, 1)
    return readings


def _payload(spec: DeviceSpec, seq: int) -> bytes:
    envelope = {
        "device_id": spec.device_id,
        "seq": seq,
        "ts": time.time(),
        "readings": _varied(spec, seq),
    }
    return orjson.dumps(envelope)


def _publisher(spec: dict[str, Any]) -> dict[str, Any]:
    """Connect one client per device, publish the probe or the paced run, wait for PUBACKs."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    devices = [DeviceSpec(**d) for d in spec["devices"]]
    acked = [0] * len(devices)
    lock = threading.Lock()
    clients: list[mqtt.Client] = []
    connected = threading.Semaphore(0)
    for i, dev in enumerate(devices):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=dev.device_id, protocol=mqtt.MQTTv311
        )
        client.username_pw_set(dev.device_id, dev.password)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)

        def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any, i: int = i) -> None:
            with lock:
                acked[i] += 1

        def on_connect(c: Any, u: Any, flags: Any, reason: Any, p: Any) -> None:
            if not reason.is_failure:
                connected.release()

        client.on_publish = on_publish
        client.on_connect = on_connect
        client.connect(spec["host"], spec["port"])
        client.loop_start()
        clients.append(client)
    for _ in devices:
        if not connected.acquire(timeout=30):
            raise RuntimeError("a device could not connect to the broker")
    rate = float(spec["rate"])
    seconds = float(spec["seconds"])
    total = int(rate * seconds)
    next_seq = [int(spec["first_seq"])] * len(devices)
    sent = 0
    behind_max = 0
    started = time.perf_counter()
    first_wall = time.time()
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        behind_max = max(behind_max, due - sent)
        while sent < due:
            i = sent % len(devices)
            seq = next_seq[i]
            next_seq[i] = seq + 1
            clients[i].publish(devices[i].topic, _payload(devices[i], seq), qos=1)
            sent += 1
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    last_wall = time.time()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if sum(acked) >= total:
                break
        time.sleep(0.05)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return {
        "sent": sent,
        "acked": sum(acked),
        "elapsed_s": elapsed,
        "first_wall": first_wall,
        "last_wall": last_wall,
        "behind_max": behind_max,
        "cpu_s": sum(os.times()[:2]),
        "last_seq": {d.device_id: next_seq[i] - 1 for i, d in enumerate(devices)},
        "acked_per_device": {d.device_id: acked[i] for i, d in enumerate(devices)},
    }


# --- the fleet ------------------------------------------------------------------------------


def _fleet(config: SimConfig, out: Path) -> tuple[list[DeviceSpec], Path]:
    """Simulate the fleet once: reference data, and one clean reading per device as template."""
    readings = load_registry().dataset_of_kind
    templates: dict[str, Message] = {}

    def sink(messages: list[Message], seed: int) -> None:
        for m in messages:
            clean = m.route == "lake" and m.fault is None and m.mangle is None
            if clean and not m.units and not m.extra and m.device_id not in templates:
                templates[m.device_id] = m

    result = simulate(config, out, sink=sink)
    devices = []
    for dev in result.fleet.devices:
        msg = templates[dev.device_id]
        for name in COUNTER_ALLOWANCE:
            if name in msg.readings and msg.readings[name] is None:
                raise RuntimeError(f"{dev.device_id}: template without counter {name}")
        devices.append(
            DeviceSpec(
                device_id=dev.device_id,
                password=result.fleet.tokens[dev.device_id],
                topic=msg.topic,
                dataset=readings[dev.kind],
                readings=msg.readings,
            )
        )
    return devices, result.reference_dir


# --- processes ------------------------------------------------------------------------------


class _Watch:
    """Peak RSS (summed over the process and its descendants) and CPU of a process."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self.cpu_s = 0.0
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                rss = 0
                cpu = 0.0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu += t.user + t.system
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.cpu_s = max(self.cpu_s, cpu)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _env(data: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    return env | {"ENERGYLAKE_DATA_DIR": str(data), **extra}


def _spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT
        )


def _end(proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> int | None:
    """SIGTERM (the process drains), SIGKILL if it does not exit in time; by its PID."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def _ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _run_publisher(spec: dict[str, Any]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.freshness", "--publisher"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def _publisher_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"the publisher failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


# --- the poller -----------------------------------------------------------------------------


@dataclass
class Seen:
    """Per device: when each seq was first visible, and its stored ts and received_at."""

    devices: list[str]
    size: int
    visible: dict[str, np.ndarray] = field(default_factory=dict)
    ts: dict[str, np.ndarray] = field(default_factory=dict)
    received: dict[str, np.ndarray] = field(default_factory=dict)
    prefix: dict[str, int] = field(default_factory=dict)  # seqs 0..prefix-1 all seen
    polls: list[float] = field(default_factory=list)  # duration of each poll

    def __post_init__(self) -> None:
        for d in self.devices:
            self.visible[d] = np.full(self.size, np.nan)
            self.ts[d] = np.full(self.size, np.nan)
            self.received[d] = np.full(self.size, np.nan)
            self.prefix[d] = 0

    def low_water(self, floor: float) -> float:
        """No unseen message has a ts below this: per device, ts only grows with seq."""
        marks = []
        for d in self.devices:
            p = self.prefix[d]
            marks.append(floor if p == 0 else float(self.ts[d][p - 1]))
        return min(marks) - 1.0

    def add(
        self, device: str, seq: np.ndarray, ts: np.ndarray, recv: np.ndarray, at: float
    ) -> None:
        vis = self.visible.get(device)
        if vis is None:
            return
        keep = (seq >= 0) & (seq < self.size)
        seq, ts, recv = seq[keep], ts[keep], recv[keep]
        new = np.isnan(vis[seq])
        vis[seq[new]] = at
        self.ts[device][seq[new]] = ts[new]
        self.received[device][seq[new]] = recv[new]
        p = self.prefix[device]
        while p < self.size and not np.isnan(vis[p]):
            p += 1
        self.prefix[device] = p

    def count(self, first: int, last: dict[str, int]) -> int:
        return sum(
            int(np.count_nonzero(~np.isnan(self.visible[d][first : last[d] + 1]))) for d in last
        )


def _poll(con: Any, store: Store, tables: list[str], seen: Seen, floor: float) -> None:
    present = [rel for rel in tables if table_exists(store, rel)]
    if not present:
        return
    since = seen.low_water(floor)
    sql = " UNION ALL ".join(
        "SELECT device_id, seq, epoch_us(ts) AS ts_us, epoch_us(received_at) AS recv_us "  # noqa: S608
        f"FROM delta_scan('{store.url(rel)}') WHERE ts >= to_timestamp({since:.6f})"
        for rel in present
    )
    started = time.time()
    try:
        rows = con.execute(sql).fetchnumpy()
    except duckdb.Error as exc:  # a table being created or compacted right now: next poll
        print(f"  poll failed, retrying: {exc}", file=sys.stderr)
        return
    at = time.time()
    seen.polls.append(at - started)
    devices = rows["device_id"]
    if len(devices) == 0:
        return
    seq = np.asarray(rows["seq"], dtype=np.int64)
    ts = np.asarray(rows["ts_us"], dtype=np.float64) / 1e6
    recv = np.asarray(rows["recv_us"], dtype=np.float64) / 1e6
    names = np.asarray(devices, dtype=object)
    for d in set(names.tolist()):
        mask = names == d
        seen.add(str(d), seq[mask], ts[mask], recv[mask], at)


# --- the run --------------------------------------------------------------------------------


def _percentiles(values: np.ndarray) -> str:
    if values.size == 0:
        return "n/a"
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"p50 {p50:6.2f}  p90 {p90:6.2f}  p99 {p99:6.2f}  max {values.max():6.2f}"


def _batches(lake: Path, pipeline_id: str = "main") -> list[dict[str, Any]]:
    folder = lake / "_state" / pipeline_id / "batches"
    out = []
    for path in sorted(folder.glob("*/done.json")):
        out.append(json.loads(path.read_text()))
    return out


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> None:
    from devstack.mosquitto import start_mosquitto
    from devstack.stack import free_port

    config = SimConfig(clients=args.clients, branches=args.branches, days=1, seed=args.seed)
    command = (
        f".venv/bin/python -m bench.freshness --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--roll-s {args.roll_s:g} --follow-s {args.follow_s:g} --poll-s {args.poll_s:g} "
        f"--clients {args.clients} --branches {args.branches}"
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    publisher: subprocess.Popen[str] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        devices, reference = _fleet(config, tmp / "sim")
        store = Store.from_uri(str(data / "lake"))
        load_reference(store, reference, load_registry())
        broker = start_mosquitto(data / "gateway", sim_config=config)
        watches: dict[str, _Watch] = {}
        try:
            http_port = free_port()
            procs["gateway"] = _spawn(
                [sys.executable, "-m", "cli", "gateway"],
                _env(
                    data,
                    {
                        "ENERGYLAKE_GATEWAY_MQTT_PORT": str(broker.port),
                        "ENERGYLAKE_GATEWAY_HTTP_PORT": str(http_port),
                        "ENERGYLAKE_GATEWAY_ROLL_S": f"{args.roll_s}",
                    },
                ),
                tmp / "gateway.log",
                tmp,
            )
            procs["process"] = _spawn(
                [sys.executable, "-c", _CLI, "process", "--follow"],
                _env(data, {"ENERGYLAKE_FOLLOW_INTERVAL_S": f"{args.follow_s}"}),
                tmp / "process.log",
                tmp,
            )
            assert broker.proc is not None
            watches = {name: _Watch(p.pid) for name, p in procs.items()}
            watches["mosquitto"] = _Watch(broker.proc.pid)
            if not _ready(http_port, 60):
                raise RuntimeError(
                    "the gateway did not get ready:\n" + (tmp / "gateway.log").read_text()[-3000:]
                )
            tables = sorted(
                {
                    table_rel(str(c["client_id"]), ds)
                    for c in broker.fleet.clients
                    for ds in load_registry().readings_datasets
                }
            )
            con = connect(store)
            ids = [d.device_id for d in devices]
            per_device = math.ceil(args.rate * args.seconds / len(devices)) + 2
            seen = Seen(ids, per_device + 1)

            # 1. the probe: one message per device travels the whole path first
            probe_spec = {
                "host": broker.host,
                "port": broker.port,
                "devices": [_spec(d) for d in devices],
                "rate": len(devices) * 10.0,
                "seconds": 0.1,
                "first_seq": PROBE_SEQ,
            }
            probe_started = time.time()
            _publisher_result(_run_publisher(probe_spec))
            deadline = time.monotonic() + args.probe_timeout
            while time.monotonic() < deadline:
                _poll(con, store, tables, seen, probe_started)
                if all(seen.prefix[d] > PROBE_SEQ for d in ids):
                    break
                time.sleep(args.poll_s)
            else:
                raise RuntimeError(
                    "the probe did not reach the lake in time; processor log:\n"
                    + (tmp / "process.log").read_text()[-3000:]
                )
            probe_s = time.time() - probe_started
            batches_before = len(_batches(data / "lake"))

            # 2. the measured run
            spec = probe_spec | {
                "rate": args.rate,
                "seconds": args.seconds,
                "first_seq": PROBE_SEQ + 1,
            }
            run_started = time.time()
            publisher = _run_publisher(spec)
            while publisher.poll() is None:
                _poll(con, store, tables, seen, run_started)
                time.sleep(args.poll_s)
            published = _publisher_result(publisher)
            last = {d: int(s) for d, s in published["last_seq"].items()}
            drain_deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < drain_deadline:
                _poll(con, store, tables, seen, run_started)
                if seen.count(PROBE_SEQ + 1, last) >= published["sent"]:
                    break
                time.sleep(args.poll_s)
            drained_s = time.time() - published["last_wall"]
            watches_out = {}
            for name, w in watches.items():
                w.stop()
                watches_out[name] = (w.peak, w.cpu_s)
        finally:
            if publisher is not None and publisher.poll() is None:
                publisher.kill()
                publisher.wait(timeout=10)
            codes = {name: _end(p) for name, p in procs.items()}
            for w in watches.values():
                w.stop()
            broker.close()
        batches = _batches(data / "lake")[batches_before:]
        _report(
            args,
            command,
            devices,
            seen,
            published,
            last,
            watches_out,
            batches,
            probe_s,
            drained_s,
            codes,
        )


def _spec(d: DeviceSpec) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "password": d.password,
        "topic": d.topic,
        "dataset": d.dataset,
        "readings": d.readings,
    }


def _report(
    args: argparse.Namespace,
    command: str,
    devices: Sequence[DeviceSpec],
    seen: Seen,
    published: dict[str, Any],
    last: dict[str, int],
    watches: dict[str, tuple[int, float]],
    batches: list[dict[str, Any]],
    probe_s: float,
    drained_s: float,
    codes: dict[str, int | None],
) -> None:
    first = PROBE_SEQ + 1
    vis = np.concatenate([seen.visible[d][first : last[d] + 1] for d in last])
    ts = np.concatenate([seen.ts[d][first : last[d] + 1] for d in last])
    recv = np.concatenate([seen.received[d][first : last[d] + 1] for d in last])
    ok = ~np.isnan(vis)
    fresh = (vis - ts)[ok]
    edge = (recv - ts)[ok]
    lake = (vis - recv)[ok]
    sent = int(published["sent"])
    lost = sent - int(ok.sum())
    rate = sent / published["elapsed_s"]
    now = datetime.now(UTC)
    print(
        f"bench.freshness  {now:%Y-%m-%d %H:%M} UTC  {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print(f"load average at the end: {_load()} (other work on the machine slows every part)")
    print(f"command: {command}")
    print(
        f"fleet: {args.clients} clients x {args.branches} branches = {len(devices)} devices, "
        "each its own MQTT client (QoS 1, production Mosquitto config)"
    )
    print(
        f"settings: gateway_roll_s={args.roll_s:g} (default 2), "
        f"follow_interval_s={args.follow_s:g} (default 5); all others default "
        "(fsync before ack, group commit 2 ms, FnApiRunner)"
    )
    print(f"probe (processor cold, first batch): {probe_s:.1f} s from publish to visible")
    print()
    print(
        f"published {sent:,} messages in {published['elapsed_s']:.1f} s: {rate:,.0f} msg/s "
        f"(target {args.rate:,.0f}); PUBACKs {published['acked']:,}; "
        f"publisher at most {published['behind_max']:,} messages behind schedule"
    )
    print(f"visible in DuckDB: {int(ok.sum()):,}; lost: {lost:,} (should be 0)")
    print(f"last message visible {drained_s:.1f} s after the last publish")
    print()
    print(f"freshness, s (publish -> visible in DuckDB, {int(ok.sum()):,} messages):")
    print(f"  end to end             {_percentiles(fresh)}")
    print(f"  publish -> gateway     {_percentiles(edge)}   (broker, gateway receive)")
    print(f"  gateway -> visible     {_percentiles(lake)}   (roll, wait, batch, commit, poll)")
    poll = np.asarray(seen.polls)
    print(
        f"  poll resolution: every {args.poll_s:g} s + the query "
        f"(p50 {np.median(poll) * 1000:.0f} ms, max {poll.max() * 1000:.0f} ms, {poll.size} polls)"
        if poll.size
        else "  no polls"
    )
    window = 10.0
    start = float(published["first_wall"])
    rows = []
    for k in range(math.ceil(args.seconds / window)):
        lo, hi = start + k * window, start + (k + 1) * window
        sel = ok & (ts >= lo) & (ts < hi)
        part = (vis - ts)[sel]
        if part.size:
            p50, p99 = np.percentile(part, [50, 99])
            rows.append(f"{k * window:.0f}-{(k + 1) * window:.0f} s: p50 {p50:.1f} p99 {p99:.1f}")
    print("  by publish window: " + "; ".join(rows))
    p99 = float(np.percentile(fresh, 99)) if fresh.size else math.inf
    verdict = "met" if p99 < 15 and lost == 0 else "NOT met"
    print(
        f"goal p99 < 15 s at {args.rate:,.0f} msg/s for {args.seconds:g} s: {verdict} "
        f"(p99 {p99:.2f} s)"
    )
    print()
    print("processes (peak RSS summed over the process tree; CPU s over the whole run):")
    for name, (peak, cpu) in watches.items():
        print(
            f"  {name:<10} peak RSS {peak / _MIB:7.0f} MiB   CPU {cpu:7.1f} s"
            + (f"   exit {codes[name]} after SIGTERM" if name in codes else "")
        )
    print(f"  publisher  CPU {published['cpu_s']:7.1f} s (publishes {args.rate:g} msg/s)")
    print(f"  poller     CPU {sum(os.times()[:2]):7.1f} s (this process: simulation, DuckDB polls)")
    if batches:
        records = np.asarray([sum(b["rows"].values()) for b in batches], dtype=float)
        secs = np.asarray([b["seconds"] for b in batches], dtype=float)
        segs = np.asarray([len(b["segments"]) for b in batches], dtype=float)
        quarantined = sum(sum(b["quarantined"].values()) for b in batches)
        dups = sum(b["duplicates"] for b in batches)
        print(
            f"processor batches during the run: {len(batches)}; rows written per batch "
            f"p50 {np.median(records):,.0f} max {records.max():,.0f}; seconds per batch "
            f"p50 {np.median(secs):.2f} max {secs.max():.2f}; segments per batch "
            f"p50 {np.median(segs):.0f} max {segs.max():.0f}; quarantined {quarantined}, "
            f"duplicates {dups}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="messages/s, all devices")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the paced run")
    parser.add_argument("--roll-s", type=float, default=2.0, help="gateway_roll_s")
    parser.add_argument("--follow-s", type=float, default=1.0, help="follow_interval_s")
    parser.add_argument("--poll-s", type=float, default=0.5, help="DuckDB poll interval")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--branches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--probe-timeout", type=float, default=120.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publisher:
        print(json.dumps(_publisher(json.loads(sys.stdin.read()))))
        return
    if args.rate <= 0 or args.seconds <= 0 or args.poll_s <= 0:
        parser.error("--rate, --seconds and --poll-s must be positive")
    run(args)


if __name__ == "__main__":
    main()
