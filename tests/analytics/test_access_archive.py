"""The access layer serves a dataset as hot UNION ALL archive (issue 15): after a retention
pass an analyst's answers are the same rows, shaped the same way for the purpose (a
protected field stays protected in archived rows), and nothing is lost or doubled."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc

from analytics.access import connect
from audit.log import AuditLog
from lake.delta import read_table
from lake.keys import KeyStore
from lake.layout import archive_rel, table_rel
from lake.storage import Store
from pipelines.settings import load_settings
from retention.apply import apply_retention
from tests.analytics.conftest import GovernedLake

DATASET = "meter_readings"
PURPOSE = "benchmarking"


def test_hot_and_archive_answer_as_the_hot_tier_did(
    governed_lake: GovernedLake, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(governed_lake.settings.data_dir, data)
    settings = load_settings(data_dir=data)
    store = Store.from_uri(settings.lake)
    lake = replace(governed_lake, settings=settings, store=store)
    tenant = lake.tenants[0]
    lake.book().grant("ret.ana", tenants=[tenant], purposes=[PURPOSE], actor="t")

    def answer() -> tuple[object, ...]:
        with connect(
            store, lake.registry, KeyStore(settings.keys),
            AuditLog(settings.data_dir / "audit" / "access", component="access", fail_closed=True),
            principal="ret.ana", purpose=PURPOSE,
        ) as session:  # fmt: skip
            rows = session.sql(f"SELECT * FROM {DATASET}")
            key = [c for c in ("device_id", "seq", "ts") if c in rows.column_names]
            return rows.column_names, rows.sort_by([(k, "ascending") for k in key]).to_pylist()

    hot = table_rel(tenant, DATASET)
    ts = read_table(store, hot, columns=["ts"])["ts"]
    first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
    retention = lake.registry.get(DATASET).retention
    now = first + (last - first) / 2 + timedelta(days=retention.hot_days)
    columns, before = answer()
    report = apply_retention(store, lake.registry, now, apply=True)
    moved = sum(t.rows_archived for t in report.tables if t.table == hot)
    assert moved > 0
    assert read_table(store, archive_rel(tenant, DATASET)).num_rows == moved
    columns_after, after = answer()
    assert columns_after == columns
    assert len(after) == len(before)
    assert after == before  # the same rows, shaped the same way (archived ones included)
    plan = lake.registry.get(DATASET)
    hidden = [f.name for f in plan.fields if f.name not in columns and f.name in plan.field_names]
    assert hidden  # the purpose does not see every field: they stay unseen in archived rows
