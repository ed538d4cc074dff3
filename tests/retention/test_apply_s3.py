"""On S3 the archive tier's data files are written in the configured storage class and its
``_delta_log`` never is (checked object by object on moto's S3 server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import load_registry
from contracts.errors import ConfigError
from lake.delta import read_table
from lake.layout import archive_rel, table_rel
from lake.storage import Store
from retention.apply import apply_retention
from tests.retention.test_apply import DATASET, build_lake, mid_now, tenant_of


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "STANDARD"])
def test_archive_data_files_take_the_storage_class_and_the_log_does_not(
    tmp_path: Path, s3_store: Store, storage_class: str
) -> None:
    settings = build_lake(tmp_path)
    local = Store.from_uri(settings.lake)
    tenant = tenant_of(local)
    hot = table_rel(tenant, DATASET)
    root = Path(local.url(hot))
    for path in root.rglob("*"):
        if path.is_file():
            s3_store.put_bytes(f"{hot}/{path.relative_to(root).as_posix()}", path.read_bytes())
    now = mid_now(s3_store, hot)
    rows = read_table(s3_store, hot).num_rows
    report = apply_retention(
        s3_store, load_registry(), now, apply=True, storage_class=storage_class
    )
    (result,) = [t for t in report.tables if t.table == hot]
    assert result.rows_archived > 0
    arch = archive_rel(tenant, DATASET)
    client = s3_store.boto3_client()
    bucket = s3_store.bucket
    prefix = s3_store.url(arch).removeprefix(f"s3://{bucket}/")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    data = [o["Key"] for o in listed if "/_delta_log/" not in o["Key"]]
    log = [o["Key"] for o in listed if "/_delta_log/" in o["Key"]]
    assert data
    assert log
    for key in data:  # head_object omits StorageClass for STANDARD
        head = client.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass", "STANDARD") == storage_class, key
    for key in log:
        assert client.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD") == (
            "STANDARD"
        ), key
    # still readable at once: nothing lost or doubled
    assert read_table(s3_store, hot).num_rows + read_table(s3_store, arch).num_rows == rows


def test_an_unreadable_storage_class_is_refused(tmp_path: Path, s3_store: Store) -> None:
    settings = build_lake(tmp_path)
    local = Store.from_uri(settings.lake)
    hot = table_rel(tenant_of(local), DATASET)
    with pytest.raises(ConfigError, match="DEEP_ARCHIVE"):
        apply_retention(
            local, load_registry(), mid_now(local, hot), apply=True, storage_class="DEEP_ARCHIVE"
        )
