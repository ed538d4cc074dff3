"""Small lakes from hand-written readings, for the reports' golden tests.

Rows are written as real Delta tables under the contracts' schemas (the readings tables as
the pipeline would leave them; reference data through ``lake.reference.load_reference``),
then read back through the governed access layer like any report. Only the fields a
report reads carry meaning; the others get a fixed, valid filler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

from analytics.access import Session, connect
from analytics.grants import GrantBook
from audit.log import AuditLog
from contracts import ContractRegistry, load_registry
from lake.delta import ensure_table
from lake.keys import KeyStore
from lake.layout import table_rel
from lake.reference import load_platform_reference, load_reference
from lake.storage import Store
from pipelines.settings import Settings, load_settings
from reporting.shipped import shipped_file

IST = ZoneInfo("Asia/Kolkata")
TENANT = "kaveri"
PRINCIPAL = "sustainability"
PURPOSE = "regulatory_reporting"
GOLDEN = Path(__file__).parent / "golden"
_STAMP = datetime(2020, 1, 1, tzinfo=UTC)


def ist(day: date, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A moment given in IST, as UTC."""
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=IST).astimezone(UTC)


def _filler(field: pa.Field) -> Any:
    t = field.type
    if pa.types.is_floating(t):
        return 0.0
    if pa.types.is_integer(t):
        return 0
    if pa.types.is_boolean(t):
        return False
    if pa.types.is_list(t):
        return []
    if pa.types.is_date(t):
        return date(2020, 1, 1)
    if pa.types.is_timestamp(t):
        return _STAMP
    return "x"


def table_of(schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows under ``schema``: given values, nulls for optional fields not given, a filler
    for required ones."""
    columns = {
        f.name: [r.get(f.name, None if f.nullable else _filler(f)) for r in rows] for f in schema
    }
    return pa.table(columns, schema=schema)


@dataclass
class Branch:
    branch_id: str
    city: str = "Pune"
    state: str = "Maharashtra"
    ncr: bool = False
    site_name: str = "Main road"


@dataclass
class Device:
    device_id: str
    branch_id: str
    kind: str  # meter, dg, solar
    cadence_s: int = 900
    tank_capacity_l: float | None = None
    installed_on: date = date(2020, 1, 1)


class GoldenLake:
    """A data folder with a lake, a grant for ``PRINCIPAL`` (purpose regulatory_reporting on
    ``TENANT``) and the shipped factor table (or another)."""

    def __init__(self, data_dir: Path, factors: Path | None = None) -> None:
        self.settings: Settings = load_settings(data_dir=data_dir)
        self.registry: ContractRegistry = load_registry()
        self.store = Store.from_uri(self.settings.lake)
        self.factors = factors or shipped_file("emission_factors")
        assert self.factors is not None
        load_platform_reference(self.store, self.factors, self.registry.get("emission_factors"))

    @property
    def access_dir(self) -> Path:
        return self.settings.data_dir / "audit" / "access"

    def audit(self) -> AuditLog:
        return AuditLog(self.access_dir, component="access", fail_closed=True)

    def reference(self, branches: Sequence[Branch], devices: Sequence[Device]) -> None:
        folder = self.settings.data_dir / "reference-src"
        folder.mkdir(parents=True, exist_ok=True)
        rows: dict[str, list[dict[str, Any]]] = {
            "clients": [{"client_id": TENANT, "legal_name": "Kaveri Bank", "sector": "bank"}],
            "branches": [
                {
                    "branch_id": b.branch_id,
                    "client_id": TENANT,
                    "site_name": b.site_name,
                    "city": b.city,
                    "state": b.state,
                    "ncr": b.ncr,
                    "opens_local": "09:00",
                    "closes_local": "18:00",
                    "closed_days": "Sun",
                    "timezone": "Asia/Kolkata",
                }
                for b in branches
            ],
            "devices": [
                {
                    "device_id": d.device_id,
                    "client_id": TENANT,
                    "branch_id": d.branch_id,
                    "kind": d.kind,
                    "payload_format": "canonical",
                    "cadence_s": d.cadence_s,
                    "tank_capacity_l": d.tank_capacity_l,
                    "fuel_type": "diesel" if d.kind == "dg" else None,
                    "status": "active",
                    "installed_on": d.installed_on,
                }
                for d in devices
            ],
            "contacts": [],
            "work_orders": [],
        }
        for name, items in rows.items():
            schema = self.registry.get(name).arrow_schema()
            pq.write_table(table_of(schema, items), folder / f"{name}.parquet")
        load_reference(self.store, folder, self.registry)
        book = GrantBook(self.store, self.registry, self.audit())
        book.grant(PRINCIPAL, tenants=[TENANT], purposes=[PURPOSE], actor="test")

    def readings(self, dataset: str, rows: Iterable[dict[str, Any]]) -> int:
        """Append readings (device_id, branch_id, ts, counters, ...): seq numbered per device
        in time order; received_at = ts; event_month from ts. The new table version."""
        contract = self.registry.get(dataset)
        items = sorted(rows, key=lambda r: (r["device_id"], r["ts"]))
        seqs: dict[str, int] = {}
        for r in items:
            seqs[r["device_id"]] = seqs.get(r["device_id"], 0) + 1
            r.setdefault("seq", seqs[r["device_id"]])
            r.setdefault("client_id", TENANT)
            r.setdefault("received_at", r["ts"])
            r.setdefault("event_month", r["ts"].strftime("%Y-%m"))
        rel = table_rel(TENANT, dataset)
        table = ensure_table(self.store, rel, contract)
        write_deltalake(table, table_of(contract.arrow_schema(), items), mode="append")
        table.update_incremental()
        return int(table.version())

    def session(self, **kwargs: Any) -> Session:
        return connect(
            self.store,
            self.registry,
            KeyStore(self.settings.keys),
            self.audit(),
            principal=PRINCIPAL,
            purpose=PURPOSE,
            tenant=TENANT,
            **kwargs,
        )


def counter_series(
    device: str,
    branch: str,
    start: datetime,
    end: datetime,
    step_s: int,
    total: float,
    column: str,
    *,
    base: float = 0.0,
) -> list[dict[str, Any]]:
    """Readings every ``step_s`` from ``start`` to ``end`` (both included) of a counter
    rising evenly by ``total`` over the span, from ``base``."""
    n = int((end - start).total_seconds() // step_s)
    return [
        {
            "device_id": device,
            "branch_id": branch,
            "ts": start + timedelta(seconds=k * step_s),
            column: base + total * k / n,
        }
        for k in range(n + 1)
    ]  # fmt: skip
