"""A field a device profile may omit is nullable in the table; a table created under the
contract before the profile (NOT NULL) loses the constraint when opened, a commit of
metadata only, and then takes a row without the field."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from contracts import load_registry
from lake.delta import ensure_table
from lake.storage import Store


def test_an_older_table_loses_not_null_on_the_fields_a_profile_omits(tmp_path: Path) -> None:
    contract = load_registry().get("meter_readings")
    assert "energy_export_kwh" in contract.may_omit
    schema = contract.arrow_schema()
    assert schema.field("energy_export_kwh").nullable
    assert not schema.field("device_id").nullable  # the rest keeps its constraints
    # the table as the contract made it before profiles: every required field NOT NULL
    strict = pa.schema(
        [f.with_nullable(False) if f.name in contract.may_omit else f for f in schema],
        metadata=schema.metadata,
    )
    store = Store.from_uri(tmp_path / "lake")
    rel = "c-1/meter_readings"
    write_deltalake(store.url(rel), strict.empty_table(), partition_by=contract.partition_columns)
    before = DeltaTable(store.url(rel))
    assert not dict((f.name, f.nullable) for f in before.schema().fields)["energy_export_kwh"]
    table = ensure_table(store, rel, contract)
    nullable = {f.name: f.nullable for f in table.schema().fields}
    assert all(nullable[name] for name in contract.may_omit)
    assert not nullable["device_id"]
    assert table.version() > before.version()
    operations = [h.get("energylake.operation") for h in table.history()]
    assert operations.count("drop not null") == len(contract.may_omit)


def test_a_registry_written_before_the_new_device_columns_still_loads(tmp_path: Path) -> None:
    """A devices table of contract 1.2 (no modbus_endpoint ... profile) is read with them
    null, until the next load or onboarding adds them."""
    from lake.layout import table_rel
    from lake.reference import load_device_registry

    registry = load_registry()
    schema = registry.get("devices").arrow_schema()
    new = ("modbus_endpoint", "modbus_unit_id", "register_map", "edge_node", "mqtt_name", "profile")
    old = pa.schema([f for f in schema if f.name not in new])
    row = {
        "device_id": "m-1",
        "client_id": "c-1",
        "branch_id": "b-1",
        "kind": "meter",
        "manufacturer": "Acme",
        "model": "M",
        "payload_format": "canonical",
        "rated_power_kw": 10.0,
        "cadence_s": 60,
        "status": "active",
        "installed_on": date(2024, 1, 1),
        "updated_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in old}], schema=old)
    store = Store.from_uri(tmp_path / "lake")
    (tmp_path / "lake" / "c-1").mkdir(parents=True)
    write_deltalake(store.url(table_rel("c-1", "devices")), table)
    loaded = load_device_registry(store, registry)
    assert loaded.schema.names == schema.names
    assert loaded.to_pylist()[0]["mqtt_name"] is None
    assert loaded.to_pylist()[0]["device_id"] == "m-1"
