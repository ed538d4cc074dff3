"""A lake of one simulated year for the retention and erasure benchmarks, generated once
per set of arguments under the temp folder and copied before each measured run.

What it holds, for ``branches`` branches of two tenants, ``days`` days:

* **readings**: each branch's meter, a reading every ``interval_min`` minutes, written as
  the pipeline writes them (one file per branch and month; realistic values: a daily
  load curve, energy counters that only grow);
* **the raw archive**: the same readings as the gateway received them, one landing
  segment per tenant and day under ``raw/YYYY/MM/DD/`` (what an erasure must search);
* **the quarantine**: one record in a thousand, with its payload excerpt;
* **reference data** from the simulator's fleet: clients, branches, devices, contacts,
  and a year of work orders (the fleet's month of tickets, every month), loaded as
  ``energylake reference load`` loads them (with its lineage run, so the erasure finds the
  source files);
* **one person** to erase (``SUBJECT_MOBILE``): a branch contact, the technician of six
  tickets over the year in both tenants, a mention in two raw payloads and so two
  quarantine excerpts.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cli.lineage import emit_reference_lineage
from contracts import ContractRegistry, load_registry
from lake.delta import commit_files, ensure_table, stats_columns, write_data_file
from lake.layout import raw_archive_rel, table_rel
from lake.reference import load_reference
from lake.storage import Store
from landing.format import Envelope
from landing.writer import LandingWriter
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.reference import build_fleet
from simulator.run import write_reference

__all__ = [
    "DATASET",
    "START",
    "SUBJECT_MOBILE",
    "SUBJECT_NAME",
    "TENANTS",
    "build_year_lake",
    "write_readings",
]

START = datetime(2025, 1, 1, tzinfo=UTC)
TENANTS = ("kaveri", "sahyadri")
DATASET = "meter_readings"
SUBJECT_NAME = "Zarina Vasquez-Iyer"
SUBJECT_MOBILE = "+919812345670"
SUBJECT_EMAIL = "zarina.vasquez@bench.example"
_QUARANTINE_EVERY = 1000


def _month_rows(
    tenant: str,
    branch: int,
    month_start: datetime,
    month_end: datetime,
    interval_s: int,
    seq0: int,
) -> pa.Table:
    contract = load_registry().get(DATASET)
    seconds = np.arange(
        int(month_start.timestamp()), int(month_end.timestamp()), interval_s, dtype=np.int64
    )
    n = len(seconds)
    rng = np.random.default_rng(branch * 1000 + month_start.month)
    hour = (seconds % 86400) / 3600
    load = 20 + 15 * np.sin((hour - 6) / 24 * 2 * np.pi).clip(0) + rng.normal(0, 1.5, n)
    phase = [load / 3 + rng.normal(0, 0.3, n) for _ in range(3)]
    volts = [230 + rng.normal(0, 2, n) for _ in range(3)]
    energy = (seq0 * interval_s / 3600 * 20) + np.cumsum(load * interval_s / 3600)
    ts = pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
    month = month_start.strftime("%Y-%m")
    columns: dict[str, Any] = {
        "client_id": pa.array([tenant] * n),
        "branch_id": pa.array([f"b{branch:03d}"] * n),
        "device_id": pa.array([f"em-{branch:06x}"] * n),
        "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
        "ts": ts,
        "received_at": pa.array((seconds + 2) * 1_000_000, pa.timestamp("us", tz="UTC")),
        "event_month": pa.array([month] * n),
        "quality_flags": pa.nulls(n, pa.list_(pa.string())),
        "voltage_l1_v": volts[0],
        "voltage_l2_v": volts[1],
        "voltage_l3_v": volts[2],
        "current_l1_a": phase[0] * 1000 / 230,
        "current_l2_a": phase[1] * 1000 / 230,
        "current_l3_a": phase[2] * 1000 / 230,
        "power_l1_kw": phase[0],
        "power_l2_kw": phase[1],
        "power_l3_kw": phase[2],
        "power_kw": load,
        "apparent_power_kva": load / 0.95,
        "reactive_power_kvar": load * 0.33,
        "power_factor": np.full(n, 0.95),
        "frequency_hz": 50 + rng.normal(0, 0.02, n),
        "energy_import_kwh": energy,
        "energy_export_kwh": np.zeros(n),
        "boot": pa.array(np.zeros(n, dtype=np.int64)),
    }
    return pa.table(columns).cast(contract.arrow_schema())


def write_readings(store: Store, branches: int, days: int, interval_min: int) -> None:
    """Each branch's meter readings for ``days`` days from ``START``, one file per branch and
    month, as the pipeline writes them (branch ``b`` belongs to ``TENANTS[b % 2]``)."""
    contract = load_registry().get(DATASET)
    end = START + timedelta(days=days)
    columns = stats_columns(contract)
    for tenant in TENANTS:
        ensure_table(store, table_rel(tenant, DATASET), contract)
    for branch in range(branches):
        tenant = TENANTS[branch % 2]
        rel = table_rel(tenant, DATASET)
        files = []
        month_start, seq = START, 0
        while month_start < end:
            nxt = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
            rows = _month_rows(tenant, branch, month_start, min(nxt, end), interval_min * 60, seq)
            seq += rows.num_rows
            values = {"branch_id": f"b{branch:03d}", "event_month": month_start.strftime("%Y-%m")}
            name = f"part-bench-{branch:03d}-{month_start:%Y%m}.zstd.parquet"
            files.append(write_data_file(store, rel, rows, values, name, stats_columns=columns))
            month_start = nxt
        commit_files(store, rel, contract, files, app_id="bench", version=branch, metadata={})


def _reference(settings: Settings, registry: ContractRegistry, branches: int, days: int) -> None:
    """The fleet's reference data, a year of work orders, the person planted, loaded."""
    fleet = build_fleet(
        SimConfig(clients=2, branches=max(1, branches // 2), start=date(2026, 1, 1))
    )
    folder = settings.sim_dir / "reference"
    write_reference(fleet, registry, folder)
    orders = pq.read_table(folder / "work_orders.parquet")
    month_rows = orders.to_pylist()
    rows: list[dict[str, Any]] = []
    for month in range(max(1, days // 30)):
        for n, row in enumerate(month_rows):
            copy = dict(row)
            copy["ticket_id"] = f"WO-Y{month:02d}-{n:06d}"
            for column in ("opened_at", "scheduled_for", "started_at", "closed_at", "updated_at"):
                if copy[column] is not None:
                    copy[column] = copy[column] - timedelta(days=30 * month)
            rows.append(copy)
    for tenant in sorted({r["client_id"] for r in rows}):  # three tickets of each tenant
        theirs = [r for r in rows if r["client_id"] == tenant and r["technician_id"]]
        for row in theirs[:: max(1, len(theirs) // 3)][:3]:  # spread over the year
            row.update(technician_id="tech-0777", technician_name=SUBJECT_NAME)
            row.update(technician_phone=SUBJECT_MOBILE)
    pq.write_table(pa.Table.from_pylist(rows, orders.schema), folder / "work_orders.parquet")
    contacts = pq.read_table(folder / "contacts.parquet")
    people = contacts.to_pylist()
    people[0].update(name=SUBJECT_NAME, mobile=SUBJECT_MOBILE, email=SUBJECT_EMAIL)
    pq.write_table(pa.Table.from_pylist(people, contacts.schema), folder / "contacts.parquet")
    loads = load_reference(settings.lake_store(), folder, registry)
    emit_reference_lineage(settings, folder, loads)


def _payload(device: str, seq: int, ts: int, kwh: float) -> bytes:
    return (
        f'{{"device_id":"{device}","seq":{seq},"ts":{ts},"readings":{{"voltage_l1_v":231.2,'
        f'"voltage_l2_v":230.8,"voltage_l3_v":229.9,"current_l1_a":12.4,"current_l2_a":11.9,'
        f'"current_l3_a":12.8,"power_kw":8.61,"power_factor":0.95,"frequency_hz":50.01,'
        f'"energy_import_kwh":{kwh:.2f}}}}}'
    ).encode()


def _raw_and_quarantine(
    store: Store, registry: ContractRegistry, root: Path, branches: int, days: int, step_s: int
) -> int:
    """One landing segment per tenant and day in the raw archive; every thousandth record
    quarantined (two of them naming the person). Returns the records written."""
    contract = registry.get("quarantine")
    records = 0
    quarantined: dict[str, list[dict[str, Any]]] = {}
    mention = f'"operator":"{SUBJECT_NAME.upper()}","callback":"+91 98123 45670"'.encode()
    mention_days = {days // 3, 2 * days // 3}
    for day in range(days):
        day_start = START + timedelta(days=day)
        for tenant_no, tenant in enumerate(TENANTS):
            landing = root / "landing-gen"
            envelopes: list[Envelope] = []
            mine = range(tenant_no, branches, 2)
            for slot in range(0, 86400, step_s):
                ts = int(day_start.timestamp()) + slot
                for b in mine:
                    seq = day * (86400 // step_s) + slot // step_s
                    payload = _payload(f"em-{b:06x}", seq, ts, seq * 2.1)
                    if day in mention_days and slot == 3600 and b == tenant_no:
                        payload = payload[:-2] + b"," + mention + b"}}"
                    envelopes.append(
                        Envelope((ts + 2) * 1_000_000, "mqtt", f"emaas/v1/{tenant}/b{b:03d}/"
                                 f"em-{b:06x}/telemetry", f"em-{b:06x}", payload)
                    )  # fmt: skip
            with LandingWriter(
                landing, f"gw-{tenant}", roll_seconds=None, clock=None, fsync=False
            ) as writer:
                refs = writer.append_many(envelopes)
            for path in sorted((landing / "closed").iterdir()):
                store.move_file(raw_archive_rel(path.name, day_start.date()), path)
            records += len(envelopes)
            for i, (env, ref) in enumerate(zip(envelopes, refs, strict=True)):
                if i % _QUARANTINE_EVERY and mention not in env.payload:
                    continue
                quarantined.setdefault(tenant, []).append(
                    _quarantine_row(env, ref.segment, ref.offset, tenant, day)
                )
    for tenant, rows in quarantined.items():
        rel = table_rel(tenant, "quarantine")
        ensure_table(store, rel, contract)
        table = pa.Table.from_pylist(rows, schema=contract.arrow_schema())
        files = []
        for branch in sorted({r["branch_id"] for r in rows}):
            part = table.filter(pc.equal(table.column("branch_id"), branch))
            name = f"part-bench-q-{branch}.zstd.parquet"
            files.append(
                write_data_file(store, rel, part, {"branch_id": branch}, name,
                                stats_columns=stats_columns(contract))
            )  # fmt: skip
        commit_files(store, rel, contract, files, app_id="bench", version=0, metadata={})
    return records


def _quarantine_row(
    env: Envelope, segment: str, offset: int, tenant: str, day: int
) -> dict[str, Any]:
    digest = hashlib.sha256(env.payload).hexdigest()
    return {
        "quarantine_id": hashlib.sha256(f"{segment}:{offset}".encode()).hexdigest(),
        "client_id": tenant,
        "branch_id": env.topic.split("/")[3],
        "device_id": env.identity,
        "seq": None,
        "received_at": datetime.fromtimestamp(env.received_at_us / 1e6, UTC),
        "reason_code": "SCHEMA_MISMATCH",
        "detail": "readings: an unknown field",
        "contract": "meter_readings@1.0.0",
        "pipeline_step": "decode",
        "source": env.source,
        "topic": env.topic,
        "identity": env.identity,
        "segment": segment,
        "offset_bytes": offset,
        "payload_size_bytes": len(env.payload),
        "payload_sha256": digest,
        "payload_excerpt": env.payload[:1024].decode("utf-8", "replace"),
        "batch_id": f"bench-{day:04d}",
        "claimed_device_id": None,
        "claimed_device_sha256": None,
    }


def build_year_lake(root: Path, branches: int, days: int, interval_min: int) -> Path:
    """The data folder of the cached year lake for these arguments (generated on first use)."""
    # the contracts' versions are part of the key: a lake cached under older contracts
    # (another schema) is generated again, not read with the new ones
    versions = ",".join(sorted(load_registry().get(d).ref for d in load_registry().datasets))
    key = hashlib.sha256(versions.encode()).hexdigest()[:8]
    folder = root / f"energylake-bench-year-{branches}-{days}-{interval_min}-{key}"
    done = folder / "READY"
    if done.exists():
        return folder / "data"
    shutil.rmtree(folder, ignore_errors=True)
    settings = load_settings(data_dir=folder / "data")
    registry = load_registry()
    store = settings.lake_store()
    write_readings(store, branches, days, interval_min)
    _raw_and_quarantine(store, registry, folder, branches, days, interval_min * 60)
    _reference(settings, registry, branches, days)
    done.write_text("ok")
    return folder / "data"
