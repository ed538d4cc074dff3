"""A simulated day through the real pipeline: every event validates against the official
OpenLineage schemas (and ours), and the three queries answer from the emitted events."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.app import app
from lake.delta import open_table
from lake.layout import table_rel, tenants
from lake.storage import Store
from lineage import LineageEmitter, TableDataset, batch_run_id, jobs
from lineage.runs import uri_of
from lineage.store import LineageStore
from pipelines.compaction import compact_all
from pipelines.process import BatchReport, follow, process_once
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing
from tests.lineage.conftest import EventValidator, read_events
from tests.pipeline.conftest import FAULTS

CONFIG = SimConfig(clients=1, branches=3, days=1, seed=11, faults=FAULTS)


@dataclass
class Day:
    settings: Settings
    store: Store
    reports: list[BatchReport]
    events: list[dict[str, Any]]
    lineage: LineageStore
    meter: str
    first_segments: list[str]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    tmp = tmp_path_factory.mktemp("lineage-day")
    settings = load_settings(data_dir=tmp)
    result = simulate_to_landing(CONFIG, settings.sim_dir, settings.landing)
    loaded = CliRunner().invoke(
        app, ["reference", "load", str(result.reference_dir), "--data-dir", str(tmp)]
    )
    assert loaded.exit_code == 0, loaded.output
    closed = settings.landing / "closed"
    held = tmp / "held"
    held.mkdir()
    segments = sorted(closed.glob("*.seg"))
    for seg in segments[len(segments) // 2 :]:
        shutil.move(seg, held / seg.name)
    first = sorted(p.name for p in closed.glob("*.seg"))
    reports: list[BatchReport] = []
    assert follow(settings, on_batch=reports.append, max_batches=1) == 1  # session + batch 1
    for seg in held.glob("*.seg"):
        shutil.move(seg, closed / seg.name)
    second = process_once(settings)  # batch 2, no session
    assert second is not None
    reports.append(second)
    assert compact_all(settings, min_files=2)  # a compaction run
    store = Store.from_uri(settings.lake)
    tenant = next(t for t in tenants(store) if not t.startswith("_"))
    meter = table_rel(tenant, "meter_readings")
    # a derived job (an extract) reading the meter table: what downstream must find
    emitter = LineageEmitter.from_settings(settings)
    lake = uri_of(settings.lake)
    extract = emitter.run(jobs.generic("extract.brsr", "EXTRACT"))
    extract.start([TableDataset(lake, meter, int(open_table(store, meter).version()))])
    extract.complete([TableDataset(lake, "extracts/brsr/fy2026", 1, rows=3)])
    lineage_dir = tmp / "lineage"
    return Day(
        settings, store, reports, read_events(lineage_dir), LineageStore(lineage_dir), meter, first
    )


@pytest.mark.slow
def test_every_event_validates_against_the_official_schemas(
    day: Day, validator: EventValidator
) -> None:
    assert len(day.events) >= 10
    for event in day.events:
        validator.validate(event)
    expected = {
        "schema", "version", "storage", "dataSource", "outputStatistics", "jobType",
        "processing_engine", "parent", "energylake_contract", "energylake_run",
    }  # fmt: skip
    assert expected <= validator.checked, expected - validator.checked
    jobs_seen = {(e["job"]["name"], e["eventType"]) for e in day.events}
    for job in ("process.main", "process.main.session", "lake.compact", "reference.load"):
        assert (job, "START") in jobs_seen
        assert (job, "COMPLETE") in jobs_seen


def test_batch_runs_have_deterministic_ids_parent_and_committed_versions(day: Day) -> None:
    batches = [e for e in day.events if e["job"]["name"] == "process.main"]
    session = next(e for e in day.events if e["job"]["name"] == "process.main.session")
    for report in day.reports:
        run_id = batch_run_id("energylake", "main", report.batch_no)
        mine = [e for e in batches if e["run"]["runId"] == run_id]
        assert [e["eventType"] for e in mine] == ["START", "COMPLETE"]
        complete = mine[-1]
        parent = complete["run"]["facets"].get("parent")
        if report.batch_no == 1:  # the follow session's batch
            assert parent["run"]["runId"] == session["run"]["runId"]
            assert parent["job"]["name"] == "process.main.session"
        else:
            assert parent is None
        outputs = {o["name"]: o for o in complete["outputs"]}
        for rel, rows in report.rows.items():
            out = outputs[rel]
            assert out["outputFacets"]["outputStatistics"]["rowCount"] == rows
            history = open_table(day.store, rel).history(50)
            version = next(
                h["version"]
                for h in history
                if h.get("energylake.batch") == f"main:{report.batch_no}"
            )
            assert out["facets"]["version"]["datasetVersion"] == str(version)
            contract = out["facets"]["energylake_contract"]
            assert contract["contractId"]
            assert contract["purposes"]
            assert sum(p["rows"] for p in contract["partitions"]) == rows
        segments = [i["name"] for i in complete["inputs"] if i["namespace"].endswith("landing")]
        assert sorted(segments) == sorted(report.segments)


def test_replay_of_a_done_batch_emits_nothing_new(day: Day) -> None:
    before = len(read_events(day.settings.data_dir / "lineage"))
    assert process_once(day.settings) is None
    assert len(read_events(day.settings.data_dir / "lineage")) == before


def test_runs_lists_recent_runs_with_state_and_outputs(day: Day) -> None:
    runs = day.lineage.runs(limit=50)
    by_job = {r["job"]: r for r in runs}
    assert {"process.main", "process.main.session", "lake.compact", "reference.load"} <= set(by_job)
    assert all(r["state"] == "COMPLETE" for r in runs)
    batch2 = next(r for r in runs if r["run_id"] == batch_run_id("energylake", "main", 2))
    assert any(o.startswith(day.meter + "@") for o in batch2["outputs"])
    assert runs == sorted(runs, key=lambda r: r["last_seen"], reverse=True)
    assert len(day.lineage.runs(limit=2)) == 2


def test_trace_upstream_to_segments_and_downstream_to_the_extract(day: Day) -> None:
    first = next(
        h["version"]
        for h in open_table(day.store, day.meter).history(50)
        if h.get("energylake.batch") == "main:1"
    )
    one = day.lineage.trace(day.meter, first)
    assert {p["run_id"] for p in one.producers} == {batch_run_id("energylake", "main", 1)}
    assert one.segments == day.first_segments
    everything = day.lineage.trace(day.meter)
    assert len(everything.segments) == sum(len(r.segments) for r in day.reports)
    assert {d["dataset"] for d in everything.downstream} == {"extracts/brsr/fy2026"}
    extract = day.lineage.trace("extracts/brsr/fy2026")
    assert {t["dataset"] for t in extract.upstream_tables} == {day.meter}
    assert len(extract.segments) == len(everything.segments)


def test_where_matches_the_rows_in_the_lake(day: Day) -> None:
    frame = pl.from_arrow(open_table(day.store, day.meter).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    counts = frame.group_by("branch_id", pl.col("ts").dt.convert_time_zone("UTC").dt.date()).len()
    checked = 0
    for branch, when, n in counts.iter_rows():
        found = day.lineage.where(branch, when.isoformat())
        assert sum(r["rows"] for r in found if r["dataset"] == day.meter) == n
        checked += 1
    assert checked >= 3
    assert day.lineage.where("no-such-branch", "2026-11-16") == []
    _ = UTC


def test_where_matches_the_quarantined_records_by_the_day_they_were_received(day: Day) -> None:
    """A quarantined record's day is when it was received (it may have no event time)."""
    tenant = day.meter.split("/")[1]
    rel = table_rel(tenant, "quarantine")
    frame = pl.from_arrow(open_table(day.store, rel).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    counts = frame.group_by(
        pl.col("branch_id").fill_null(""),
        pl.col("received_at").dt.convert_time_zone("UTC").dt.date(),
    ).len()
    assert counts.height >= 2
    for branch, when, n in counts.iter_rows():
        found = day.lineage.where(branch, when.isoformat())
        assert sum(r["rows"] for r in found if r["dataset"] == rel) == n, (branch, when)


def test_cli_lineage_commands(day: Day) -> None:
    runner = CliRunner(env={"COLUMNS": "300"})  # rich would fold the tables to 80 columns
    data = ["--data-dir", str(day.settings.data_dir)]
    runs = runner.invoke(app, ["lineage", "runs", *data])
    assert runs.exit_code == 0, runs.output
    assert "process.main" in runs.output
    trace = runner.invoke(app, ["lineage", "trace", f"{day.meter}@1", *data])
    assert trace.exit_code == 0, trace.output
    assert "segment" in trace.output
    bad = runner.invoke(app, ["lineage", "trace", f"{day.meter}@x", *data])
    assert bad.exit_code == 2
    assert "whole number" in bad.output
    where = runner.invoke(app, ["lineage", "where", "--branch", "b", "--date", "2026-02-30", *data])
    assert where.exit_code == 2
    assert "YYYY-MM-DD" in where.output
