"""The archive tier's tables: one Delta table per tenant and dataset
(``lake.layout.archive_rel``), holding the rows the hot tier no longer keeps.

An archive table has the dataset's contract schema plus ``basis_month`` (``YYYY-MM`` of
the retention basis, UTC), its only partition column: the hot table's partition columns
(``branch_id``) stay plain columns. Statistics follow ``lake.delta.stats_columns`` of that
derived contract: personal, location and secret columns are never in them.

A pass writes one file per month (split when a month is larger than the target size),
under a deterministic name, so a pass redone after a crash rewrites the same files. On S3
the data files are written in the configured storage class (``GLACIER_IR`` by default,
which stays readable at once); the ``_delta_log`` is written by delta-rs in STANDARD.
"""

from __future__ import annotations

import dataclasses
import math
import time
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import Contract
from contracts.errors import ConfigError
from contracts.model import Field
from lake.delta import ROW_GROUP_ROWS, DataFile, data_file_name, file_stats, stats_columns
from lake.storage import Store

__all__ = [
    "ARCHIVE_STORAGE_CLASSES",
    "BASIS_MONTH",
    "archive_contract",
    "month_of",
    "write_archive_files",
]

BASIS_MONTH = "basis_month"
"""The archive tables' partition column: the month (``YYYY-MM``, UTC) of the basis."""

ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER_IR", "STANDARD", "STANDARD_IA"})
"""S3 storage classes an archive data file may be written in: each readable at once.
GLACIER (Flexible Retrieval) and DEEP_ARCHIVE need a restore first, which would break
every read of the table (docs/RETENTION.md)."""

_URL_SAFE = "/=-_."


def archive_contract(contract: Contract) -> Contract:
    """The contract of ``contract``'s archive tables: its fields, unpartitioned, then
    ``basis_month`` (the only partition column), classified as the basis is."""
    basis = contract.field(contract.retention.basis)
    month = Field(
        name=BASIS_MONTH,
        description=f"Month (YYYY-MM, UTC) of {basis.name}: the archive's partition.",
        logical_type="string",
        physical_type="string",
        required=True,
        classification=basis.classification,
        purposes=basis.purposes,
        partition_position=1,
    )
    fields = tuple(dataclasses.replace(f, partition_position=None) for f in contract.fields)
    return dataclasses.replace(contract, fields=(*fields, month))


def month_of(column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """``YYYY-MM`` (UTC) of each timestamp of ``column``."""
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = pc.cast(column, pa.timestamp(column.type.unit, tz="UTC"))
    return pc.strftime(column, format="%Y-%m")


def _put(store: Store, rel: str, data: memoryview, storage_class: str) -> None:
    settings = store.s3_settings
    if settings is None:
        store.put_bytes(rel, data)
        return
    bucket = store.bucket
    key = store.url(rel).removeprefix(f"s3://{bucket}/")
    store.boto3_client().put_object(
        Bucket=bucket,
        Key=key,
        Body=bytes(data),
        StorageClass=storage_class,
        **settings.encryption.put_args(),
    )


def write_archive_files(
    store: Store,
    rel: str,
    contract: Contract,
    rows: pa.Table,
    *,
    batch_id: str,
    storage_class: str,
    target_file_bytes: int,
) -> list[DataFile]:
    """Write ``rows`` (the hot contract's columns) into the archive table at ``rel``:
    one file per ``basis_month`` (split into parts above ``target_file_bytes``), named
    from ``batch_id``, nothing committed. ``contract``: the archive contract."""
    if storage_class not in ARCHIVE_STORAGE_CLASSES:
        raise ConfigError(
            f"archive storage class {storage_class!r} is not one of "
            f"{sorted(ARCHIVE_STORAGE_CLASSES)} (a table's files must stay readable); "
            "set archive_storage_class to one of them",
            setting="archive_storage_class",
            value=storage_class,
        )
    if rows.num_rows == 0:
        return []
    basis = contract.retention.basis
    months = month_of(rows.column(basis))
    rows = rows.append_column(contract.field(BASIS_MONTH).arrow_field(), months)
    rows = rows.select(contract.field_names).cast(contract.arrow_schema())
    columns = [c for c in stats_columns(contract) if c != BASIS_MONTH]
    files: list[DataFile] = []
    for month in sorted(pc.unique(rows.column(BASIS_MONTH)).to_pylist()):
        chunk = rows.filter(pc.equal(rows.column(BASIS_MONTH), month))
        chunk = chunk.sort_by([(basis, "ascending")]).drop_columns([BASIS_MONTH])
        # in memory, a row of ours is ~3-6x its compressed size: split well above the target
        parts = max(1, math.ceil(chunk.nbytes / (4 * target_file_bytes)))
        step = math.ceil(chunk.num_rows / parts)
        for part in range(parts):
            piece = chunk.slice(part * step, step)
            values: dict[str, str | None] = {BASIS_MONTH: month}
            name = data_file_name(batch_id, values, part)
            physical = f"{BASIS_MONTH}={month}/{name}"
            sink = pa.BufferOutputStream()
            pq.write_table(
                piece,
                sink,
                compression="zstd",
                row_group_size=ROW_GROUP_ROWS,
                write_statistics=True,
            )
            buffer = sink.getvalue()
            _put(store, f"{rel}/{physical}", memoryview(buffer), storage_class)
            files.append(
                DataFile(
                    path=quote(physical, safe=_URL_SAFE),
                    size=buffer.size,
                    partition_values=values,
                    modification_time=int(time.time() * 1000),
                    num_records=piece.num_rows,
                    stats=file_stats(piece, columns),
                )
            )
    return files
