"""Every storage area has an owner and a retention, and the file areas are expired
(issue 15, point 2). The demo's data folder is walked in tests/cli/test_cli.py and the
erasure lake's in tests/retention/test_erasure.py: every file there belongs to an area."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app
from contracts import load_registry
from lake.storage import Store
from pipelines.settings import load_settings
from retention.areas import area_of, declared_areas, expire_areas, uncovered

DAY_S = 86400


def _touch(path: Path, data: bytes = b"x", age_days: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age_days * DAY_S
    os.utime(path, (when, when))
    return path


def test_every_area_has_an_owner_a_retention_and_an_enforcer(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    registry = load_registry()
    areas = declared_areas(settings, registry)
    assert all(a.owner and a.retention and a.source and a.enforced_by for a in areas)
    names = {a.name for a in areas}
    for dataset in registry.datasets:
        assert f"table {dataset}" in names
    for must in ("raw segment archive", "Data Docs", "lineage events", "audit log", "extracts",
                 "held batches", "keys", "logs", "pipeline state", "access registers",
                 "landing log", "erasure records"):  # fmt: skip
        assert must in names
    held = area_of(areas, "lake", "tenants/kaveri/meter_readings/_held/b1/part.parquet")
    assert held is not None
    assert held.name == "held batches"
    archive = area_of(areas, "lake", "archive/kaveri/work_orders/basis_month=2025-01/p.parquet")
    assert archive is not None
    assert archive.name == "table work_orders"


def test_a_file_no_area_covers_is_named(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    store = Store.from_uri(tmp_path / "lake")
    _touch(tmp_path / "logs" / "run.log")
    _touch(tmp_path / "lake" / "tenants" / "kaveri" / "contacts" / "part-0.parquet")
    assert uncovered(settings, load_registry(), store) == []
    _touch(tmp_path / "scratch" / "notes.txt")
    _touch(tmp_path / "lake" / "tenants" / "kaveri" / "invoices" / "part-0.parquet")
    assert uncovered(settings, load_registry(), store) == [
        "scratch/notes.txt",
        "lake:tenants/kaveri/invoices/part-0.parquet",
    ]
    checked = CliRunner().invoke(
        app, ["retention", "areas", "--check", "--data-dir", str(tmp_path)]
    )
    assert checked.exit_code == 1
    assert "not in any storage area: scratch/notes.txt" in checked.output
    listed = CliRunner().invoke(app, ["retention", "areas", "--json", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert any(row["area"] == "raw segment archive" for row in json.loads(listed.output))


def test_file_areas_past_their_retention_are_deleted_and_recent_ones_kept(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path)
    store = Store.from_uri(tmp_path / "lake")
    lake = tmp_path / "lake"
    old_raw = _touch(lake / "raw" / "2025" / "01" / "02" / "a.seg", b"old" * 10)
    new_raw = _touch(lake / "raw" / "2026" / "12" / "01" / "b.seg")
    old_events = _touch(tmp_path / "lineage" / "events" / "2023-01-01.jsonl")
    old_index = _touch(tmp_path / "lineage" / "index" / "io" / "2023-01-01.parquet")
    new_events = _touch(tmp_path / "lineage" / "events" / "2026-12-01.jsonl")
    old_docs = _touch(tmp_path / "quality" / "validations" / "x" / "r.json", age_days=500)
    site = _touch(tmp_path / "quality" / "index.html", age_days=500)  # rebuilt, not expired
    old_log = _touch(tmp_path / "logs" / "run.log.1", age_days=40)
    live_log = _touch(tmp_path / "logs" / "run.log")
    old_extract = _touch(tmp_path / "extracts" / "wo.parquet", age_days=31)
    elsewhere = _touch(tmp_path.parent / f"{tmp_path.name}-out" / "e.parquet", age_days=31)
    old_receipt = _touch(tmp_path / "erasure" / "receipts" / "r.json", age_days=1100)
    gone_key = _touch(tmp_path / "keys" / "oldco.key", age_days=31)
    live_key = _touch(tmp_path / "keys" / "kaveri.key", age_days=400)
    _touch(lake / "tenants" / "kaveri" / "contacts" / "_delta_log" / "0.json")
    revisions = lake / "_access" / "grants"
    superseded = _touch(revisions / "00000001.json", age_days=800)
    latest = _touch(revisions / "00000002.json", age_days=800)
    now = datetime(2026, 12, 5, tzinfo=UTC)

    dry = expire_areas(settings, store, now, apply=False, lineage_files=[elsewhere])
    assert dry.deleted == {
        "raw segment archive": 1,
        "lineage events": 2,
        "Data Docs": 1,
        "logs": 1,
        "extracts": 2,
        "erasure records": 1,
        "keys": 1,
        "access registers": 1,
    }
    assert old_raw.exists()  # a dry run deletes nothing

    done = expire_areas(settings, store, now, apply=True, lineage_files=[elsewhere])
    assert done.deleted == dry.deleted
    assert done.bytes["raw segment archive"] == 30
    for path in (old_raw, old_events, old_index, old_docs, old_log, old_extract, elsewhere,
                 old_receipt, gone_key, superseded):  # fmt: skip
        assert not path.exists(), path
    for path in (new_raw, new_events, site, live_log, live_key, latest):
        assert path.exists(), path
