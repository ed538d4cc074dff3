"""A field a device profile may omit is nullable in the table; a table created under the
contract before the profile (NOT NULL) loses the constraint when opened, a commit of
metadata only, and then takes a row without the field."""

from __future__ import annotations

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
