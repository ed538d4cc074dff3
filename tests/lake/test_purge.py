"""lake.purge: after a delete, the removed rows' bytes leave the table folder and its log."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from lake.purge import FILE_RETENTION, LOG_RETENTION, purge_table, unreferenced_files
from lake.storage import Store


def _bytes_anywhere(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_purge_removes_deleted_rows_orphans_and_the_delete_predicate(tmp_path: Path) -> None:
    path = tmp_path / "lake" / "t"
    for i in range(3):
        rows = {"b": ["x", "y"], "name": [f"alice{i}", f"bob{i}"]}
        write_deltalake(str(path), pa.table(rows), mode="append", partition_by=["b"])
    DeltaTable(str(path)).delete("name = 'alice1'")
    assert _bytes_anywhere(path, b"alice1"), "the delete alone leaves the bytes (the premise)"
    # an old orphan (a crashed writer's file, holding the value) and a young one
    live = sorted(DeltaTable(str(path)).file_uris())[0]
    orphan = path / "b=x" / "orphan.parquet"
    orphan.write_bytes(Path(live).read_bytes() + b"alice1")
    os.utime(orphan, (time.time() - 7200,) * 2)
    young = path / "b=y" / "young.parquet"
    young.write_bytes(b"in flight")
    store = Store.from_uri(str(tmp_path / "lake"))
    assert "b=x/orphan.parquet" in unreferenced_files(store, "t")

    report = purge_table(store, "t")

    assert _bytes_anywhere(tmp_path, b"alice1") == []
    assert report.removed_files
    assert report.orphan_files == ["b=x/orphan.parquet"]
    assert report.young_orphans == ["b=y/young.parquet"]
    assert young.exists()
    table = DeltaTable(str(path))
    names = sorted(table.to_pyarrow_table().column("name").to_pylist())
    assert names == ["alice0", "alice2", "bob0", "bob1", "bob2"]
    config = table.metadata().configuration
    assert config[LOG_RETENTION] == "interval 30 days"
    assert config[FILE_RETENTION] == "interval 7 days"
    delete_commit = path / "_delta_log" / f"{report.version_before:020d}.json"
    assert not delete_commit.exists()  # it held the predicate's literal
    # a second purge (a rerun after a crash) is harmless
    purge_table(store, "t")
    assert DeltaTable(str(path)).to_pyarrow_table().num_rows == 5


def test_purge_after_a_crash_with_zero_retention_restores_defaults(tmp_path: Path) -> None:
    path = tmp_path / "lake" / "t"
    write_deltalake(str(path), pa.table({"v": [1, 2]}))
    DeltaTable(str(path)).alter.set_table_properties(
        {LOG_RETENTION: "interval 0 seconds", FILE_RETENTION: "interval 0 seconds"}
    )  # what a purge killed between its first and last step leaves
    purge_table(Store.from_uri(str(tmp_path / "lake")), "t")
    config = DeltaTable(str(path)).metadata().configuration
    assert config[LOG_RETENTION] == "interval 30 days"
    assert config[FILE_RETENTION] == "interval 7 days"
