"""Reference data into the lake: clients, branches, devices, contacts, work orders.

The source is a folder of ``<dataset>.parquet`` files (the simulator's ``reference/``, or an
export of the operator's CRM). Each file is checked against its contract's Arrow schema
(lossless casts only), then written as a Delta table: ``clients`` to ``platform/clients``,
the others split by ``client_id`` to ``tenants/<client>/<dataset>``.

A load is a snapshot: each table ends up holding exactly the source's rows. It is
idempotent: a table whose content fingerprint is unchanged gets no new version; a changed
one is overwritten in one commit (the fingerprint rides in the commit metadata).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake

from contracts.model import Contract
from contracts.registry import ContractRegistry, load_registry
from lake.arrow_types import family
from lake.delta import CONTRACT_KEY, ensure_table, open_table, read_table, table_exists
from lake.errors import LakeError, LayoutError, ReferenceDataError
from lake.layout import check_tenant, clients_rel, platform_rel, table_rel, tenants
from lake.storage import Store

__all__ = [
    "FINGERPRINT_KEY",
    "REFERENCE_DATASETS",
    "TENANT_COLUMN",
    "ReferenceLoad",
    "TableLoad",
    "fingerprint",
    "load_device_registry",
    "load_platform_reference",
    "load_reference",
    "read_platform_reference",
    "read_reference_file",
    "write_reference_rows",
]

REFERENCE_DATASETS = ("clients", "branches", "devices", "contacts", "work_orders")
TENANT_COLUMN = "client_id"
FINGERPRINT_KEY = "energylake.fingerprint"
_UTC = frozenset({"UTC", "utc", "Etc/UTC", "+00:00", "Z"})


@dataclass(frozen=True, slots=True)
class TableLoad:
    """One table written (or left alone) by a load."""

    rel: str
    tenant: str | None
    rows: int
    changed: bool
    version: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ReferenceLoad:
    """A dataset's load: its rows in the source and what happened to each table."""

    dataset: str
    source: str
    rows: int
    tables: tuple[TableLoad, ...]

    @property
    def changed(self) -> bool:
        """Whether any of the dataset's tables got a new version."""
        return any(t.changed for t in self.tables)


# ---------------------------------------------------------------------------- validation


def _castable(have: pa.DataType, want: pa.DataType) -> bool:
    have_family, want_family = family(have), family(want)
    if have_family == "null":
        return True
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return (have.tz in _UTC) == (want.tz in _UTC) and (have.tz is None) == (want.tz is None)
    return have_family == want_family or (have_family, want_family) == ("int", "float")


def _cast_column(
    column: pa.ChunkedArray, want: pa.DataType, file: str, name: str
) -> pa.ChunkedArray:
    if column.type == want:
        return column
    if not _castable(column.type, want):
        raise ReferenceDataError(file, f"type {column.type}, contract type {want}", name)
    try:
        cast = column.cast(want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReferenceDataError(
            file, f"type {column.type} does not cast to {want} without loss: {exc}", name
        ) from exc
    if not pa.types.is_null(column.type) and not pa.types.is_dictionary(column.type):
        back = cast.cast(column.type, safe=False)
        if not back.equals(column):
            raise ReferenceDataError(
                file, f"type {column.type} does not cast to {want} without loss", name
            )
    return cast


def read_reference_file(path: Path, contract: Contract) -> pa.Table:
    """The file's rows under the contract's Arrow schema, sorted by its primary key.

    Raises :class:`ReferenceDataError` naming the file and column when a column is missing
    or extra, has a type that does not cast losslessly, holds nulls where the contract
    requires a value, or when the primary key repeats.
    """
    file = str(path)
    if not path.is_file():
        raise ReferenceDataError(file, f"missing (the source of dataset {contract.dataset!r})")
    schema = contract.arrow_schema()
    try:
        raw = _read_csv(path, schema) if path.suffix == ".csv" else pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        kind = "CSV" if path.suffix == ".csv" else "Parquet"
        raise ReferenceDataError(file, f"not a readable {kind} file: {exc}") from exc
    extra = [name for name in raw.column_names if name not in schema.names]
    if extra:
        raise ReferenceDataError(file, f"not in contract {contract.ref}", extra[0])
    columns = []
    for field in schema:
        if field.name not in raw.column_names:
            raise ReferenceDataError(file, f"missing (required by {contract.ref})", field.name)
        column = _cast_column(raw.column(field.name), field.type, file, field.name)
        if not field.nullable and column.null_count:
            raise ReferenceDataError(
                file,
                f"{column.null_count} null value(s); {contract.ref} requires a value",
                field.name,
            )
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=schema)
    keys = contract.primary_key
    if keys and table.num_rows:
        distinct = table.group_by(keys).aggregate([]).num_rows
        if distinct != table.num_rows:
            raise ReferenceDataError(
                file,
                f"{table.num_rows - distinct} duplicate primary key value(s)",
                ",".join(keys),
            )
        table = table.sort_by([(k, "ascending") for k in keys])
    return table


def _read_csv(path: Path, schema: pa.Schema) -> pa.Table:
    """A CSV reference file (a header row; empty cells are nulls), typed by the contract."""
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def fingerprint(table: pa.Table) -> str:
    """A content fingerprint: the schema's names and types and every value, in row order."""
    digest = hashlib.sha256()
    for field, column in zip(table.schema, table.columns, strict=True):
        digest.update(orjson.dumps([field.name, str(field.type)]))
        digest.update(orjson.dumps(column.to_pylist(), option=orjson.OPT_NON_STR_KEYS))
    return digest.hexdigest()


# ---------------------------------------------------------------------------- loading


def _current_fingerprint(store: Store, rel: str, table: DeltaTable, contract: Contract) -> str:
    history = table.history(limit=1)
    if history and isinstance(history[0].get(FINGERPRINT_KEY), str):
        return str(history[0][FINGERPRINT_KEY])
    # the last commit is not a load (created, compacted, erased from, ...): look at the rows
    rows = read_table(store, rel).select(contract.field_names).cast(contract.arrow_schema())
    if contract.primary_key and rows.num_rows:
        rows = rows.sort_by([(k, "ascending") for k in contract.primary_key])
    return fingerprint(rows)


def _load_table(
    store: Store, rel: str, contract: Contract, rows: pa.Table, source: str, tenant: str | None
) -> TableLoad:
    table = ensure_table(store, rel, contract)
    new = fingerprint(rows)
    if _current_fingerprint(store, rel, table, contract) == new:
        return TableLoad(rel, tenant, rows.num_rows, False, table.version(), new)
    write_deltalake(
        table,
        rows,
        mode="overwrite",
        writer_properties=WriterProperties(compression="ZSTD"),
        commit_properties=CommitProperties(
            custom_metadata={
                FINGERPRINT_KEY: new,
                CONTRACT_KEY: contract.ref,
                "energylake.source": source,
                "energylake.rows": str(rows.num_rows),
            }
        ),
    )
    table.update_incremental()
    return TableLoad(rel, tenant, rows.num_rows, True, table.version(), new)


def write_reference_rows(
    store: Store, rel: str, contract: Contract, rows: pa.Table, *, source: str, tenant: str | None
) -> int:
    """Replace one reference table with ``rows`` (a snapshot, as a load writes it: nothing
    is written when they are what it holds); the table's version after."""
    return int(_load_table(store, rel, contract, rows, source, tenant).version)


def load_reference(
    store: Store,
    source_dir: Path,
    registry: ContractRegistry | None = None,
    datasets: Sequence[str] = REFERENCE_DATASETS,
) -> dict[str, ReferenceLoad]:
    """Load the reference files of ``source_dir`` into the lake (see the module doc).

    Every file is validated before anything is written. Tenants that had a table of a
    dataset and no longer have rows in the source get that table emptied.
    """
    registry = registry or load_registry()
    contracts = {name: registry.get(name) for name in datasets}
    tables = {
        name: read_reference_file(source_dir / f"{name}.parquet", contracts[name])
        for name in datasets
    }
    known = None
    if "clients" in tables:
        known = set(tables["clients"].column(TENANT_COLUMN).to_pylist())
        for client in sorted(known):
            _tenant(client, source_dir / "clients.parquet")
    for name, rows in tables.items():  # every tenant id checked before anything is written
        if name == "clients":
            continue
        if TENANT_COLUMN not in rows.column_names:
            raise LakeError(f"dataset {name!r} has no {TENANT_COLUMN!r} column to split by")
        for client in sorted(set(rows.column(TENANT_COLUMN).to_pylist())):
            _tenant(client, source_dir / f"{name}.parquet")
            if known is not None and client not in known:
                raise ReferenceDataError(
                    str(source_dir / f"{name}.parquet"),
                    f"client {client!r} is not in clients",
                    TENANT_COLUMN,
                )
    results: dict[str, ReferenceLoad] = {}
    for name in datasets:
        contract, rows = contracts[name], tables[name]
        source = str(source_dir / f"{name}.parquet")
        loads: tuple[TableLoad, ...]
        if name == "clients":
            loads = (_load_table(store, clients_rel(), contract, rows, source, None),)
        else:
            loads = tuple(_load_split(store, name, contract, rows, source))
        results[name] = ReferenceLoad(name, source, rows.num_rows, loads)
    return results


def _tenant(value: object, file: Path) -> str:
    try:
        return check_tenant(str(value))
    except LayoutError as exc:
        raise ReferenceDataError(str(file), f"{exc}", TENANT_COLUMN) from None


def _load_split(
    store: Store, name: str, contract: Contract, rows: pa.Table, source: str
) -> list[TableLoad]:
    present = set(rows.column(TENANT_COLUMN).to_pylist())
    existing = [t for t in tenants(store) if table_exists(store, table_rel(t, name))]
    loads = []
    for tenant in sorted(present | set(existing)):
        part = rows.filter(pc.equal(rows.column(TENANT_COLUMN), tenant))
        loads.append(_load_table(store, table_rel(tenant, name), contract, part, source, tenant))
    return loads


def load_platform_reference(store: Store, path: Path, contract: Contract) -> TableLoad:
    """Load a platform-wide reference file (Parquet, or CSV with a header row) into
    ``platform/<dataset>`` under its contract: a snapshot, idempotent like every load."""
    if not contract.platform_wide:
        raise LakeError(
            f"{contract.ref} is a per-tenant dataset; load it with the others"
            " (energylake reference load)"
        )
    rows = read_reference_file(path, contract)
    return _load_table(store, platform_rel(contract.dataset), contract, rows, str(path), None)


def read_platform_reference(
    store: Store, contract: Contract, version: int | None = None
) -> tuple[pa.Table, int]:
    """A platform-wide reference table (latest, or ``version``) and the version read."""
    rel = platform_rel(contract.dataset)
    if not table_exists(store, rel):
        raise ReferenceDataError(
            store.url(rel),
            f"no {contract.dataset} table; load it first (energylake reference"
            f" load-platform {contract.dataset})",
        )
    table = open_table(store, rel, version)
    rows = read_table(store, rel, version=int(table.version()))
    return rows.select(contract.field_names).cast(contract.arrow_schema()), int(table.version())


def load_device_registry(store: Store, registry: ContractRegistry | None = None) -> pa.Table:
    """Every tenant's devices in one table (the devices contract's schema; empty if none)."""
    contract = (registry or load_registry()).get("devices")
    schema = contract.arrow_schema()
    parts = []
    for tenant in tenants(store):
        rel = table_rel(tenant, "devices")
        if table_exists(store, rel):
            rows = read_table(store, rel)
            for field in schema:  # a table a contract version behind: its optional columns
                if field.name not in rows.column_names and field.nullable:
                    rows = rows.append_column(field.name, pa.nulls(rows.num_rows, field.type))
            parts.append(rows.select(schema.names).cast(schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)
