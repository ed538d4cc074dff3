"""The live vendor devices: a Shelly Pro 3EM publishing its status over MQTT and an Eastron
SDM630 served as Modbus registers, in real time, with the truth of what each sent.

Their readings are stamped on arrival (a Shelly's status carries no time; the poller stamps
a poll), so they cannot replay the simulated period: each runs its branch's model at
``config.live_cadence_s`` (the registry's ``cadence_s`` of both), from the interval of the
simulated day that matches the local time of day now, one reading per interval of real time:

- Shelly (``shelly_pro3em``): every ``live_cadence_s`` seconds, ``<id>/status/em:0``
  (W, VA, V, A, Hz) and ``<id>/status/emdata:0`` (``total_act``, ``total_act_ret`` in Wh),
  QoS 1, as the device's account; a message counts as sent when its PUBACK came.
  Two messages per reading: two rows in the lake (the instantaneous and the counters
  profiles).
- Modbus (``modbus``): ``simulator.modbus.RegisterServer`` on the registry's
  ``modbus_endpoint`` serves the SDM630 map (``register_fields``: the gateway's map, which
  the caller loads; the simulator does not import the gateway); the first request of each
  poll (the map's lowest address) moves the meter to its next reading, so each poll reads
  one reading whole and no reading twice. Every reading served is one the poller lands.

``LiveDevices.stop()`` returns, per device, the manifest's vendor entry (messages, where
they must end, the kWh the lake's counter steps must add up to: the rise of the import
counter over what was sent, the Modbus values as float32 as the registers hold them) and
writes it to ``live.json``; ``merge_live`` adds it to a manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contracts.errors import ConfigError
from simulator.config import SimConfig
from simulator.modbus import RegisterServer, RegisterSpec
from simulator.physics import simulate_branch
from simulator.reference import Branch, Fleet, rng_for
from simulator.stream import columns
from simulator.vendors import truth_entry

__all__ = ["LIVE_NAME", "LiveDevices", "merge_live"]

LIVE_NAME = "live.json"
_PHASES = (("a", "l1"), ("b", "l2"), ("c", "l3"))


def _f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


class _Series:
    """A live branch's readings at the live cadence, from the interval of the day now."""

    def __init__(self, config: SimConfig, branch: Branch) -> None:
        rng = rng_for(config.seed, "physics", branch.branch_id)
        c = config.live_cadence_s
        series = simulate_branch(branch, config.start, 1, c, rng)
        self.device = branch.devices[0]
        self.cols = columns(series, self.device)
        local = datetime.now(ZoneInfo(str(branch.row["timezone"])))
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        self.n = series.n
        self.k = min(seconds // c, series.n - 1)

    def take(self) -> dict[str, Any]:
        """The next reading (the day wraps around)."""
        reading = {name: values[self.k] for name, values in self.cols.items()}
        self.k = (self.k + 1) % self.n
        return reading


def _entry(fmt: str, branch: Branch) -> dict[str, Any]:
    return {**truth_entry(fmt, branch.devices[0]), "vendor": fmt, "live": True}


class _Shelly:
    def __init__(
        self,
        series: _Series,
        branch: Branch,
        broker: tuple[str, int],
        secret: str,
        cadence_s: float,
        timeout_s: float,
    ) -> None:
        self.series = series
        self.entry = _entry("shelly_pro3em", branch)
        self.cadence_s = cadence_s
        self.timeout_s = timeout_s
        self.account = series.device.account
        self.stop_event = threading.Event()
        self.unacked = 0
        self.readings = 0
        self.totals: list[float] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.account, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(self.account, secret)
        self.broker = broker
        self.thread = threading.Thread(target=self._run, name="live-shelly", daemon=True)

    def start(self) -> None:
        self.client.connect(*self.broker, keepalive=30)
        self.client.loop_start()
        self.thread.start()

    def _publish(self, topic: str, body: dict[str, Any]) -> bool:
        info = self.client.publish(topic, orjson.dumps(body), qos=1)
        with contextlib.suppress(RuntimeError, ValueError):  # not connected, or no PUBACK
            info.wait_for_publish(self.timeout_s)
        if info.is_published():
            self.entry["messages"] += 1
            return True
        self.unacked += 1
        return False

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            r = self.series.take()
            em: dict[str, Any] = {"id": 0}
            for p, q in _PHASES:
                em[f"{p}_current"] = r[f"current_{q}_a"]
                em[f"{p}_voltage"] = r[f"voltage_{q}_v"]
                em[f"{p}_act_power"] = round(r[f"power_{q}_kw"] * 1000.0, 1)
                em[f"{p}_freq"] = r["frequency_hz"]
            em["total_act_power"] = round(r["power_kw"] * 1000.0, 1)
            em["total_aprt_power"] = round(r["apparent_power_kva"] * 1000.0, 1)
            em["n_current"] = None
            total = round(r["energy_import_kwh"] * 1000.0, 2)
            emdata = {
                "id": 0,
                "total_act": total,
                "total_act_ret": round(r["energy_export_kwh"] * 1000.0, 2),
            }
            prefix = self.series.device.device_id
            sent = self._publish(f"{prefix}/status/em:0", em)
            if self._publish(f"{prefix}/status/emdata:0", emdata):
                self.totals.append(total / 1000.0)
            self.readings += int(sent)
            next_at += self.cadence_s
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(timeout=self.timeout_s + self.cadence_s + 5)
        self.client.disconnect()
        self.client.loop_stop()
        self.entry["lake"] = {"meter_readings": self.entry["messages"]}
        self.entry["readings"] = self.readings
        self.entry["unacked"] = self.unacked
        if self.totals:
            self.entry["energy_import_kwh"] = round(self.totals[-1] - self.totals[0], 6)
        return self.entry


class _Modbus:
    def __init__(
        self, series: _Series, branch: Branch, fields: Iterable[RegisterSpec], endpoint: str
    ) -> None:
        self.series = series
        self.entry = _entry("modbus", branch)
        self.specs = list(fields)
        host, _, port = endpoint.rpartition(":")
        unit = branch.devices[0].row.get("modbus_unit_id")
        self.unit_id = int(unit) if unit is not None else 1
        self.first = {
            fn: min(s.address for s in self.specs if s.function == fn)
            for fn in {s.function for s in self.specs}
        }
        self.server = RegisterServer(host, int(port), on_request=self._on_request)
        self.current = self._next()
        self.server.add_device(self.unit_id, self.specs, self.current)
        self.served: list[float] = []  # the import counter of each reading served (float32)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-modbus")

    def _next(self) -> dict[str, float | str]:
        names = {s.name for s in self.specs}
        return {k: v for k, v in self.series.take().items() if k in names}

    def _on_request(self, unit_id: int, function: str, address: int, _count: int) -> None:
        """A poll begins (its first request reads the map's lowest address): serve the next
        reading (the first poll reads the one set at start)."""
        if unit_id != self.unit_id or address != self.first.get(function):
            return
        if self.served:
            self.current = self._next()
            self.server.set_readings(unit_id, self.current)
        self.served.append(_f32(float(self.current["energy_import_kwh"])))

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=10)

    def stop(self) -> dict[str, Any]:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        n = len(self.served)
        self.entry["messages"] = n
        self.entry["readings"] = n
        self.entry["lake"] = {"meter_readings": n} if n else {}
        if n:
            self.entry["energy_import_kwh"] = round(self.served[-1] - self.served[0], 6)
        self.entry["requests"] = self.server.requests
        return self.entry


class LiveDevices:
    """The run's live devices (see the module doc): ``start()``, then ``stop()``."""

    def __init__(
        self,
        config: SimConfig,
        fleet: Fleet,
        *,
        mqtt: tuple[str, int] | None = None,
        secrets: Mapping[str, str] | None = None,
        register_fields: Iterable[RegisterSpec] | None = None,
        out: Path | None = None,
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.out = out
        self.shelly: dict[str, _Shelly] = {}
        self.modbus: dict[str, _Modbus] = {}
        secrets = secrets or fleet.tokens
        for branch in fleet.branches:
            if branch.vendor == "shelly_pro3em":
                if mqtt is None:
                    raise ConfigError(
                        "the live Shelly publishes over MQTT: give a broker", setting="mqtt"
                    )
                device = branch.devices[0]
                self.shelly[device.device_id] = _Shelly(
                    _Series(config, branch),
                    branch,
                    mqtt,
                    secrets[device.device_id],
                    float(config.live_cadence_s),
                    ack_timeout_s,
                )
            elif branch.vendor == "modbus":
                if register_fields is None:
                    raise ConfigError(
                        "the live Modbus meter needs its register map's fields",
                        setting="register_fields",
                    )
                device = branch.devices[0]
                endpoint = str(device.row["modbus_endpoint"])
                self.modbus[device.device_id] = _Modbus(
                    _Series(config, branch), branch, register_fields, endpoint
                )

    @property
    def device_ids(self) -> list[str]:
        return [*self.shelly, *self.modbus]

    def start(self) -> None:
        for m in self.modbus.values():
            m.start()
        for s in self.shelly.values():
            s.start()

    def stop(self) -> dict[str, Any]:
        """Stop every live device; per device, its manifest entry (also in ``live.json``)."""
        truth = {d: s.stop() for d, s in self.shelly.items()}
        truth |= {d: m.stop() for d, m in self.modbus.items()}
        if self.out is not None:
            (self.out / LIVE_NAME).write_text(json.dumps(truth, indent=2) + "\n")
        return truth


def merge_live(manifest: dict[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with the live devices' entries and their rows in the expected counts."""
    vendor = manifest.setdefault("vendor_devices", {})
    lake = manifest["expected"]["lake_rows"]
    for device_id, entry in live.items():
        vendor[device_id] = dict(entry)
        for dataset, n in entry["lake"].items():
            lake[dataset] = lake.get(dataset, 0) + n
        branch = manifest["branches"].get(entry["branch_id"])
        if branch is not None:
            records = branch.setdefault("records", {"lines": 0, "lake": {}})
            records["lines"] = records.get("lines", 0) + entry["messages"]
            for dataset, n in entry["lake"].items():
                records["lake"][dataset] = records["lake"].get(dataset, 0) + n
    manifest["lines"] = manifest.get("lines", 0) + sum(e["messages"] for e in live.values())
    return manifest
