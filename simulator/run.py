"""Run a simulation: the fleet's reference data, its telemetry files, the fault ledger and
the truth manifest.

Layout under the output folder::

    reference/<dataset>.parquet        clients, branches, devices, contacts, work_orders
    telemetry/<topic>/<YYYYMMDDTHH>.ndjson
                                       one file per topic and hour of reception (UTC); a line
                                       is one payload as the device sent it, in delivery order
    faults.ndjson                      the ledger: every injected fault, with file and line
    manifest.json                      config, fault counts, expected routes, true totals

With a ``sink`` (landing log, publisher) there is no telemetry folder; the ledger still
lists every injected fault by device and seq, and a sink that knows where a message went
adds that (``simulate_to_landing``: segment and offset).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from contracts import ContractRegistry, load_registry
from simulator.config import FAULTS, LIVE_FORMATS, SimConfig
from simulator.physics import simulate_branch, start_epoch
from simulator.reference import Fleet, build_fleet, rng_for
from simulator.stream import Message, StateFault, branch_messages
from simulator.vendors import device_truth, truth_entry, vendor_messages

__all__ = ["LEDGER_NAME", "MANIFEST_NAME", "SimResult", "ledger_entry", "simulate"]

MANIFEST_NAME = "manifest.json"
LEDGER_NAME = "faults.ndjson"
GENERATOR = "energylake-simulator/1"


@dataclass(frozen=True, slots=True)
class SimResult:
    out: Path
    manifest: dict[str, Any]
    fleet: Fleet

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST_NAME

    @property
    def telemetry_dir(self) -> Path:
        return self.out / "telemetry"

    @property
    def reference_dir(self) -> Path:
        return self.out / "reference"


def _hour(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y%m%dT%H")


def write_reference(fleet: Fleet, registry: ContractRegistry, folder: Path) -> dict[str, int]:
    """Write the fleet's reference rows as Parquet, each under its contract's Arrow schema."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for dataset, rows in fleet.rows().items():
        schema = registry.get(dataset).arrow_schema()
        table = pa.Table.from_pylist(rows, schema=schema)
        table.validate(full=True)
        pq.write_table(table, folder / f"{dataset}.parquet")
        counts[dataset] = table.num_rows
    return counts


def _empty_branch_tally() -> dict[str, Any]:
    return {
        "lines": 0,
        "lake": Counter(),
        "quarantine": Counter(),
        "duplicates": 0,
    }


def simulate(
    config: SimConfig,
    out: Path,
    *,
    registry: ContractRegistry | None = None,
    sink: Callable[[list[Message], int], None] | None = None,
) -> SimResult:
    """Simulate the fleet for the period into ``out`` (replacing what a previous run left).

    ``sink`` receives each branch's messages (with the seed) instead of the NDJSON writer;
    the landing-log writer and the MQTT/HTTP publishers plug in there.
    """
    registry = registry or load_registry()
    if out.exists():
        for name in ("telemetry", "reference", LEDGER_NAME, MANIFEST_NAME):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    fleet = build_fleet(config)
    reference_counts = write_reference(fleet, registry, out / "reference")
    fault_counts: Counter[str] = Counter()
    tallies: dict[str, dict[str, Any]] = defaultdict(_empty_branch_tally)
    truth: dict[str, dict[str, Any]] = {}
    state_faults: list[StateFault] = []
    total_lines = 0
    vendor_sent: list[Message] = []
    ledger = (out / LEDGER_NAME).open("wb")
    try:
        for branch in fleet.branches:
            devices = {d.kind: d.device_id for d in branch.devices}
            if branch.vendor in LIVE_FORMATS:  # sent in real time (simulator/live.py)
                truth[branch.branch_id] = {
                    "client_id": branch.client_id,
                    "devices": devices,
                    "vendor": branch.vendor,
                    "live": True,
                }
                continue
            # vendor branches are nobody's "other branch": the fleet's faults stay as they were
            others = [
                b for b in fleet.branches if b.branch_id != branch.branch_id and b.vendor is None
            ]
            rng = rng_for(config.seed, "physics", branch.branch_id)
            series = simulate_branch(branch, config.start, config.days, config.cadence_s, rng)
            if branch.vendor is None:
                messages, faults = branch_messages(config, registry, branch, series, others)
            else:
                messages, faults = vendor_messages(config, branch, series), []
                vendor_sent.extend(messages)
            state_faults.extend(faults)
            truth[branch.branch_id] = {
                "client_id": branch.client_id,
                "devices": devices,
                **({"vendor": branch.vendor} if branch.vendor else {}),
                **{k: round(v, 6) for k, v in series.truth.items()},
            }
            for msg in messages:
                tally = tallies[msg.claim_branch]
                tally["lines"] += 1
                if msg.route == "lake":
                    tally["lake"][registry.dataset_of_kind[msg.kind]] += 1
                elif msg.route == "quarantine":
                    tally["quarantine"][msg.reason_code] += 1
                else:
                    tally["duplicates"] += 1
                if msg.fault:
                    fault_counts[msg.fault] += 1
            total_lines += len(messages)
            if sink is not None:
                sink(messages, config.seed)
                for msg in messages:
                    if msg.fault:
                        ledger.write(orjson.dumps(ledger_entry(msg)) + b"\n")
            else:
                _write_ndjson(out / "telemetry", messages, ledger, config.seed)
    finally:
        ledger.close()
    for fault in state_faults:
        fault_counts[fault.fault] += 1
    manifest = _manifest(
        config, fleet, reference_counts, fault_counts, tallies, truth, state_faults, total_lines
    )
    if config.vendor_devices:
        manifest["vendor_devices"] = _vendor_section(
            fleet,
            device_truth(
                vendor_sent,
                dict(registry.dataset_of_kind),
                {d.device_id: d for d in fleet.registered},
            ),
        )
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return SimResult(out=out, manifest=manifest, fleet=fleet)


def _vendor_section(fleet: Fleet, sent: dict[str, Any]) -> dict[str, Any]:
    """Per vendor device (and Sparkplug edge node): its format, account and what it sent; a
    live device's counts come when it has run (``simulator.live``, ``live.json``)."""
    out: dict[str, Any] = {}
    for branch in fleet.branches:
        if branch.vendor is None:
            continue
        for device in (*branch.edge_nodes, *branch.devices):
            entry = sent.get(device.device_id) or truth_entry(branch.vendor, device)
            entry["vendor"] = branch.vendor  # the edge node's is its device's
            entry["live"] = branch.vendor in LIVE_FORMATS
            out[device.device_id] = entry
    return out


def _write_ndjson(folder: Path, messages: list[Message], ledger: Any, seed: int) -> None:
    groups: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for msg in messages:
        groups[(msg.topic, _hour(msg.received_at))].append(msg)
    for (topic, hour), group in groups.items():
        group.sort(key=lambda m: (m.received_at, m.seq))
        binary = group[0].fmt == "sparkplug_b"  # protobuf: one base64 line per payload
        path = folder / topic / f"{hour}.{'b64' if binary else 'ndjson'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        rel = str(path.relative_to(folder.parent))
        with path.open("wb") as handle:
            for line_no, msg in enumerate(group, start=1):
                raw = msg.payload(msg.seq)
                handle.write((base64.b64encode(raw) if binary else raw) + b"\n")
                if msg.fault:
                    where = {"file": rel, "line": line_no}
                    ledger.write(orjson.dumps(ledger_entry(msg, where)) + b"\n")


def ledger_entry(msg: Message, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fault ledger line: the fault, the message (device, seq, topic), where it went
    (``where``: file and line, or segment and offset; none for a publisher), and where it
    must end."""
    return {
        "fault": msg.fault,
        "device_id": msg.device_id,
        "seq": msg.seq,
        "topic": msg.topic,
        **(where or {}),
        "route": msg.route,
        "reason_code": msg.reason_code,
    }


def _manifest(
    config: SimConfig,
    fleet: Fleet,
    reference_counts: dict[str, int],
    fault_counts: Counter[str],
    tallies: dict[str, dict[str, Any]],
    truth: dict[str, dict[str, Any]],
    state_faults: list[StateFault],
    total_lines: int,
) -> dict[str, Any]:
    t0 = start_epoch(config.start)
    end = t0 + config.days * 86400
    quarantine: Counter[str] = Counter()
    lake: Counter[str] = Counter()
    duplicates = 0
    branches: dict[str, Any] = {}
    for branch_id in sorted(set(truth) | set(tallies)):
        tally = tallies.get(branch_id) or _empty_branch_tally()
        quarantine.update(tally["quarantine"])
        lake.update(tally["lake"])
        duplicates += tally["duplicates"]
        branches[branch_id] = {
            **truth.get(branch_id, {}),
            "records": {
                "lines": tally["lines"],
                "lake": dict(sorted(tally["lake"].items())),
                "quarantine": dict(sorted(tally["quarantine"].items())),
                "duplicates": tally["duplicates"],
            },
        }
    return {
        "generator": GENERATOR,
        "created_for": config.as_dict(),
        "period": {
            "start": datetime.fromtimestamp(t0, tz=UTC).isoformat(),
            "end": (datetime.fromtimestamp(t0, tz=UTC) + timedelta(seconds=end - t0)).isoformat(),
            "timezone": "Asia/Kolkata",
        },
        "reference": reference_counts,
        "lines": total_lines,
        "faults": {
            name: {
                "count": int(fault_counts.get(name, 0)),
                "route": spec.route,
                "reason_code": spec.reason_code,
                "flag": spec.flag,
                "description": spec.description,
            }
            for name, spec in FAULTS.items()
        },
        "state_faults": [
            {
                "fault": f.fault,
                "device_id": f.device_id,
                "field": f.field,
                "first_seq": f.first_seq,
                "length": f.length,
            }
            for f in state_faults
        ],
        "expected": {
            "lake_rows": dict(sorted(lake.items())),
            "quarantine": dict(sorted(quarantine.items())),
            "duplicates": duplicates,
        },
        "branches": branches,
        "totals": {
            key: round(sum(b.get(key, 0.0) for b in truth.values()), 6)
            for key in (
                "grid_import_kwh",
                "grid_export_kwh",
                "solar_kwh",
                "dg_fuel_l",
                "dg_run_hours",
                "dg_energy_kwh",
            )
        },
        "devices": len(fleet.registered),
    }
