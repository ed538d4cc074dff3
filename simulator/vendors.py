"""Vendor devices' messages: a branch's meter readings as a Tasmota, a ThingsBoard client or a
Sparkplug B edge node sends them, each with where it must end, and each device's truth.

What each format sends (the decoders in transforms/decoders/ read exactly this):

- ``tasmota``: ``tele/<mqtt_name>/SENSOR``, ``{"Time": local time without a zone (the
  branch's), "ENERGY": {"Total": kWh import, "ExportActive": kWh, "Power": [W per phase],
  "ApparentPower": [VA], "ReactivePower": [VAr], "Factor": [..], "Frequency": Hz,
  "Voltage": [V], "Current": [A], ...}}`` once per TelePeriod (the run's cadence); the lake's
  seq is the event time in epoch seconds. Published with its MQTT name (``tasmota_XXXXXX``);
  silent during a grid outage (it is powered from the line it measures).
- ``thingsboard``: ``v1/devices/<id>/telemetry``, ``{"ts": ms, "values": {contract
  fields}}``; seq is ``ts``.
- ``sparkplug_b``: the edge node's NBIRTH (Sparkplug's own metrics only: quarantined
  MISSING_FIELD, once per birth), the device's DBIRTH with every reading, then a DDATA per
  interval with the metrics that changed (none changed: nothing sent), published with the
  edge node's account; the lake's seq is the gateway's per device (0 at the DBIRTH).

Vendor devices get no injected faults: every message is clean (the NBIRTH is where it must
end by design). The live formats (``shelly_pro3em``, ``modbus``) are sent in real time by
``simulator/live.py``. ``device_truth`` sums, per device, what was sent and where it must
end; its kWh is the rise of the import counter over the messages bound for the lake that
carry it (what the lake's counter steps add up to).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from simulator.config import SimConfig
from simulator.physics import BranchSeries
from simulator.reference import Branch, Device, rng_for
from simulator.sparkplug import EdgeNode
from simulator.stream import Message, columns

__all__ = ["device_truth", "vendor_messages"]

_PHASES = ("l1", "l2", "l3")


def vendor_messages(config: SimConfig, branch: Branch, series: BranchSeries) -> list[Message]:
    """Every message a vendor branch's device sends in the period (none for a live one)."""
    assert branch.vendor is not None
    device = branch.devices[0]
    cols = columns(series, device)
    rng = rng_for(config.seed, "stream", device.device_id)
    latency = rng.uniform(0.2, 2.5, series.n)
    c = series.cadence_s
    steps = [
        (k, int(series.t0) + k * c + device.offset_s, {n: cols[n][k] for n in cols})
        for k in range(series.n)
    ]

    def message(k: int, ts: int, readings: dict[str, Any], **kw: Any) -> Message:
        base: dict[str, Any] = {
            "device_id": device.device_id,
            "kind": device.kind,
            "claim_client": device.client_id,
            "claim_branch": device.branch_id,
            "seq": ts,
            "ts": ts,
            "received_at": ts + float(latency[k]),
            "readings": readings,
            "index": k,
            "fmt": branch.vendor,
            "account": device.account,
        }
        return Message(**(base | kw))

    if branch.vendor == "tasmota":
        # powered from the line it measures: silent during an outage (no UPS behind a plug)
        zone = ZoneInfo(str(branch.row["timezone"]))
        return [
            message(
                k,
                ts,
                r,
                vendor_topic=f"tele/{device.account}/SENSOR",
                vendor_payload=_tasmota(r, ts, zone),
            )
            for k, ts, r in steps
            if not series.outage[k]
        ]
    if branch.vendor == "thingsboard":
        return [
            message(
                k,
                ts,
                r,
                seq=ts * 1000,
                vendor_topic=f"v1/devices/{device.device_id}/telemetry",
                vendor_payload=orjson.dumps({"ts": ts * 1000, "values": r}),
            )
            for k, ts, r in steps
        ]
    if branch.vendor == "sparkplug_b":
        return _sparkplug(branch, device, steps)
    return []


def _tasmota(readings: dict[str, Any], ts: int, zone: ZoneInfo) -> bytes:
    local = datetime.fromtimestamp(ts, UTC).astimezone(zone).replace(tzinfo=None)
    power = [readings[f"power_{p}_kw"] for p in _PHASES]
    total = sum(power)

    def share(value: float) -> list[float]:  # a total split as the phases' power splits
        if not total:
            return [round(value * 1000.0 / 3, 1)] * 3
        return [round(value * 1000.0 * p / total, 1) for p in power]

    pf = readings["power_factor"]
    energy = {
        "TotalStartTime": "2024-01-01T00:00:00",
        "Total": readings["energy_import_kwh"],
        "ExportActive": readings["energy_export_kwh"],
        "Power": [round(p * 1000.0, 1) for p in power],
        "ApparentPower": share(readings["apparent_power_kva"]),
        "ReactivePower": share(readings["reactive_power_kvar"]),
        "Factor": [pf, pf, pf],
        "Frequency": readings["frequency_hz"],
        "Voltage": [readings[f"voltage_{p}_v"] for p in _PHASES],
        "Current": [readings[f"current_{p}_a"] for p in _PHASES],
    }
    return orjson.dumps({"Time": local.isoformat(timespec="seconds"), "ENERGY": energy})


def _sparkplug(
    branch: Branch, device: Device, steps: list[tuple[int, int, dict[str, Any]]]
) -> list[Message]:
    edge_device = branch.edge_nodes[0]
    node = EdgeNode(group=device.client_id, name=edge_device.device_id)
    out: list[Message] = []
    ts0 = steps[0][1]
    topic, raw = node.nbirth((ts0 - 1) * 1000)
    out.append(
        Message(
            device_id=edge_device.device_id,
            kind=edge_device.kind,
            claim_client=device.client_id,
            claim_branch=device.branch_id,
            seq=0,
            ts=ts0 - 1,
            received_at=ts0 - 0.5,
            readings={},
            index=-1,
            route="quarantine",
            reason_code="MISSING_FIELD",  # Sparkplug's own metrics only: no reading
            fmt="sparkplug_b",
            vendor_topic=topic,
            vendor_payload=raw,
            account=edge_device.device_id,
        )
    )
    seq = 0
    for k, ts, readings in steps:
        values = {n: float(v) for n, v in readings.items()}
        if k == 0:
            sent: tuple[str, bytes] | None = node.dbirth(device.device_id, values, ts * 1000)
            carried = dict(readings)
        else:
            got = node.ddata(device.device_id, values, ts * 1000)
            sent, carried = (got[0], got[1]) if got is not None else (None, {})
        if sent is None:
            continue
        out.append(
            Message(
                device_id=device.device_id,
                kind=device.kind,
                claim_client=device.client_id,
                claim_branch=device.branch_id,
                seq=seq,
                ts=ts,
                received_at=ts + 0.5,  # in the node's order: its seq must not be overtaken
                readings=carried,
                index=k,
                fmt="sparkplug_b",
                vendor_topic=sent[0],
                vendor_payload=sent[1],
                account=edge_device.device_id,
            )
        )
        seq += 1
    return out


def truth_entry(fmt: str, device: Device) -> dict[str, Any]:
    """A vendor device's manifest entry before it sent anything (what the truth counts)."""
    return {
        "format": fmt,
        "client_id": device.client_id,
        "branch_id": device.branch_id,
        "account": device.account,
        "messages": 0,
        "lake": {},
        "quarantine": {},
        "duplicates": 0,
        "energy_import_kwh": 0.0,
    }


def device_truth(
    messages: list[Message], dataset_of_kind: dict[str, str], devices: dict[str, Device]
) -> dict[str, Any]:
    """Per vendor device: what it sent and where each message must end, and its true kWh."""
    out: dict[str, Any] = {}
    counters: dict[str, list[float]] = {}
    for msg in messages:
        if msg.fmt == "canonical":
            continue
        entry = out.get(msg.device_id)
        if entry is None:
            entry = out[msg.device_id] = truth_entry(msg.fmt, devices[msg.device_id])
        entry["messages"] += 1
        if msg.route == "lake":
            lake = dataset_of_kind[msg.kind]
            entry["lake"][lake] = entry["lake"].get(lake, 0) + 1
            value = msg.readings.get("energy_import_kwh")
            if isinstance(value, int | float):
                counters.setdefault(msg.device_id, []).append(float(value))
        elif msg.route == "quarantine":
            reason = str(msg.reason_code)
            entry["quarantine"][reason] = entry["quarantine"].get(reason, 0) + 1
        else:
            entry["duplicates"] += 1
    for device_id, entry in out.items():
        values = counters.get(device_id, [])
        entry["energy_import_kwh"] = round(values[-1] - values[0], 6) if values else 0.0
    return out
