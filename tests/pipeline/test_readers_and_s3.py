"""Every reader agrees on every table; the whole pipeline also runs against S3 (moto)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lake.delta import dataset as lake_dataset
from lake.layout import table_rel
from lake.storage import Store
from pipelines.audit import AUDITED_REASONS
from pipelines.lakeops import lake_tables
from pipelines.process import process_once
from simulator.config import SimConfig
from tests.pipeline.conftest import FAULTS, Processed, land

_SUM = {
    "meter_readings": "energy_import_kwh",
    "dg_readings": "run_hours_h",
    "solar_readings": "energy_generated_kwh",
    "quarantine": "payload_size_bytes",
}


def _three_readers(store: Store, con: Any, tenant: str, dataset: str) -> list[tuple[int, float]]:
    rel = table_rel(tenant, dataset)
    column = _SUM[dataset]
    url = store.url(rel)
    sql = f"SELECT count(*), sum({column}) FROM delta_scan('{url}')"  # noqa: S608 (our names)
    duck = con.execute(sql).fetchone()
    scanned = (
        pl.scan_delta(url, storage_options=store.storage_options() or None)
        .select(pl.len(), pl.col(column).sum())
        .collect()
        .row(0)
    )
    arrow = lake_dataset(store, rel).to_table(columns=[column])
    pa_sum = float(arrow.column(column).to_numpy(zero_copy_only=False).sum())
    return [
        (int(duck[0]), float(duck[1] or 0.0)),
        (int(scanned[0]), float(scanned[1] or 0.0)),
        (arrow.num_rows, pa_sum),
    ]


def _assert_readers_agree(store: Store, con: Any) -> int:
    tables = lake_tables(store)
    assert tables
    for tenant, dataset in tables:
        (n1, s1), (n2, s2), (n3, s3) = _three_readers(store, con, tenant, dataset)
        assert n1 == n2 == n3 > 0, (tenant, dataset)
        assert s1 == pytest.approx(s2, rel=1e-9)
        assert s2 == pytest.approx(s3, rel=1e-9)
    return len(tables)


def test_duckdb_polars_and_pyarrow_agree(
    processed: Processed, duckdb_for: Callable[[Store], Any]
) -> None:
    con = duckdb_for(processed.store)
    assert _assert_readers_agree(processed.store, con) >= 7


def test_whole_pipeline_on_s3(
    s3_store: Store, tmp_path: Path, duckdb_for: Callable[[Store], Any]
) -> None:
    config = SimConfig(clients=1, branches=2, days=1, seed=3, faults=FAULTS)
    settings, manifest, segments = land(tmp_path, config, lake_uri=s3_store.uri)
    assert settings.lake.startswith("s3://")
    report = process_once(settings)
    assert report is not None
    assert report.committed
    expected = manifest["expected"]
    rows: Counter[str] = Counter()
    for rel, n in report.rows.items():
        rows[rel.rsplit("/", 1)[-1]] += n
    assert dict(rows) == expected["lake_rows"]
    assert report.quarantined == expected["quarantine"]
    assert report.duplicates == expected["duplicates"]
    # The security quarantines were audited, read back from S3 (one record each, with the
    # branch of the file it was quarantined in).
    security = sum(n for r, n in report.quarantined.items() if r in AUDITED_REASONS)
    assert security > 0
    records = [
        json.loads(line)
        for f in sorted((settings.data_dir / "audit" / "pipeline").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(records) == security
    assert all(r["branch_id"] for r in records if r["event"] == "branch_mismatch")
    # The segments moved to the raw archive on S3, none are left on disk.
    archived = s3_store.list("raw")
    assert sorted(Path(a).name for a in archived) == sorted(p.name for p in segments)
    assert not list((settings.landing / "closed").glob("*.seg"))
    # Readers over S3 agree; a second run finds nothing.
    _assert_readers_agree(s3_store, duckdb_for(s3_store))
    assert process_once(settings) is None
