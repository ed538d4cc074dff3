"""Reference data into the lake: validation, tenant split, idempotence, the device registry."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from contracts import load_registry
from contracts.errors import EnergylakeError
from lake.delta import open_table, read_table, table_exists
from lake.errors import ReferenceDataError
from lake.layout import clients_rel, table_rel, tenants
from lake.reference import (
    FINGERPRINT_KEY,
    REFERENCE_DATASETS,
    load_device_registry,
    load_reference,
    read_reference_file,
)
from lake.storage import Store
from simulator.config import SimConfig
from simulator.reference import build_fleet
from simulator.run import write_reference

REGISTRY = load_registry()
SPLIT = [d for d in REFERENCE_DATASETS if d != "clients"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The simulator's reference files for 3 clients x 3 branches."""
    folder = tmp_path / "reference"
    write_reference(build_fleet(SimConfig(clients=3, branches=3, seed=7)), REGISTRY, folder)
    return folder


def versions(store: Store) -> dict[str, int]:
    found = {clients_rel(): open_table(store, clients_rel()).version()}
    for tenant in tenants(store):
        for dataset in SPLIT:
            rel = table_rel(tenant, dataset)
            if table_exists(store, rel):
                found[rel] = open_table(store, rel).version()
    return found


def source_rows(source: Path, dataset: str) -> pa.Table:
    return pq.read_table(source / f"{dataset}.parquet")


@pytest.mark.slow
def test_load_splits_by_tenant(store: Store, source: Path) -> None:
    result = load_reference(store, source, REGISTRY)
    assert sorted(result) == sorted(REFERENCE_DATASETS)
    clients = sorted(source_rows(source, "clients").column("client_id").to_pylist())
    assert len(clients) == 3
    assert tenants(store) == clients
    assert result["clients"].tables[0].rel == clients_rel()
    assert read_table(store, clients_rel()).num_rows == 3
    for dataset in SPLIT:
        load = result[dataset]
        expected = source_rows(source, dataset)
        assert load.rows == expected.num_rows
        assert load.changed
        assert [t.tenant for t in load.tables] == clients
        total = 0
        for table_load in load.tables:
            assert table_load.rel == table_rel(str(table_load.tenant), dataset)
            rows = read_table(store, table_load.rel)
            assert set(rows.column("client_id").to_pylist()) == {table_load.tenant}
            want = expected.filter(pc.equal(expected.column("client_id"), table_load.tenant))
            assert rows.num_rows == table_load.rows == want.num_rows
            total += rows.num_rows
        assert total == expected.num_rows
    # the written rows are the source's, under the contract's schema
    devices = read_table(store, table_rel(clients[0], "devices"))
    contract = REGISTRY.get("devices")
    assert devices.schema.names == contract.field_names
    want = source_rows(source, "devices")
    want = want.filter(pc.equal(want.column("client_id"), clients[0])).sort_by("device_id")
    assert (
        devices.sort_by("device_id")
        .cast(contract.arrow_schema())
        .equals(want.cast(contract.arrow_schema()))
    )


@pytest.mark.slow
def test_second_load_makes_no_new_version(store: Store, source: Path) -> None:
    load_reference(store, source, REGISTRY)
    before = versions(store)
    again = load_reference(store, source, REGISTRY)
    assert not any(load.changed for load in again.values())
    assert versions(store) == before
    history = open_table(store, table_rel(tenants(store)[0], "devices")).history(1)[0]
    assert history[FINGERPRINT_KEY] == again["devices"].tables[0].fingerprint


@pytest.mark.slow
def test_changed_content_overwrites_only_what_changed(store: Store, source: Path) -> None:
    load_reference(store, source, REGISTRY)
    before = versions(store)
    devices = source_rows(source, "devices")
    first = devices.column("device_id")[0].as_py()
    tenant = devices.column("client_id")[0].as_py()
    status = pc.if_else(pc.equal(devices.column("device_id"), first), "retired", devices["status"])
    changed = devices.set_column(devices.schema.get_field_index("status"), "status", status)
    pq.write_table(changed, source / "devices.parquet")

    result = load_reference(store, source, REGISTRY)
    assert [t.tenant for t in result["devices"].tables if t.changed] == [tenant]
    after = versions(store)
    rel = table_rel(tenant, "devices")
    assert after[rel] == before[rel] + 1
    assert {k: v for k, v in after.items() if k != rel} == {
        k: v for k, v in before.items() if k != rel
    }
    rows = read_table(store, rel)
    assert rows.num_rows == result["devices"].tables[0].rows
    retired = rows.filter(pc.equal(rows.column("device_id"), first))
    assert retired.column("status").to_pylist() == ["retired"]
    assert len(open_table(store, rel).get_add_actions().column("path")) == 1  # overwritten


@pytest.mark.slow
def test_a_tenant_gone_from_the_source_is_emptied(store: Store, source: Path) -> None:
    load_reference(store, source, REGISTRY)
    work_orders = source_rows(source, "work_orders")
    gone = sorted(set(work_orders.column("client_id").to_pylist()))[0]
    kept = work_orders.filter(pc.not_equal(work_orders.column("client_id"), gone))
    pq.write_table(kept, source / "work_orders.parquet")
    result = load_reference(store, source, REGISTRY)
    by_tenant = {t.tenant: t for t in result["work_orders"].tables}
    assert by_tenant[gone].changed
    assert by_tenant[gone].rows == 0
    assert read_table(store, table_rel(gone, "work_orders")).num_rows == 0
    assert not any(t.changed for t in result["work_orders"].tables if t.tenant != gone)


@pytest.mark.slow
def test_device_registry_is_every_tenants_devices(store: Store, source: Path) -> None:
    contract = REGISTRY.get("devices")
    empty = load_device_registry(store, REGISTRY)
    assert empty.num_rows == 0
    assert empty.schema == contract.arrow_schema()
    load_reference(store, source, REGISTRY)
    registry = load_device_registry(store, REGISTRY)
    assert registry.schema == contract.arrow_schema()
    want = source_rows(source, "devices").cast(contract.arrow_schema()).sort_by("device_id")
    assert registry.sort_by("device_id").equals(want)


# ---------------------------------------------------------------------------- validation


def rewrite(source: Path, dataset: str, table: pa.Table) -> Path:
    path = source / f"{dataset}.parquet"
    pq.write_table(table, path)
    return path


def test_a_missing_column_is_named(local_store: Store, source: Path) -> None:
    path = rewrite(source, "devices", source_rows(source, "devices").drop_columns(["kind"]))
    with pytest.raises(ReferenceDataError) as info:
        load_reference(local_store, source, REGISTRY)
    assert isinstance(info.value, EnergylakeError)
    assert str(path) in str(info.value)
    assert info.value.column == "kind"
    assert tenants(local_store) == []  # nothing is written before every file is valid
    assert not table_exists(local_store, clients_rel())


def test_an_extra_column_is_named(local_store: Store, source: Path) -> None:
    table = source_rows(source, "branches")
    rewrite(source, "branches", table.append_column("secret_code", pa.array(["x"] * len(table))))
    with pytest.raises(ReferenceDataError, match="secret_code"):
        load_reference(local_store, source, REGISTRY)


def test_a_lossy_type_is_refused_and_a_lossless_one_cast(source: Path) -> None:
    contract = REGISTRY.get("devices")
    table = source_rows(source, "devices")
    index = table.schema.get_field_index("cadence_s")
    widened = table.set_column(index, "cadence_s", table.column("cadence_s").cast(pa.int64()))
    path = rewrite(source, "devices", widened)
    assert read_reference_file(path, contract).schema == contract.arrow_schema()

    floats = table.column("cadence_s").cast(pa.float64())
    fractional = pc.add(floats, pa.scalar(0.5))
    path = rewrite(source, "devices", table.set_column(index, "cadence_s", fractional))
    with pytest.raises(ReferenceDataError) as info:
        read_reference_file(path, contract)
    assert info.value.column == "cadence_s"

    texts = table.column("cadence_s").cast(pa.string())
    path = rewrite(source, "devices", table.set_column(index, "cadence_s", texts))
    with pytest.raises(ReferenceDataError, match="contract type int32"):
        read_reference_file(path, contract)


def test_nulls_in_a_required_column_are_refused(source: Path) -> None:
    contract = REGISTRY.get("clients")
    table = source_rows(source, "clients")
    index = table.schema.get_field_index("sector")
    nulls = pa.array([None] * len(table), pa.string())
    path = rewrite(source, "clients", table.set_column(index, "sector", nulls))
    with pytest.raises(ReferenceDataError) as info:
        read_reference_file(path, contract)
    assert info.value.column == "sector"
    assert "null" in str(info.value)


def test_duplicate_keys_and_bad_tenants_are_refused(local_store: Store, source: Path) -> None:
    contract = REGISTRY.get("branches")
    table = source_rows(source, "branches")
    path = rewrite(source, "branches", pa.concat_tables([table, table.slice(0, 1)]))
    with pytest.raises(ReferenceDataError, match="duplicate"):
        read_reference_file(path, contract)
    rewrite(source, "branches", table)

    contacts = source_rows(source, "contacts")
    index = contacts.schema.get_field_index("client_id")
    stranger = pa.array(["stranger"] * len(contacts))
    rewrite(source, "contacts", contacts.set_column(index, "client_id", stranger))
    with pytest.raises(ReferenceDataError, match="not in clients"):
        load_reference(local_store, source, REGISTRY)


def test_a_missing_file_is_named(local_store: Store, source: Path) -> None:
    (source / "contacts.parquet").unlink()
    with pytest.raises(ReferenceDataError, match=r"contacts\.parquet"):
        load_reference(local_store, source, REGISTRY)
