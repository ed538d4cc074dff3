"""What an analyst might try from a governed session, each refused by the locked DuckDB
connection (it holds shaped Arrow views only: no lake path, no delta extension, external
access off, configuration locked), and each try recorded as an error in the access log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics.access import Session
from analytics.errors import QueryError
from lake.delta import read_table
from lake.layout import table_rel
from tests.analytics.conftest import GovernedLake


@pytest.fixture(scope="module")
def session(governed_lake: GovernedLake) -> Iterator[Session]:
    lake = governed_lake
    lake.book().grant("mallory", tenants=[lake.tenants[0]], purposes=["benchmarking"], actor="test")
    with lake.session("mallory", "benchmarking") as s:
        s.sql("SELECT count(*) FROM work_orders")  # a view made ready: data in the session
        yield s


def _paths(lake: GovernedLake) -> list[str]:
    root = Path(lake.store.url())
    mine, other = lake.tenants
    parquet = sorted((root / table_rel(other, "work_orders")).rglob("*.parquet"))
    assert parquet
    return [
        str(root / table_rel(mine, "work_orders")),
        str(root / table_rel(other, "work_orders")),
        str(parquet[0]),
        str(root / table_rel(mine, "work_orders") / ".." / ".." / other / "work_orders"),
        "../" * 12 + "etc/passwd",
        str(root / table_rel(other, "work_orders") / "_delta_log" / f"{0:020d}.json"),
    ]


READERS = [
    "SELECT * FROM read_parquet('{p}/**/*.parquet')",
    "SELECT * FROM read_parquet('{p}')",
    "SELECT * FROM read_csv('{p}')",
    "SELECT * FROM read_text('{p}')",
    "SELECT * FROM read_blob('{p}')",
    "SELECT * FROM glob('{p}/*')",
    "SELECT * FROM parquet_metadata('{p}')",
    "SELECT * FROM delta_scan('{p}')",
    "SELECT * FROM delta_list_files('{p}')",
    "SELECT * FROM '{p}'",  # a replacement scan by path
    "DESCRIBE SELECT * FROM delta_scan('{p}')",
    "SELECT * FROM sniff_csv('{p}')",
]


def test_no_file_of_the_lake_or_elsewhere_can_be_read(
    governed_lake: GovernedLake, session: Session
) -> None:
    tried = 0
    for path in _paths(governed_lake):
        for template in READERS:
            with pytest.raises(QueryError) as refused:
                session.sql(template.format(p=path))
            message = str(refused.value)
            assert any(
                word in message
                for word in (
                    "disabled by configuration",
                    "does not exist",
                    "not found",
                    "Permission",
                    "Catalog Error",
                )
            ), message
            tried += 1
    assert tried == len(READERS) * 6


WRITES_AND_SETTINGS = [
    "COPY work_orders TO '{tmp}/out.parquet'",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/new.duckdb' AS stolen",
    "EXPORT DATABASE '{tmp}/export'",
    "INSTALL delta",
    "LOAD delta",
    "LOAD '{tmp}/evil.duckdb_extension'",
    "INSTALL httpfs FROM 'http://127.0.0.1:9/'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET enable_external_access",
    "SET allowed_directories = ['/']",
    "SET temp_directory = '{tmp}'",
    "SET python_enable_replacements = true",
    "CREATE SECRET s3lake (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "CREATE PERSISTENT SECRET s2 (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    "SELECT * FROM read_parquet('https://example.invalid/x.parquet')",
    "SELECT * FROM read_parquet('s3://lake/tenants/x/work_orders/part.parquet')",
    "SELECT * FROM 'file:///etc/passwd'",
    "SELECT * FROM raw_rows",  # a Python variable of the caller's: no replacement scan
]


def test_no_write_no_extension_no_setting_no_secret_no_url(
    session: Session, tmp_path: Path
) -> None:
    raw_rows: Any = read_table  # noqa: F841 - in scope on purpose: it must stay out of reach
    for template in WRITES_AND_SETTINGS:
        with pytest.raises(QueryError):
            session.sql(template.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was written
    rows = session.sql(
        "SELECT name, value FROM duckdb_settings() WHERE name IN"
        " ('enable_external_access', 'lock_configuration', 'autoload_known_extensions',"
        " 'python_enable_replacements')"
    ).to_pylist()
    settings = {r["name"]: r["value"] for r in rows}
    assert settings == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoload_known_extensions": "false",
        "python_enable_replacements": "false",
    }


def test_error_messages_hold_shaped_values_only(
    governed_lake: GovernedLake, session: Session
) -> None:
    lake = governed_lake
    raw = read_table(lake.store, table_rel(lake.tenants[0], "work_orders"))
    secrets = {
        str(v)
        for column in ("technician_phone", "technician_name", "technician_id", "device_id")
        for v in raw[column].to_pylist()
        if v
    }
    for statement in (
        "SELECT CAST(technician_phone AS INTEGER) FROM work_orders",
        "SELECT CAST(technician_name AS DATE) FROM work_orders",
        "SELECT CAST(device_id AS UUID) FROM work_orders",
        "SELECT error(technician_phone || technician_name) FROM work_orders",
    ):
        with pytest.raises(QueryError) as failed:
            session.sql(statement)
        message = str(failed.value)
        assert not [s for s in secrets if s in message], message
