"""A lake built from the simulator in which one person -- the subject -- appears in every
place a person can: a branch contact (name, mobile, e-mail), the technician of two work
orders in two tenants (name, phone, visit GPS), a mention in another ticket's notes, a
quarantined raw payload (upper case, the mobile typed with spaces) and so the raw archive,
an extract for field service (in clear) and one for visualisation (pseudonyms), and the
reference source files the loads read. Also: the identifiers the tests look for, made here
independently of ``retention.subject``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from typer.testing import CliRunner, Result

from analytics.grants import GrantBook
from analytics.objections import ObjectionRegister
from audit.log import AuditLog
from cli.app import app
from contracts import ContractRegistry, load_registry
from contracts.policy import pseudonym
from lake.keys import KeyStore
from lake.storage import Store
from landing.format import Envelope
from landing.writer import LandingWriter
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

CONFIG = SimConfig(clients=2, branches=2, days=1, seed=7, cadence_s=900)
NAME = "Zarina Vasquez-Iyer"
MOBILE = "+919812345670"
EMAIL = "zarina.vasquez@kaveri.example"
TECH_ID = "tech-0777"  # the simulator draws tech-1000 .. tech-9999
SPACED_MOBILE = "+91 98123 45670"


@dataclass(slots=True)
class ErasureLake:
    settings: Settings
    store: Store
    registry: ContractRegistry
    contact_id: str
    tickets: list[str]  # the subject's tickets (technician)
    mentioned_ticket: str  # another ticket whose notes name the subject
    extracts: list[Path]

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def cli(self, *args: str) -> Result:
        env = {"ENERGYLAKE_ERASURE_READER_GRACE_S": "0.5"}
        return CliRunner().invoke(app, [*args, "--data-dir", str(self.data_dir)], env=env)

    def forms(self) -> list[str]:
        """Every form of the subject's identifiers a scan must not find (lower case)."""
        clear = [
            NAME,
            MOBILE,
            MOBILE[1:],
            MOBILE[3:],
            SPACED_MOBILE,
            EMAIL,
            self.contact_id,
            TECH_ID,
        ]
        keys = KeyStore(self.settings.keys)
        out = {c.lower() for c in clear}
        for tenant in ("kaveri", "sahyadri"):
            key = keys.get(tenant)
            for contract in self.registry:
                for f in contract.fields:
                    if f.protection is None or f.protection.method != "pseudonymise":
                        continue
                    domain = f.protection.domain or f.name
                    for value in (NAME, EMAIL, self.contact_id, TECH_ID):
                        out.add(pseudonym(key, domain, value).lower())
            out.add(pseudonym(key, "objection:technician", TECH_ID).lower())
            out.add(pseudonym(key, "objection:contact", self.contact_id).lower())
        return sorted(out)


def _plant(reference: Path) -> tuple[str, list[str], str]:
    """Make one contact and two technicians' tickets the subject (in the source files)."""
    contacts = pq.read_table(reference / "contacts.parquet").to_pylist()
    first = contacts[0]
    first.update(name=NAME, mobile=MOBILE, email=EMAIL)
    pq.write_table(
        pa.Table.from_pylist(contacts, pq.read_schema(reference / "contacts.parquet")),
        reference / "contacts.parquet",
    )
    orders = pq.read_table(reference / "work_orders.parquet")
    schema = orders.schema
    rows = orders.to_pylist()
    assert TECH_ID not in {r["technician_id"] for r in rows}
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["technician_id"]:
            by_tenant.setdefault(row["client_id"], []).append(row)
    mine = [by_tenant["kaveri"][0], by_tenant["sahyadri"][0]]
    for row in mine:
        row.update(technician_id=TECH_ID, technician_name=NAME, technician_phone=MOBILE)
    other = by_tenant["kaveri"][1]
    other["notes"] = f"Handed over to {NAME.upper()} for the DG check; call {SPACED_MOBILE}."
    pq.write_table(pa.Table.from_pylist(rows, schema), reference / "work_orders.parquet")
    return str(first["contact_id"]), [str(r["ticket_id"]) for r in mine], str(other["ticket_id"])


def _inject(landing: Path) -> None:
    """A broken message from a kaveri meter naming the subject: quarantined, then archived."""
    payload = (
        b'{"device_id":"em-3ca2f8c1","seq":1,"ts":1794767403,"operator":"'
        + NAME.upper().encode()
        + b'","callback":"'
        + SPACED_MOBILE.encode()
        + b'","readings":{'
    )
    with LandingWriter(landing, "test-inject", clock=None) as writer:
        writer.append(
            Envelope(
                received_at_us=1_794_767_500_000_000,
                source="mqtt",
                topic="emaas/v1/kaveri/kaveri-bom-001/em-3ca2f8c1/telemetry",
                identity="em-3ca2f8c1",
                payload=payload,
            )
        )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(data_dir: Path, lake_uri: str | None = None) -> ErasureLake:
    flags: dict[str, Any] = {"data_dir": data_dir}
    if lake_uri:
        flags["lake_uri"] = lake_uri
    settings = load_settings(**flags)
    result = simulate_to_landing(CONFIG, settings.sim_dir, settings.landing)
    contact_id, tickets, mentioned = _plant(result.reference_dir)
    _inject(settings.landing)
    registry = load_registry()
    store = settings.lake_store()
    lake = ErasureLake(settings, store, registry, contact_id, tickets, mentioned, [])
    extra = ["--lake-uri", lake_uri] if lake_uri else []
    loaded = CliRunner().invoke(
        app, ["reference", "load", str(result.reference_dir), "--data-dir", str(data_dir), *extra]
    )
    assert loaded.exit_code == 0, loaded.output
    while process_once(settings) is not None:
        pass
    audit = AuditLog(data_dir / "audit" / "access", component="access", fail_closed=True)
    book = GrantBook(store, registry, audit)
    book.grant("ops.fs", tenants=["kaveri", "sahyadri"], purposes=["field_service"], actor="t")
    book.grant("ops.viz", tenants=["kaveri"], purposes=["visualisation"], actor="t")
    objections = ObjectionRegister(store, registry, KeyStore(settings.keys), audit)
    objections.record(
        tenant="kaveri", kind="technician", subject_id=TECH_ID, purpose="predictive_maintenance",
        actor="t",
    )  # fmt: skip
    audit.close()
    out = data_dir / "extracts"
    out.mkdir()
    for who, purpose, dataset, name in (
        ("ops.fs", "field_service", "work_orders", "wo-field-service.parquet"),
        ("ops.viz", "visualisation", "contacts", "contacts-visualisation.parquet"),
    ):
        done = lake.cli(
            "extract", dataset, "--as", who, "--purpose", purpose, "--out", str(out / name)
        )
        assert done.exit_code == 0, done.output
        lake.extracts.append(out / name)
    _docs_and_logs(settings.data_dir)
    return lake


def _docs_and_logs(data_dir: Path) -> None:
    """Where a person can land without a contract: a Data Docs page listing unexpected
    values (as Great Expectations renders a failed pattern check on a text column), and a
    log line."""
    pages = sorted((data_dir / "quality").rglob("*.html"))
    assert pages, "the quality gate wrote no Data Docs"
    page = pages[-1]
    page.write_text(page.read_text() + f"<td>unexpected values: {NAME}, {SPACED_MOBILE}</td>\n")
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "process.log").write_text(f"WARNING callback requested by {MOBILE}\n")


def quarantine_rows(store: Store, rel: str) -> pa.Table:
    from lake.delta import read_table

    return read_table(store, rel)


def naming(table: pa.Table, column: str, value: str) -> int:
    return int(pc.sum(pc.equal(table.column(column), value)).as_py() or 0)
