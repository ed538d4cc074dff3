"""Every reader agrees on every table; the whole pipeline also runs against S3 (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from analytics.queries import lake_tables
from lake.delta import dataset as lake_dataset
from lake.layout import table_rel
from lake.storage import Store
from pipelines.audit import AUDITED_REASONS
from pipelines.compaction import compact_all
from pipelines.process import process_once
from pipelines.settings import load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing
from tests.pipeline.conftest import FAULTS, Processed, land

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
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
    sql = f"SELECT count(*), sum({column}) FROM delta_scan('{url}')"
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


@pytest.mark.slow
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
    # At rest: every object written (reference tables, data files, Delta logs, state,
    # the raw archive, audit markers) asked for server-side encryption, SSE-S3 by default.
    assert _encryption_of_every_object(s3_store) == {("AES256", None)}


def _encryption_of_every_object(store: Store) -> set[tuple[str | None, str | None]]:
    """The (ServerSideEncryption, SSEKMSKeyId) pairs S3 reports over every object."""
    client, bucket = store.boto3_client(), store.bucket
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]
    assert len(keys) > 50, keys
    found: dict[tuple[str | None, str | None], list[str]] = {}
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        kind = (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
        found.setdefault(kind, []).append(key)
    print({kind: names[:5] for kind, names in found.items()})  # shown when an assert fails
    return set(found)


@pytest.mark.slow
def test_kms_encryption_reaches_every_writer(
    s3_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Configured once (here through the environment, as an operator would), the KMS key
    # must reach every writer: the reference load (a command), the batch's Beam workers,
    # the commits, the raw archive and compaction. A writer that made its own Store with
    # the defaults would show up as AES256; one that asked for nothing as (None, None).
    monkeypatch.setenv("ENERGYLAKE_S3_SSE", "aws:kms")
    monkeypatch.setenv("ENERGYLAKE_S3_SSE_KMS_KEY_ID", "alias/energylake-test")
    settings = load_settings(data_dir=tmp_path, lake_uri=s3_store.uri)
    config = SimConfig(clients=1, branches=1, days=1, seed=5, faults=FAULTS)
    result = simulate_to_landing(config, settings.sim_dir, settings.landing)
    loaded = subprocess.run(
        [ENERGYLAKE, "reference", "load", str(result.reference_dir),
         "--data-dir", str(tmp_path), "--lake-uri", s3_store.uri],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert process_once(settings) is not None
    assert compact_all(settings, min_files=1)
    assert _encryption_of_every_object(s3_store) == {("aws:kms", "alias/energylake-test")}
