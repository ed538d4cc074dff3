"""From a branch's series to the messages its devices send, with faults injected.

Every message carries where it must end (lake, quarantine with a reason code, or
duplicate), so the manifest can state the truth the pipeline is checked against.
A message gets at most one message fault; state faults (counter resets, stuck
sensors) change the series and their readings are kept clear of message faults.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from contracts import ContractRegistry
from simulator.config import FAULTS, SimConfig
from simulator.physics import BranchSeries
from simulator.reference import Branch, Device, rng_for

__all__ = ["Message", "StateFault", "branch_messages", "columns", "topic_for"]

_DECIMALS: dict[str, int] = {
    "voltage_l1_v": 1,
    "voltage_l2_v": 1,
    "voltage_l3_v": 1,
    "voltage_v": 1,
    "current_l1_a": 2,
    "current_l2_a": 2,
    "current_l3_a": 2,
    "current_a": 2,
    "power_l1_kw": 3,
    "power_l2_kw": 3,
    "power_l3_kw": 3,
    "power_kw": 3,
    "apparent_power_kva": 3,
    "reactive_power_kvar": 3,
    "power_factor": 3,
    "frequency_hz": 2,
    "energy_import_kwh": 3,
    "energy_export_kwh": 3,
    "energy_generated_kwh": 3,
    "engine_speed_rpm": 0,
    "oil_pressure_kpa": 0,
    "coolant_temp_degc": 1,
    "battery_voltage_v": 2,
    "fuel_level_pct": 4,
    "load_pct": 1,
    "run_hours_h": 4,
    "inverter_temp_degc": 1,
    "irradiance_w_m2": 1,
}
_COUNTERS = {
    "meter": ("energy_import_kwh", "energy_export_kwh"),
    "solar": ("energy_generated_kwh",),
}
_JUMP_FIELD = {"meter": "energy_import_kwh", "dg": "run_hours_h", "solar": "energy_generated_kwh"}
_STUCK_FIELD = {"meter": "voltage_l2_v", "dg": "coolant_temp_degc", "solar": "inverter_temp_degc"}
_POWER_UNITS = {
    "power_kw": "W",
    "power_l1_kw": "W",
    "power_l2_kw": "W",
    "power_l3_kw": "W",
    "apparent_power_kva": "VA",
    "reactive_power_kvar": "var",
}
_NON_FINITE = (b"NaN", b"Infinity", b"-Infinity")
_PLACEHOLDER = "__energylake_non_finite__"


def topic_for(client_id: str, branch_id: str, device_id: str) -> str:
    """The canonical MQTT topic (and file path) of a device's telemetry."""
    return f"emaas/v1/{client_id}/{branch_id}/{device_id}/telemetry"


@dataclass(slots=True)
class Message:
    """One message as sent: its envelope, where it goes, and where it must end."""

    device_id: str
    kind: str
    claim_client: str
    claim_branch: str
    seq: int
    ts: int
    received_at: float
    readings: dict[str, Any]
    index: int
    route: str = "lake"  # lake | quarantine | duplicate
    reason_code: str | None = None
    fault: str | None = None
    units: dict[str, str] | None = None
    ts_override: int | float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    mangle: str | None = None  # malformed_json | bad_utf8 | non_finite:<field>:<token>
    # A vendor device's message (simulator/vendors.py): its decoder, topic, payload as sent,
    # and the MQTT account it publishes with (its MQTT name or edge node; default its id).
    fmt: str = "canonical"
    vendor_topic: str | None = None
    vendor_payload: bytes | None = None
    account: str | None = None

    @property
    def topic(self) -> str:
        if self.vendor_topic is not None:
            return self.vendor_topic
        return topic_for(self.claim_client, self.claim_branch, self.device_id)

    @property
    def username(self) -> str:
        """The MQTT account the message is published with."""
        return self.account or self.device_id

    def payload(self, rng_seed: int) -> bytes:
        if self.vendor_payload is not None:
            return self.vendor_payload
        envelope: dict[str, Any] = {
            "device_id": self.device_id,
            "seq": self.seq,
            "ts": self.ts if self.ts_override is None else self.ts_override,
            "readings": self.readings,
        }
        if self.units:
            envelope["units"] = self.units
        envelope.update(self.extra)
        raw = orjson.dumps(envelope)
        if self.mangle is None:
            return raw
        kind, _, arg = self.mangle.partition(":")
        if kind == "non_finite":
            token = _NON_FINITE[int(arg)]
            return raw.replace(orjson.dumps(_PLACEHOLDER), token)
        if kind == "malformed_json":
            cut = 1 + rng_seed % (len(raw) - 2)
            return raw[:cut]
        if kind == "bad_utf8":
            at = raw.index(self.device_id.encode()) + 1
            return raw[:at] + b"\xff\xfe" + raw[at + 2 :]
        raise ValueError(f"unknown mangle {self.mangle}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class StateFault:
    fault: str
    device_id: str
    field: str
    first_seq: int
    length: int


def columns(series: BranchSeries, device: Device) -> dict[str, list[Any]]:
    """A device's readings per interval, rounded as it sends them (contract field names)."""
    return _columns(series, device)


def _columns(series: BranchSeries, device: Device) -> dict[str, list[Any]]:
    data = {"meter": series.meter, "dg": series.dg, "solar": series.solar}[device.kind]
    cols: dict[str, list[Any]] = {}
    for name, values in data.items():
        if name.startswith("_"):
            continue
        if name == "starts_count":
            cols[name] = [int(v) for v in values]
        else:
            cols[name] = np.round(values, _DECIMALS[name]).tolist()
    if device.kind == "dg":
        status = series.dg["_status"]
        cols["status"] = [BranchSeries.dg_state_name(int(s)) for s in status]
    return cols


def _state_faults(
    config: SimConfig,
    series: BranchSeries,
    device: Device,
    cols: dict[str, list[Any]],
    rng: np.random.Generator,
    seq0: int,
) -> tuple[list[StateFault], set[int]]:
    n = series.n
    faults: list[StateFault] = []
    protected: set[int] = set()
    rates = config.faults
    resets = (
        rng.binomial(config.days, min(1.0, rates.counter_reset)) if device.kind in _COUNTERS else 0
    )
    for _ in range(resets):
        at = int(rng.integers(2, n - 2))
        if any(i in protected for i in range(at - 1, at + 2)):
            continue
        for name in _COUNTERS[device.kind]:
            base = cols[name][at - 1]
            cols[name][at:] = [round(v - base, _DECIMALS[name]) for v in cols[name][at:]]
        protected.update(range(at - 1, at + 2))
        faults.append(
            StateFault("counter_reset", device.device_id, _COUNTERS[device.kind][0], seq0 + at, 1)
        )
    for _ in range(rng.binomial(config.days, min(1.0, rates.stuck_sensor))):
        length = int(rng.integers(20, 41))
        at = int(rng.integers(1, n - length - 1))
        range(at, at + length)
        if any(i in protected for i in range(at - 1, at + length + 1)):
            continue
        if device.kind == "meter" and bool(series.outage[at - 1 : at + length + 1].any()):
            continue
        name = _STUCK_FIELD[device.kind]
        cols[name][at : at + length] = [cols[name][at]] * length
        protected.update(range(at - 1, at + length + 1))
        faults.append(StateFault("stuck_sensor", device.device_id, name, seq0 + at, length))
    return faults, protected


def _required_readings(registry: ContractRegistry, kind: str, present: dict[str, Any]) -> list[str]:
    contract = registry.get(registry.dataset_of_kind[kind])
    return [f.name for f in contract.fields if f.required and f.name in present]


def branch_messages(
    config: SimConfig,
    registry: ContractRegistry,
    branch: Branch,
    series: BranchSeries,
    other_branches: list[Branch],
) -> tuple[list[Message], list[StateFault]]:
    """Every message the branch's devices send in the period, faults included."""
    messages: list[Message] = []
    state_faults: list[StateFault] = []
    c = series.cadence_s
    for device in branch.devices:
        rng = rng_for(config.seed, "stream", device.device_id)
        cols = _columns(series, device)
        seq0 = int(rng.integers(0, 5_000_000))
        faults, protected = _state_faults(config, series, device, cols, rng, seq0)
        state_faults.extend(faults)
        names = list(cols)
        latency = rng.uniform(0.2, 2.5, series.n)
        device_msgs = [
            Message(
                device_id=device.device_id,
                kind=device.kind,
                claim_client=device.client_id,
                claim_branch=device.branch_id,
                seq=seq0 + k,
                ts=int(series.t0) + k * c + device.offset_s,
                received_at=float(series.t0 + k * c + device.offset_s + latency[k]),
                readings={name: cols[name][k] for name in names},
                index=k,
            )
            for k in range(series.n)
        ]
        messages.extend(device_msgs)
        messages.extend(
            _inject(config, registry, device, device_msgs, protected, rng, other_branches)
        )
    messages.extend(_unknown_devices(config, branch, series))
    return messages, state_faults


def _inject(
    config: SimConfig,
    registry: ContractRegistry,
    device: Device,
    msgs: list[Message],
    protected: set[int],
    rng: np.random.Generator,
    other_branches: list[Branch],
) -> list[Message]:
    """Apply message faults in place; return the extra messages (duplicates)."""
    rates = config.faults.as_dict()
    n = len(msgs)
    free = [i for i in range(1, n - 1) if i not in protected]
    rng.shuffle(free)
    extras: list[Message] = []
    pool = list(free)

    def take(count: int, ok: Any = None) -> list[Message]:
        chosen: list[Message] = []
        keep: list[int] = []
        while pool and len(chosen) < count:
            i = pool.pop()
            if ok is None or ok(msgs[i]):
                chosen.append(msgs[i])
            else:
                keep.append(i)
        pool.extend(keep)
        return chosen

    def mark(msg: Message, fault: str) -> None:
        spec = FAULTS[fault]
        msg.fault = fault
        msg.route = spec.route
        msg.reason_code = spec.reason_code

    # out_of_order goes last: its victims need a successor no other fault touched.
    order = [f for f in rates if f != "out_of_order"] + ["out_of_order"]
    for fault in order:
        rate = rates[fault]
        if fault in ("counter_reset", "stuck_sensor", "unknown_device") or rate <= 0:
            continue
        if fault == "wrong_branch" and not other_branches:
            continue
        count = int(rng.binomial(n, rate))
        if count == 0:
            continue
        ok: Any = None
        if fault in ("unit_declared", "unit_undeclared"):
            if device.kind != "meter":
                continue
            ok = _unit_ok
        if fault == "out_of_order":
            ok = lambda m: msgs[m.index + 1].fault in (None, "out_of_order")  # noqa: E731
        for msg in take(count, ok):
            if fault == "duplicate":
                # The original stays clean; the copy, delivered a little later, is the duplicate.
                copy = replace(
                    msg,
                    readings=dict(msg.readings),
                    received_at=msg.received_at + float(rng.uniform(1.0, 30.0)),
                )
                mark(copy, fault)
                extras.append(copy)
                continue
            mark(msg, fault)
            if fault == "out_of_order":
                pass  # delivered after its successor: set once every delivery time is known
            elif fault == "late":
                msg.received_at = msg.ts + float(rng.uniform(3600.0, 48 * 3600.0))
            elif fault == "timestamp_future":
                msg.ts_override = msg.ts + int(rng.uniform(3600, 3 * 86400))
            elif fault == "timestamp_ancient":
                if rng.random() < 0.5:
                    msg.ts_override = 946684800 + msg.index * config.cadence_s
                else:
                    msg.ts_override = msg.ts - int(rng.uniform(8 * 86400, 60 * 86400))
            elif fault == "epoch_ms":
                msg.ts_override = msg.ts * 1000
            elif fault == "non_finite":
                numeric = [k for k, v in msg.readings.items() if isinstance(v, float)]
                name = numeric[int(rng.integers(len(numeric)))]
                msg.readings[name] = _PLACEHOLDER
                msg.mangle = f"non_finite:{int(rng.integers(3))}"
            elif fault == "missing_field":
                required = _required_readings(registry, device.kind, msg.readings)
                name = required[int(rng.integers(len(required)))]
                if rng.random() < 0.5:
                    del msg.readings[name]
                else:
                    msg.readings[name] = None
            elif fault in ("unit_declared", "unit_undeclared"):
                for name, _unit in _POWER_UNITS.items():
                    msg.readings[name] = round(msg.readings[name] * 1000.0, 1)
                if fault == "unit_declared":
                    msg.units = dict(_POWER_UNITS)
            elif fault == "implausible_jump":
                name = _JUMP_FIELD[device.kind]
                bump = 500.0 if name == "run_hours_h" else device.rated_power_kw * 24.0
                msg.readings[name] = round(msg.readings[name] + bump, _DECIMALS[name])
            elif fault == "schema_drift":
                if rng.random() < 0.5:
                    msg.readings["thd_voltage_pct"] = round(float(rng.uniform(1, 6)), 2)
                else:
                    numeric = [k for k, v in msg.readings.items() if isinstance(v, float)]
                    name = numeric[int(rng.integers(len(numeric)))]
                    msg.readings[name] = str(msg.readings[name])
            elif fault == "wrong_branch":
                other = other_branches[int(rng.integers(len(other_branches)))]
                msg.claim_client, msg.claim_branch = other.client_id, other.branch_id
            elif fault == "malformed_json":
                msg.mangle = "malformed_json"
            elif fault == "bad_utf8":
                msg.mangle = "bad_utf8"
            elif fault == "oversized":
                size = config.payload_limit_bytes + int(rng.integers(1, 200_000))
                msg.extra["diag"] = "x" * size
    for i in range(n - 2, 0, -1):  # backwards: a chain of them stays in order of arrival
        if msgs[i].fault == "out_of_order":
            msgs[i].received_at = msgs[i + 1].received_at + float(
                rng.uniform(1.0, config.cadence_s)
            )
    return extras


def _unit_ok(msg: Message) -> bool:
    power = msg.readings.get("power_kw")
    return isinstance(power, float) and abs(power) >= 1.0


def _unknown_devices(config: SimConfig, branch: Branch, series: BranchSeries) -> list[Message]:
    rate = config.faults.unknown_device
    meter = branch.device("meter")
    if rate <= 0 or meter is None:
        return []
    rng = rng_for(config.seed, "unknown", branch.branch_id)
    count = int(rng.binomial(series.n * len(branch.devices), rate))
    if count == 0:
        return []
    device_id = "em-" + hashlib.sha256(f"unregistered/{branch.branch_id}".encode()).hexdigest()[:8]
    cols = _columns(series, meter)
    seq0 = int(rng.integers(0, 1000))
    steps = sorted(int(k) for k in rng.choice(series.n, size=min(count, series.n), replace=False))
    out = []
    for j, k in enumerate(steps):
        ts = int(series.t0) + k * series.cadence_s + 7
        out.append(
            Message(
                device_id=device_id,
                kind="meter",
                claim_client=branch.client_id,
                claim_branch=branch.branch_id,
                seq=seq0 + j,
                ts=ts,
                received_at=ts + 0.8,
                readings={name: values[k] for name, values in cols.items()},
                index=k,
                route="quarantine",
                reason_code="UNKNOWN_DEVICE",
                fault="unknown_device",
            )
        )
    return out
