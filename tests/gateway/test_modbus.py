"""The Modbus poller against pymodbus's own server on loopback (simulator/modbus.py): what
it lands, how it survives devices that time out, vanish, answer exceptions or garbage, that
a slow device does not hold up the others, and that seq survives a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.modbus import ModbusDevice, ModbusPoller, PollerOptions, SeqStore
from gateway.modbus_maps import RegisterMap, load_map
from landing.reader import read_segment
from simulator.modbus import RegisterServer

SDM = load_map("eastron_sdm630")
METER = {
    "voltage_l1_v": 230.5,
    "voltage_l2_v": 231.0,
    "voltage_l3_v": 229.5,
    "current_l1_a": 10.25,
    "power_kw": 12.5,
    "frequency_hz": 50.0,
    "energy_import_kwh": 1234.5,
    "energy_export_kwh": 0.0,
}
FAST = PollerOptions(
    timeout_s=0.3, backoff_base_s=0.1, backoff_max_s=0.4, jitter_share=0.2, status_interval_s=0.05
)


def device(device_id: str, port: int, *, unit: int = 1, cadence_s: float = 0.1,
           register_map: RegisterMap = SDM) -> ModbusDevice:  # fmt: skip
    return ModbusDevice(device_id, "acme", "acme-blr-001", "127.0.0.1", port, unit, cadence_s,
                        register_map)  # fmt: skip


def records(landing: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(source, topic, identity, payload) of every landed record, in order."""
    out = []
    for seg in sorted((landing / "closed").glob("*.seg")):
        for e in read_segment(seg).envelopes():
            out.append((e.source, e.topic, e.identity, json.loads(e.payload)))
    return out


async def run_poller(poller: ModbusPoller, script: Callable[[], Awaitable[None]]) -> None:
    """Run the poller while ``script`` runs, then stop it and wait for it to finish."""
    task = asyncio.create_task(poller.run())
    try:
        await script()
    finally:
        poller.stop()
        await asyncio.wait_for(task, 5)


def test_polls_land_canonical_records_with_consecutive_seq(tmp_path: Path) -> None:
    async def main() -> ModbusPoller:
        server = RegisterServer()
        server.add_device(1, SDM.fields, METER)
        port = await server.start()
        poller = ModbusPoller([device("em-1", port)], landing_dir=tmp_path / "landing",
                              state_dir=tmp_path / "modbus", options=FAST)  # fmt: skip
        try:
            await run_poller(poller, lambda: asyncio.sleep(0.6))
        finally:
            await server.stop()
        return poller

    poller = asyncio.run(main())
    got = records(tmp_path / "landing")
    assert len(got) >= 4
    assert {(s, t, i) for s, t, i, _ in got} == {
        ("modbus", "emaas/v1/acme/acme-blr-001/em-1/telemetry", "em-1")
    }
    seqs = [p["seq"] for *_, p in got]
    assert seqs == list(range(1, len(got) + 1))
    body = got[-1][3]
    assert set(body) == {"device_id", "seq", "ts", "boot", "readings"}
    assert body["device_id"] == "em-1"
    assert body["readings"]["power_kw"] == pytest.approx(12.5)  # 12500 W on the wire
    assert body["readings"]["voltage_l1_v"] == pytest.approx(230.5)
    assert body["readings"]["energy_import_kwh"] == pytest.approx(1234.5)
    assert set(body["readings"]) == {f.name for f in SDM.fields}
    assert not list((tmp_path / "landing" / "open").glob("*.seg")), "the writer was closed"
    status = json.loads(poller.status_path.read_text())
    dev = status["devices"]["em-1"]
    assert status["running"] is False
    assert dev["state"] == "ok"
    assert dev["landed"] == len(got)
    assert dev["last_seq"] == seqs[-1]
    assert dev["consecutive_failures"] == 0
    assert poller.metrics.landed.labels("em-1")._value.get() == len(got)


async def _drop(server: RegisterServer) -> None:
    server.fault(1).drop = True


async def _exception(server: RegisterServer) -> None:
    server.fault(1).exception_code = 4


async def _nan(server: RegisterServer) -> None:
    server.fault(1).garbage = "nan"


async def _short(server: RegisterServer) -> None:
    server.fault(1).garbage = "short"


async def _vanish(server: RegisterServer) -> None:
    await server.stop()


async def _heal(server: RegisterServer) -> None:
    fault = server.fault(1)
    fault.drop, fault.exception_code, fault.garbage = False, None, None
    if server._server is None:
        await server.start()


@pytest.mark.parametrize(
    ("fault", "reason", "detail"),
    [
        (_drop, "timeout", "No response"),
        (_exception, "exception", "exception code 4"),
        (_nan, "garbage", "not a finite number"),
        (_short, "garbage", "75 registers"),
        (_vanish, "connection", "connect"),
    ],
)
def test_a_failing_device_is_counted_reported_and_retried_with_backoff(
    tmp_path: Path, fault: Callable[[RegisterServer], Awaitable[None]], reason: str, detail: str
) -> None:
    seen: dict[str, Any] = {}

    async def main() -> ModbusPoller:
        server = RegisterServer()
        server.add_device(1, SDM.fields, METER)
        port = await server.start()
        poller = ModbusPoller([device("em-1", port, cadence_s=0.05)],
                              landing_dir=tmp_path / "landing", state_dir=tmp_path / "modbus",
                              options=FAST)  # fmt: skip

        async def script() -> None:
            await asyncio.sleep(0.3)
            await fault(server)
            landed_before = poller.status()["devices"]["em-1"]["landed"]
            await asyncio.sleep(1.5)
            seen["failing"] = poller.status()["devices"]["em-1"]
            seen["landed_while_failing"] = seen["failing"]["landed"] - landed_before
            seen["file"] = json.loads(poller.status_path.read_text())["devices"]["em-1"]
            await _heal(server)
            await asyncio.sleep(1.0)  # backoff is capped at 0.4 s: it recovers

        try:
            await run_poller(poller, script)
        finally:
            await server.stop()
        return poller

    poller = asyncio.run(main())
    failing = seen["failing"]
    assert failing["state"] == "failing"
    assert failing["last_error"]["reason"] == reason
    assert detail in failing["last_error"]["detail"]
    assert seen["landed_while_failing"] <= 1  # a poll in flight when the fault began
    n = failing["failures"][reason]
    # backoff: 1.5 s of failures at a 0.05 s cadence would be 30 polls; doubling from 0.1 s
    # (capped at 0.4 s, timeouts adding 0.3 s each) allows far fewer
    assert 2 <= n <= 8, failing["failures"]
    assert seen["file"]["last_error"]["reason"] == reason  # the status file says so too
    assert poller.metrics.failures.labels("em-1", reason)._value.get() >= n
    after = poller.status()["devices"]["em-1"]
    assert after["state"] == "ok", after
    assert after["consecutive_failures"] == 0
    seqs = [p["seq"] for *_, p in records(tmp_path / "landing")]
    assert seqs == sorted(set(seqs)), "seq never repeats"


def test_a_slow_device_does_not_delay_the_others(tmp_path: Path) -> None:
    async def main() -> ModbusPoller:
        slow, fast = RegisterServer(), RegisterServer()
        slow.add_device(1, SDM.fields, METER)
        fast.add_device(1, SDM.fields, METER)
        slow.fault(1).delay_s = 0.6  # answers, late (under the 1 s timeout)
        ports = await slow.start(), await fast.start()
        options = PollerOptions(timeout_s=1.0, status_interval_s=0.05)
        poller = ModbusPoller(
            [device("em-slow", ports[0], cadence_s=0.1), device("em-fast", ports[1])],
            landing_dir=tmp_path / "landing", state_dir=tmp_path / "modbus", options=options,
        )  # fmt: skip
        try:
            await run_poller(poller, lambda: asyncio.sleep(1.6))
        finally:
            await slow.stop()
            await fast.stop()
        return poller

    poller = asyncio.run(main())
    got = records(tmp_path / "landing")
    fast_ts = [p["ts"] for _, _, ident, p in got if ident == "em-fast"]
    slow_n = sum(1 for _, _, ident, _ in got if ident == "em-slow")
    assert slow_n <= 3
    # about 16 on an idle machine, 11 seen on a loaded one; a poller that let the slow
    # device hold the fast one up would poll it as seldom as the slow one (3)
    assert len(fast_ts) >= 8, len(fast_ts)
    gaps = [b - a for a, b in itertools.pairwise(fast_ts)]
    assert max(gaps) < 0.3, gaps  # on cadence (0.1 s) while the slow one takes 0.6 s a poll
    assert poller.status()["devices"]["em-slow"]["consecutive_failures"] == 0


def test_units_on_one_endpoint_share_the_connection_one_request_at_a_time(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        server = RegisterServer()
        server.add_device(1, SDM.fields, METER)
        server.add_device(2, SDM.fields, {**METER, "power_kw": 7.0})
        port = await server.start()
        poller = ModbusPoller(
            [device("em-a", port, unit=1), device("em-b", port, unit=2)],
            landing_dir=tmp_path / "landing", state_dir=tmp_path / "modbus", options=FAST,
        )  # fmt: skip
        try:
            await run_poller(poller, lambda: asyncio.sleep(0.5))
        finally:
            await server.stop()

    asyncio.run(main())
    power = {ident: p["readings"]["power_kw"] for _, _, ident, p in records(tmp_path / "landing")}
    assert power == {"em-a": pytest.approx(12.5), "em-b": pytest.approx(7.0)}


def test_seq_survives_a_restart_and_a_reserved_number_is_never_reused(tmp_path: Path) -> None:
    async def one_run(port_holder: list[int]) -> None:
        server = RegisterServer()
        server.add_device(1, SDM.fields, METER)
        port = await server.start()
        port_holder.append(port)
        poller = ModbusPoller([device("em-1", port)], landing_dir=tmp_path / "landing",
                              state_dir=tmp_path / "modbus", options=FAST)  # fmt: skip
        try:
            await run_poller(poller, lambda: asyncio.sleep(0.35))
        finally:
            await server.stop()

    ports: list[int] = []
    asyncio.run(one_run(ports))
    first = [p for *_, p in records(tmp_path / "landing")]
    store = SeqStore(tmp_path / "modbus" / "seq")
    boot, high = store.current("em-1") or (0, 0)
    assert high == first[-1]["seq"]  # the write-ahead state holds the last landed seq
    # a crash after the state's fsync and before the landing: that number is spent
    assert store.reserve("em-1") == (boot, high + 1)
    asyncio.run(one_run(ports))
    second = [p for *_, p in records(tmp_path / "landing")][len(first) :]
    assert second, "the second run landed readings"
    assert second[0]["seq"] == high + 2, "a gap, never a reuse"
    assert {p["boot"] for p in first + second} == {boot}
    seqs = [p["seq"] for p in first + second]
    assert seqs == sorted(set(seqs))
