"""Delta tables on local disk or S3. Imports only ``contracts`` and ``durable``; never Beam.

The store (:mod:`lake.storage`), where things
are (:mod:`lake.layout`), tables, data files, commits and compaction (:mod:`lake.delta`),
reference data (:mod:`lake.reference`). docs/LAKE.md describes the layout and the protocol.
"""

from lake.delta import (
    CompactReport,
    DataFile,
    app_txn_version,
    commit_files,
    compact,
    data_file_name,
    dataset,
    ensure_table,
    files_per_partition,
    open_table,
    read_table,
    table_exists,
    write_data_file,
)
from lake.errors import (
    CommitError,
    LakeError,
    LayoutError,
    ReferenceDataError,
    SchemaMismatchError,
    StorageError,
)
from lake.layout import (
    UNASSIGNED_TENANT,
    clients_rel,
    raw_archive_rel,
    state_rel,
    table_rel,
    tenants,
)
from lake.reference import ReferenceLoad, TableLoad, load_device_registry, load_reference
from lake.storage import S3Encryption, S3Settings, Store

__all__ = [
    "UNASSIGNED_TENANT",
    "CommitError",
    "CompactReport",
    "DataFile",
    "LakeError",
    "LayoutError",
    "ReferenceDataError",
    "ReferenceLoad",
    "S3Encryption",
    "S3Settings",
    "SchemaMismatchError",
    "StorageError",
    "Store",
    "TableLoad",
    "app_txn_version",
    "clients_rel",
    "commit_files",
    "compact",
    "data_file_name",
    "dataset",
    "ensure_table",
    "files_per_partition",
    "load_device_registry",
    "load_reference",
    "open_table",
    "raw_archive_rel",
    "read_table",
    "state_rel",
    "table_exists",
    "table_rel",
    "tenants",
    "write_data_file",
]
