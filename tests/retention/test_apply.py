"""``energylake retention apply``: rows past their hot days move to the archive tier once
(never lost, never doubled, also across a crash between the two commits), rows past their
archive days are deleted and their bytes purged, a dry run changes nothing, and each pass
is audited and in lineage without a row's value."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from contracts import load_registry
from lake.delta import latest_version, open_table, read_table
from lake.layout import archive_rel, table_rel
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from retention.apply import apply_retention
from retention.plan import cutoffs, plan_retention
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
DATASET = "meter_readings"


def build_lake(folder: Path) -> Settings:
    settings = load_settings(data_dir=folder)
    result = simulate_to_landing(
        SimConfig(clients=1, branches=2, days=2, seed=3), settings.sim_dir, settings.landing
    )
    load_reference(Store.from_uri(settings.lake), result.reference_dir, load_registry())
    while process_once(settings) is not None:
        pass
    return settings


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    return build_lake(tmp_path)


def tenant_of(store: Store) -> str:
    (tenant,) = [t for t in store.children("tenants") if not t.startswith("_")]
    return tenant


def mid_now(store: Store, rel: str, dataset: str = DATASET) -> datetime:
    """A moment at which the archive cut-off falls in the middle of the table's data."""
    retention = load_registry().get(dataset).retention
    ts = read_table(store, rel, columns=[retention.basis])[retention.basis]
    first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
    return first + (last - first) / 2 + timedelta(days=retention.hot_days)


def keys_of(store: Store, tenant: str, dataset: str = DATASET) -> list[tuple[object, ...]]:
    """Every primary key in hot and archive (duplicates kept)."""
    key = load_registry().get(dataset).primary_key
    out: list[tuple[object, ...]] = []
    for rel in (table_rel(tenant, dataset), archive_rel(tenant, dataset)):
        if Store.exists(store, f"{rel}/_delta_log/00000000000000000000.json"):
            rows = read_table(store, rel, columns=key)
            out += list(zip(*(rows.column(k).to_pylist() for k in key), strict=True))
    return out


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [ENERGYLAKE, "retention", *args, "--data-dir", str(settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_apply_moves_the_rows_once_and_the_dry_run_changes_nothing(lake: Settings) -> None:
    store = Store.from_uri(lake.lake)
    tenant = tenant_of(store)
    hot = table_rel(tenant, DATASET)
    now = mid_now(store, hot)
    cut = cutoffs(load_registry().get(DATASET).retention, now)
    before = keys_of(store, tenant)
    version = latest_version(store, hot)

    dry = json.loads(cli(lake, "apply", "--at", now.isoformat(), "--json"))
    assert latest_version(store, hot) == version
    assert not Store.exists(store, f"{archive_rel(tenant, DATASET)}/_delta_log")
    planned = plan_retention(store, load_registry(), now).totals()[DATASET]
    dry_rows = {t["dataset"]: 0 for t in dry["tables"]}
    for t in dry["tables"]:
        dry_rows[t["dataset"]] += t["rows_archived"]
    assert dry_rows[DATASET] == planned["archive_rows"] > 0

    out = json.loads(cli(lake, "apply", "--apply", "--at", now.isoformat(), "--json"))
    (moved,) = [t for t in out["tables"] if t["table"] == hot]
    assert moved["rows_archived"] == planned["archive_rows"]
    assert moved["files_written"] > 0
    assert moved["bytes_written"] > 0
    assert moved["files_removed"] > 0
    assert moved["bytes_removed"] > 0
    after = keys_of(store, tenant)
    assert sorted(after, key=repr) == sorted(before, key=repr)  # nothing lost or doubled
    assert len(set(after)) == len(after)
    hot_ts = read_table(store, hot, columns=["ts"])["ts"]
    arch = archive_rel(tenant, DATASET)
    arch_rows = read_table(store, arch)
    assert pc.min(hot_ts).as_py() >= cut.archive_before
    assert pc.max(arch_rows["ts"]).as_py() < cut.archive_before
    assert arch_rows.num_rows == planned["archive_rows"]
    # month partitions of the basis, branch_id a plain column; no personal statistics
    table = open_table(store, arch)
    assert list(table.metadata().partition_columns) == ["basis_month"]
    assert "branch_id" in arch_rows.column_names
    stats = table.metadata().configuration["delta.dataSkippingStatsColumns"].split(",")
    contract = load_registry().get(DATASET)
    personal = {f.name for f in contract.fields if f.classification in ("personal", "location")}
    assert "ts" in stats
    assert not personal & set(stats)
    # commit metadata and predicates: the basis column and a timestamp, never a row's value
    retention_commits = 0
    for rel in (hot, arch):
        for log in sorted(Path(store.url(rel), "_delta_log").glob("*.json")):
            for line in log.read_text().splitlines():
                info = json.loads(line).get("commitInfo")
                if not info or not str(info.get("energylake.operation", "")).startswith(
                    "retention"
                ):
                    continue
                retention_commits += 1
                predicate = (info.get("operationParameters") or {}).get("predicate")
                if predicate is not None:
                    assert re.fullmatch(
                        r"ts < arrow_cast\('[0-9T:.-]+', '[A-Za-z(), \"]+'\)", predicate
                    )
                assert not personal & set(info)
    assert retention_commits == 2  # the archive's and the hot table's
    # a second pass at the same moment has nothing to do
    again = json.loads(cli(lake, "apply", "--apply", "--at", now.isoformat(), "--json"))
    assert sum(t["rows_archived"] + t["rows_deleted"] for t in again["tables"]) == 0
    assert sorted(keys_of(store, tenant), key=repr) == sorted(before, key=repr)
    # audit records and the lineage run: counts and versions, never a row's value
    records = [
        json.loads(line)
        for path in sorted((lake.data_dir / "audit" / "retention").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    events = [r["event"] for r in records]
    assert events.count("RETENTION_DONE") == 2
    assert "RETENTION_TABLE" in events
    (rec,) = [r for r in records if r["event"] == "RETENTION_TABLE" and r["table"] == hot]
    assert rec["rows_archived"] == planned["archive_rows"]
    assert rec["archive_version"] == latest_version(store, arch)
    lineage = [
        json.loads(line)
        for p in sorted((lake.data_dir / "lineage").rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    runs = [e for e in lineage if e["job"]["name"] == "retention" and e["eventType"] == "COMPLETE"]
    assert runs
    names = {d["name"] for d in runs[0]["outputs"]}
    assert {hot, arch} <= names
    assert hot in {d["name"] for d in runs[0]["inputs"]}


def test_a_crash_between_archive_and_delete_is_finished_by_a_rerun(lake: Settings) -> None:
    """Killed right after the archive commit: a row is in both tables; a reader of the
    access layer's kind sees it once; the rerun deletes it from hot only."""
    store = Store.from_uri(lake.lake)
    tenant = tenant_of(store)
    hot = table_rel(tenant, DATASET)
    now = mid_now(store, hot)
    before = keys_of(store, tenant)
    proc = subprocess.run(
        [ENERGYLAKE, "retention", "apply", "--apply", "--at", now.isoformat(),
         "--data-dir", str(lake.data_dir)],
        env={**os.environ, "ENERGYLAKE_TEST_RETENTION_KILL_AT": f"archive_committed:{DATASET}"},
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert len(keys_of(store, tenant)) > len(before)  # in both tables, for now
    from retention.apply import pending_cutoff

    pending = pending_cutoff(store, hot, open_table(store, hot), DATASET)
    assert pending is not None
    hot_rows = read_table(store, hot, filter=pc.field("ts") >= pa.scalar(pending))
    seen = hot_rows.num_rows + read_table(store, archive_rel(tenant, DATASET)).num_rows
    assert seen == len(before)  # the reader's rule: nothing doubled
    out = json.loads(cli(lake, "apply", "--apply", "--at", now.isoformat(), "--json"))
    (table,) = [t for t in out["tables"] if t["table"] == hot]
    assert table["redone"] is True
    after = keys_of(store, tenant)
    assert sorted(after, key=repr) == sorted(before, key=repr)


def test_rows_past_the_archive_period_are_deleted_and_their_bytes_purged(lake: Settings) -> None:
    store = Store.from_uri(lake.lake)
    tenant = tenant_of(store)
    hot = table_rel(tenant, DATASET)
    now = mid_now(store, hot)
    cli(lake, "apply", "--apply", "--at", now.isoformat())
    arch = archive_rel(tenant, DATASET)
    archived = read_table(store, arch).num_rows
    assert archived > 0
    retention = load_registry().get(DATASET).retention
    later = now + timedelta(days=retention.archive_days)  # the archived half is now expired
    out = json.loads(cli(lake, "apply", "--apply", "--at", later.isoformat(), "--json"))
    (table,) = [t for t in out["tables"] if t["table"] == hot]
    assert table["rows_deleted"] >= archived
    assert arch in table["purged"]
    assert (
        read_table(store, arch).num_rows == 0
        or pc.min(read_table(store, arch)["ts"]).as_py() >= cutoffs(retention, later).delete_before
    )
    # the bytes are gone: every Parquet file under the archive folder is one the table lists
    listed = {Path(u).name for u in open_table(store, arch).file_uris()}
    on_disk = {
        p.name for p in Path(store.url(arch)).rglob("*.parquet") if "_delta_log" not in p.parts
    }
    assert on_disk == listed
    # the archive stays readable by DuckDB (its Parquet files, as the table lists them)
    files = [u for u in open_table(store, arch).file_uris()]
    if files:
        count = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()
        assert count is not None
        assert count[0] == read_table(store, arch).num_rows


def test_contacts_without_archive_days_are_deleted_from_hot(lake: Settings) -> None:
    store = Store.from_uri(lake.lake)
    tenant = tenant_of(store)
    rel = table_rel(tenant, "contacts")
    if not Store.exists(store, f"{rel}/_delta_log/00000000000000000000.json"):
        pytest.fail("the simulated lake has no contacts table")
    rows = read_table(store, rel).num_rows
    retention = load_registry().get("contacts").retention
    now = datetime.now().astimezone() + timedelta(days=retention.hot_days + 3650)
    report = apply_retention(store, load_registry(), now, apply=True)
    (table,) = [t for t in report.tables if t.table == rel]
    assert table.rows_deleted == rows > 0
    assert table.archive_table is None
    assert read_table(store, rel).num_rows == 0
    assert rel in table.purged


def test_the_schedule_runs_passes_until_sigterm_and_exits_0(lake: Settings) -> None:
    """What `energylake run` starts: a pass after --first-delay-s, then every --every-s;
    SIGTERM lets a pass under way finish and exits 0."""
    store = Store.from_uri(lake.lake)
    hot = table_rel(tenant_of(store), DATASET)
    now = mid_now(store, hot)
    proc = subprocess.Popen(
        [ENERGYLAKE, "retention", "apply", "--apply", "--at", now.isoformat(),
         "--every-s", "0.2", "--first-delay-s", "0", "--data-dir", str(lake.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    folder = lake.data_dir / "audit" / "retention"

    def passes() -> int:
        return sum(
            line.count('"RETENTION_DONE"')
            for path in folder.rglob("*.jsonl")
            for line in path.read_text().splitlines()
        )

    deadline = time.monotonic() + 60
    while passes() < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert passes() >= 3
    assert read_table(store, archive_rel(tenant_of(store), DATASET)).num_rows > 0
