"""The demo's vendor devices: one of each kind (Tasmota, Shelly Pro 3EM, ThingsBoard, Sparkplug B
behind its edge node, an Eastron SDM630 polled over Modbus) run live next to the fleet, and
per device what the simulator's truth says next to what the lake holds.

``start_live`` starts the live ones (``simulator.live``: the Shelly's MQTT status and the
SDM630's registers) and ``energylake modbus poll`` (its own process, ended by its PID);
``stop_live`` ends both and merges what they sent into the manifest (``live.json``);
``vendor_table`` compares, per device: messages sent, rows the truth expects, rows in the
lake, rows the quality gate holds, quarantined rows, and the import kWh of the counters.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl
from rich.table import Table

from analytics.queries import read_frame
from devstack.stack import LocalStack
from gateway.modbus_maps import load_map
from lake.layout import tenants
from lake.storage import Store
from pipelines.process import ingest_stats
from pipelines.settings import Settings
from simulator.config import SimConfig
from simulator.live import LiveDevices, merge_live
from simulator.reference import Fleet
from simulator.run import MANIFEST_NAME

__all__ = ["LiveRun", "start_live", "stop_live", "vendor_table"]


@dataclass
class LiveRun:
    """The live devices and the poller the demo started."""

    devices: LiveDevices
    poller: subprocess.Popen[bytes] | None
    started: float


def start_live(settings: Settings, stack: LocalStack, config: SimConfig, fleet: Fleet) -> LiveRun:
    """Serve and publish the live devices; start ``energylake modbus poll``."""
    live = LiveDevices(
        config,
        fleet,
        mqtt=("127.0.0.1", stack.mqtt_port),
        register_fields=load_map("eastron_sdm630").fields,
        out=settings.sim_dir,
    )
    live.start()
    poller = None
    if "modbus" in config.vendor_devices:
        stack.logs.mkdir(parents=True, exist_ok=True)
        with (stack.logs / "modbus.log").open("ab") as log:
            poller = subprocess.Popen(
                [sys.executable, "-m", "cli", "modbus", "poll"],
                env=stack.child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
    return LiveRun(live, poller, time.monotonic())


def stop_live(
    run: LiveRun, settings: Settings, manifest: dict[str, Any], *, min_live_s: float
) -> dict[str, Any]:
    """After ``min_live_s`` of live data: SIGTERM the poller (its PID), stop the live devices;
    the manifest with what they sent (rewritten)."""
    time.sleep(max(0.0, min_live_s - (time.monotonic() - run.started)))
    if run.poller is not None:
        if run.poller.poll() is None:
            run.poller.send_signal(signal.SIGTERM)
        try:
            run.poller.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.poller.kill()
            run.poller.wait()
    merged = merge_live(manifest, run.devices.stop())
    (settings.sim_dir / MANIFEST_NAME).write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def _frames(store: Store, dataset: str, columns: list[str]) -> pl.DataFrame:
    frames = [read_frame(store, t, dataset, columns) for t in tenants(store)]
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return pl.concat(frames, how="diagonal_relaxed")


_SHORT = {"shelly_pro3em": "shelly", "thingsboard": "thingsbrd", "sparkplug_b": "sparkplug"}


def vendor_table(settings: Settings, store: Store, manifest: dict[str, Any]) -> Table:
    """Per vendor device: the truth next to what the lake holds (rows and import kWh)."""
    meters = _frames(store, "meter_readings", ["device_id", "ts", "energy_import_kwh"])
    quarantine = _frames(store, "quarantine", ["device_id", "reason_code"])
    held: Counter[str] = Counter()
    for kind, _tenant, dataset, branch, _key, n in ingest_stats(settings):
        if dataset != "quarantine" and kind in ("held", "decided"):
            held[branch] += n if kind == "held" else -n
    table = Table(
        title="vendor devices, the lake / the simulator's truth (rows, quarantine, import kWh)"
    )
    for name in ("device", "format", "sent", "rows", "held", "quarantined", "kWh"):
        table.add_column(name, justify="left" if name in ("device", "format") else "right")
    for device_id, entry in manifest.get("vendor_devices", {}).items():
        rows = meters.filter(pl.col("device_id") == device_id).sort("ts")
        counter = rows["energy_import_kwh"].drop_nulls().to_list()
        kwh = float(counter[-1] - counter[0]) if counter else 0.0
        reasons = Counter(
            quarantine.filter(pl.col("device_id") == device_id)["reason_code"].to_list()
        )
        expected_rows = sum(entry["lake"].values())
        truth_q = " ".join(f"{k[:7]} {v}" for k, v in sorted(entry["quarantine"].items())) or "0"
        got_q = " ".join(f"{k[:7]} {v}" for k, v in sorted(reasons.items())) or "0"
        table.add_row(
            device_id,
            _SHORT.get(entry["format"], entry["format"]) + (" live" if entry.get("live") else ""),
            str(entry["messages"]),
            f"{rows.height} / {expected_rows}",
            str(held[entry["branch_id"]]) if rows.height < expected_rows else "0",
            f"{got_q} / {truth_q}",
            f"{kwh:.3f} / {entry['energy_import_kwh']:.3f}" if expected_rows else "-",
        )
    return table
