"""The gate inside the batch: a firmware fault on one branch's meters holds those meters'
rows out of the lake while every other device of the same table publishes in the same
batch; results and lineage record it, and a release publishes the held rows exactly once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from analytics.queries import read_frame
from cli.app import app
from lake.delta import open_table
from lake.layout import HELD_FOLDER, table_rel
from lake.storage import Store
from pipelines.batch_hooks import wait_for_data_docs
from pipelines.process import process_once
from pipelines.release import release_batch
from tests.pipeline.conftest import CONFIG
from tests.quality.conftest import Day, firmware_fault, process_day
from transforms.quality_results import held_batches, read_results


@dataclass
class Gated:
    day: Day
    zero_branch: str
    tenant: str
    rel: str


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, clean_day: Day) -> Gated:
    by_tenant = clean_day.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [(str(t[0]), str(part["branch_id"][0])) for t, part in by_tenant]
    (tenant, zero_branch), (_, silent_branch) = firsts[0], firsts[1]
    day = process_day(
        tmp_path_factory.mktemp("gated"),
        CONFIG,
        firmware_fault(zero_branch, silent_branch),
        gate=True,
    )
    return Gated(day, zero_branch, tenant, table_rel(tenant, "meter_readings"))


def _done(day: Day) -> dict[str, object]:
    path = Path(day.settings.lake) / "_state/main/batches/0000000001/done.json"
    return dict(json.loads(path.read_text()))


def _plan(day: Day) -> dict[str, Any]:
    path = Path(day.settings.lake) / "_state/main/batches/0000000001/plan.json"
    return dict(json.loads(path.read_text()))


@pytest.mark.slow
def test_a_blocking_failure_holds_only_the_devices_it_names(gated: Gated) -> None:
    day = gated.day
    done = _done(day)
    assert done["held"] == {gated.rel: ["zero_power_while_open"]}
    zero_meters = set(
        day.devices.filter(
            (pl.col("branch_id") == gated.zero_branch) & (pl.col("kind") == "meter")
        )["device_id"].to_list()
    )
    gate = _plan(day)["gate"][gated.rel]
    assert set(gate["held_devices"]) == zero_meters
    # Every other meter of the tenant published in this batch; none of the faulty ones.
    published = read_frame(day.store, gated.tenant, "meter_readings")
    assert published.height > 0
    assert set(published["device_id"].unique().to_list()).isdisjoint(zero_meters)
    tenant_meters = set(
        day.devices.filter((pl.col("client_id") == gated.tenant) & (pl.col("kind") == "meter"))[
            "device_id"
        ].to_list()
    )
    assert set(published["device_id"].unique().to_list()) == tenant_meters - zero_meters
    # The held rows wait in files of their own, every one of a named device.
    entry = _plan(day)["tables"][gated.rel]
    assert entry["held_files"]
    table = open_table(day.store, gated.rel)
    assert table.transaction_version("main") == 1
    # Conservation: written = published + held, per table.
    held_rows = sum(f["num_records"] for f in entry["held_files"])
    assert done["rows"][gated.rel] == published.height
    assert sum(f["num_records"] for f in entry["files"]) == published.height
    stats = _plan(day)["stats"]
    written = sum(
        c for k, t, d, *_, c in stats if (k, t, d) == ("written", gated.tenant, "meter_readings")
    )
    held = sum(
        c for k, t, d, *_, c in stats if (k, t, d) == ("held", gated.tenant, "meter_readings")
    )
    assert (written, held) == (published.height + held_rows, held_rows)
    for tenant in {str(t) for t in day.branches["client_id"]}:
        for dataset in ("dg_readings", "solar_readings"):
            assert read_frame(day.store, tenant, dataset).height > 0
    # The silent branch fails completeness: a warning, recorded, not held.
    warned = done["warnings"]
    assert isinstance(warned, dict)
    assert any("completeness_per_device" in rules for rules in warned.values())


def test_results_lineage_and_data_docs_record_the_hold(gated: Gated) -> None:
    store = gated.day.store
    held = held_batches(store)
    assert held.select("batch_id", "client_id", "dataset").rows() == [
        ("main:1", gated.tenant, "meter_readings")
    ]
    results = read_results(store, tenant=gated.tenant, dataset="meter_readings")
    failed = results.filter(~pl.col("success") & (pl.col("severity") == "error"))
    assert failed["rule"].to_list() == ["zero_power_while_open"]
    assert results["held"].all()
    events = [
        json.loads(line)
        for f in sorted((gated.day.settings.data_dir / "lineage" / "events").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    complete = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "process.main"
    ]
    assert complete[-1]["run"]["facets"]["energylake_run"]["quality"] == "held"
    inputs = {i["name"]: i for i in complete[-1]["inputs"] if "inputFacets" in i}
    outputs = {o["name"]: o for o in complete[-1]["outputs"]}
    held_out = next(o for name, o in outputs.items() if name.endswith(gated.rel))
    # The table's output is what it published in this batch: the held rows are not in it.
    published = read_frame(gated.day.store, gated.tenant, "meter_readings").height
    assert held_out["outputFacets"]["outputStatistics"]["rowCount"] == published
    assertions = [
        a
        for i in inputs.values()
        for a in i["inputFacets"].get("dataQualityAssertions", {}).get("assertions", [])
    ]
    assert {"assertion": "zero_power_while_open", "success": False} in [
        {"assertion": a["assertion"], "success": a["success"]} for a in assertions
    ]
    wait_for_data_docs(60)  # rendered on a thread of its own
    assert (gated.day.settings.data_dir / "quality" / "index.html").is_file()


def test_release_publishes_the_held_rows_once(gated: Gated) -> None:
    day, store = gated.day, gated.day.store
    plan = _plan(day)
    held_files = plan["tables"][gated.rel]["held_files"]
    held_rows = sum(f["num_records"] for f in held_files)
    assert held_rows > 0
    before = read_frame(store, gated.tenant, "meter_readings").height
    # A full vacuum at zero retention deletes every file the log does not list, except in
    # folders whose name starts with "_": the held rows wait there until a decision.
    assert all(f["path"].startswith(f"{HELD_FOLDER}/") for f in held_files)
    open_table(store, gated.rel).vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True
    )
    assert all((Path(day.settings.lake) / gated.rel / f["path"]).is_file() for f in held_files)
    data_dir = str(day.settings.data_dir)
    args = ["quality", "release", "1", "--by", "ops@example", "--reason", "CT fault fixed"]
    dry = CliRunner().invoke(app, [*args, "--data-dir", data_dir])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    # The release names whose rows it publishes (the console may cut the column).
    (table,) = release_batch(day.settings, "1", decided_by="x", reason="y").tables
    assert table.devices == plan["gate"][gated.rel]["held_devices"]
    assert read_frame(store, gated.tenant, "meter_readings").height == before
    done = CliRunner().invoke(app, [*args, "--apply", "--data-dir", data_dir])
    assert done.exit_code == 0, done.output
    rows = read_frame(store, gated.tenant, "meter_readings")
    assert rows.height == before + held_rows
    assert rows.select("device_id", "seq", "ts").is_unique().all()
    version = open_table(store, gated.rel).version()
    # A second release (and a replayed batch) publishes nothing more.
    again = CliRunner().invoke(app, [*args, "--apply", "--data-dir", data_dir])
    assert again.exit_code == 0, again.output
    assert "already" in again.output
    assert process_once(day.settings) is None
    assert open_table(store, gated.rel).version() == version
    assert read_frame(store, gated.tenant, "meter_readings").height == before + held_rows
    assert held_batches(store).height == 0
    decision = read_results(store, tenant=gated.tenant, dataset="meter_readings").filter(
        pl.col("record_kind") == "decision"
    )
    assert decision.height == 1
    events = [
        json.loads(line)
        for f in sorted((day.settings.data_dir / "lineage" / "events").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    released = [e for e in events if e["job"]["name"] == "quality.release"]
    assert [e["eventType"] for e in released] == ["START", "COMPLETE"]
    assert released[-1]["outputs"][0]["name"].endswith(gated.rel)


def test_release_refuses_what_is_not_held(gated: Gated) -> None:
    data_dir = str(gated.day.settings.data_dir)
    base = ["quality", "release", "--by", "x", "--reason", "y", "--data-dir", data_dir]
    for batch, needle in (("99", "not finished"), ("other:1", "belongs to"), ("x", "expected")):
        result = CliRunner().invoke(app, [*base[:2], batch, *base[2:]])
        assert result.exit_code == 2
        assert needle in result.output
    _ = Store
