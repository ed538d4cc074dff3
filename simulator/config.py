"""What to simulate: fleet size, period, seed, cadence and the fault rates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date
from typing import Any

from contracts.errors import ConfigError

__all__ = ["FAULTS", "LIVE_FORMATS", "VENDOR_FORMATS", "FaultRates", "FaultSpec", "SimConfig"]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One injectable fault: where its records must end (docs/SIMULATOR.md, "Faults")."""

    name: str
    route: str  # lake | quarantine | duplicate
    reason_code: str | None
    flag: str | None
    description: str


# Message faults are a share of clean messages; state faults (counter_reset,
# stuck_sensor) are events per device per day; unknown_device is a share of all
# messages sent by devices the registry does not know.
FAULTS: dict[str, FaultSpec] = {
    s.name: s
    for s in (
        FaultSpec("duplicate", "duplicate", None, None, "QoS 1 redelivery: the same message again"),
        FaultSpec("out_of_order", "lake", None, None, "delivered after its successor (counted)"),
        FaultSpec("late", "lake", None, None, "delivered 1 to 48 hours late (counted)"),
        FaultSpec(
            "timestamp_future",
            "quarantine",
            "TIMESTAMP_OUT_OF_RANGE",
            None,
            "device clock ahead by an hour to three days",
        ),
        FaultSpec(
            "timestamp_ancient",
            "quarantine",
            "TIMESTAMP_OUT_OF_RANGE",
            None,
            "device clock reset (year 2000) or weeks behind",
        ),
        FaultSpec(
            "epoch_ms",
            "quarantine",
            "TIMESTAMP_OUT_OF_RANGE",
            None,
            "ts in epoch milliseconds where seconds are expected",
        ),
        FaultSpec("non_finite", "quarantine", "NON_FINITE", None, "a reading is NaN or Infinity"),
        FaultSpec(
            "missing_field",
            "quarantine",
            "MISSING_FIELD",
            None,
            "a required reading absent or null",
        ),
        FaultSpec(
            "unit_declared",
            "lake",
            None,
            "UNIT_CONVERTED",
            "power in W, VA, var with the units declared (converted)",
        ),
        FaultSpec(
            "unit_undeclared",
            "quarantine",
            "UNIT_SUSPECT",
            None,
            "power in W, VA, var without a word (W sent as kW)",
        ),
        FaultSpec(
            "implausible_jump",
            "quarantine",
            "IMPLAUSIBLE_DELTA",
            None,
            "a counter spikes by more than the rating allows",
        ),
        FaultSpec(
            "schema_drift",
            "quarantine",
            "SCHEMA_MISMATCH",
            None,
            "an unknown field or a number sent as a string",
        ),
        FaultSpec(
            "wrong_branch",
            "quarantine",
            "BRANCH_MISMATCH",
            None,
            "published under another branch's topic",
        ),
        FaultSpec("malformed_json", "quarantine", "MALFORMED_PAYLOAD", None, "truncated JSON"),
        FaultSpec("bad_utf8", "quarantine", "MALFORMED_PAYLOAD", None, "invalid UTF-8 bytes"),
        FaultSpec(
            "oversized", "quarantine", "PAYLOAD_TOO_LARGE", None, "payload above the size limit"
        ),
        FaultSpec(
            "unknown_device",
            "quarantine",
            "UNKNOWN_DEVICE",
            None,
            "a device the registry does not know",
        ),
        FaultSpec(
            "counter_reset",
            "lake",
            None,
            "COUNTER_RESET",
            "a cumulative counter restarts from zero (state fault, per device-day)",
        ),
        FaultSpec(
            "stuck_sensor",
            "lake",
            None,
            "STUCK",
            "a sensor repeats one value for 20 to 40 readings (state fault, per device-day)",
        ),
    )
}

STATE_FAULTS = frozenset({"counter_reset", "stuck_sensor"})

# The vendor devices a run may add (docs/SIMULATOR.md, "Vendor devices"): one meter each, on a
# branch of its own of the first client. ``modbus`` is an Eastron SDM630 served as registers
# and polled; the others publish over MQTT in their vendor's format.
VENDOR_FORMATS: tuple[str, ...] = (
    "tasmota",
    "shelly_pro3em",
    "thingsboard",
    "sparkplug_b",
    "modbus",
)
# Sent live, in real time (their readings are stamped on arrival: a Shelly's status carries no
# time, the poller stamps a poll), not replayed from the simulated period.
LIVE_FORMATS = frozenset({"shelly_pro3em", "modbus"})


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Rates of every fault. Message faults: share of messages. State faults: per device-day."""

    duplicate: float = 0.01
    out_of_order: float = 0.004
    late: float = 0.002
    timestamp_future: float = 0.001
    timestamp_ancient: float = 0.0005
    epoch_ms: float = 0.001
    non_finite: float = 0.001
    missing_field: float = 0.001
    unit_declared: float = 0.001
    unit_undeclared: float = 0.001
    implausible_jump: float = 0.0005
    schema_drift: float = 0.0005
    wrong_branch: float = 0.0005
    malformed_json: float = 0.001
    bad_utf8: float = 0.0003
    oversized: float = 0.0002
    unknown_device: float = 0.001
    counter_reset: float = 0.05
    stuck_sensor: float = 0.1

    @classmethod
    def none(cls) -> FaultRates:
        return cls(**{f.name: 0.0 for f in fields(cls)})

    def with_overrides(self, overrides: dict[str, float]) -> FaultRates:
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}",
                setting="--fault",
                value=sorted(unknown),
            )
        for name, rate in overrides.items():
            limit = 5.0 if name in STATE_FAULTS else 0.2
            if not 0.0 <= rate <= limit:
                raise ConfigError(
                    f"fault rate {name}={rate} must be within [0, {limit}]",
                    setting="--fault",
                    value=f"{name}={rate}",
                )
        return replace(self, **overrides)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A simulation run: clients x branches per client, for some days from a start date."""

    clients: int = 2
    branches: int = 5
    days: int = 1
    start: date = date(2026, 11, 16)
    seed: int = 42
    cadence_s: int = 60
    dg_share: float = 0.8
    solar_share: float = 0.6
    payload_limit_bytes: int = 65536
    faults: FaultRates = field(default_factory=FaultRates)
    # Vendor devices (opt-in: none by default, so existing runs stay byte for byte the same).
    vendor_devices: tuple[str, ...] = ()
    modbus_endpoint: str = "127.0.0.1:5020"  # where the simulated SDM630 is served
    live_cadence_s: int = 2  # seconds between a live device's readings (real time)

    def __post_init__(self) -> None:
        if not 1 <= self.clients <= 500:
            raise ConfigError(
                "clients must be within 1..500", setting="--clients", value=self.clients
            )
        if not 1 <= self.branches <= 5000:
            raise ConfigError(
                "branches per client must be within 1..5000",
                setting="--branches",
                value=self.branches,
            )
        if not 1 <= self.days <= 366:
            raise ConfigError("days must be within 1..366", setting="--days", value=self.days)
        if self.cadence_s not in (10, 15, 30, 60, 120, 300, 900):
            raise ConfigError(
                "cadence_s must be one of 10, 15, 30, 60, 120, 300, 900",
                setting="--cadence",
                value=self.cadence_s,
            )
        if not (0 <= self.dg_share <= 1 and 0 <= self.solar_share <= 1):
            raise ConfigError(
                "dg_share and solar_share must be within [0, 1]",
                setting="dg_share/solar_share",
                value=(self.dg_share, self.solar_share),
            )

        unknown = sorted(set(self.vendor_devices) - set(VENDOR_FORMATS))
        if unknown or len(set(self.vendor_devices)) != len(self.vendor_devices):
            raise ConfigError(
                f"vendor_devices must name each of {', '.join(VENDOR_FORMATS)} at most once",
                setting="--vendor",
                value=list(self.vendor_devices),
            )
        if not 1 <= self.live_cadence_s <= 60:
            raise ConfigError(
                "live_cadence_s must be within 1..60",
                setting="live_cadence_s",
                value=self.live_cadence_s,
            )
        host, _, port = self.modbus_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                "modbus_endpoint must be host:port",
                setting="modbus_endpoint",
                value=self.modbus_endpoint,
            )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        if not self.vendor_devices:  # a run without them: the manifest as before
            for name in ("vendor_devices", "modbus_endpoint", "live_cadence_s"):
                del out[name]
        else:
            out["vendor_devices"] = list(self.vendor_devices)
        return out
