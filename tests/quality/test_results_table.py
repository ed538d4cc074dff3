"""Gate results into the real quality_results Delta tables; decisions; the report command."""

from __future__ import annotations

import polars as pl
from typer.testing import CliRunner

from contracts import load_registry
from lake.delta import open_table
from lake.layout import table_rel
from tests.quality.conftest import Faulty
from transforms.quality import GateBatch, run_gate
from transforms.quality_results import (
    QUALITY_DATASET,
    held_batches,
    read_results,
    record_decision,
    write_results,
)


def _results(faulty: Faulty, batch_no: int) -> list:  # type: ignore[type-arg]
    day = faulty.day
    out = []
    for tenant, dataset in day.tables():
        out.append(
            run_gate(
                load_registry().get(dataset),
                day.frame(tenant, dataset),
                day.devices,
                GateBatch("qa", batch_no, now=day.end_of_day),
                tenant=tenant,
                branches=day.branches,
            )
        )
    return out


def test_results_land_once_and_a_release_is_recorded(faulty_day: Faulty) -> None:
    day, store = faulty_day.day, faulty_day.day.store
    results = _results(faulty_day, 7)
    committed = write_results(store, results)
    tenants = {r.tenant for r in results}
    assert sorted(set(committed)) == sorted(table_rel(t, QUALITY_DATASET) for t in tenants)
    rows = read_results(store)
    mine = rows.filter(pl.col("batch_id") == "qa:7")
    assert mine.height == sum(len(r.results) for r in results)
    assert mine["result_id"].n_unique() == mine.height
    # a replayed batch adds nothing
    zero_tenant = day.tenant_of(faulty_day.zero_branch)
    rel = table_rel(zero_tenant, QUALITY_DATASET)
    version = open_table(store, rel).version()
    assert write_results(store, results) == []
    assert open_table(store, rel).version() == version
    failed = mine.filter(pl.col("rule") == "zero_power_while_open")
    failed = failed.filter(pl.col("client_id") == zero_tenant)
    assert failed["success"].to_list() == [False]
    assert failed["severity"].to_list() == ["error"]
    assert failed["held"].to_list() == [True]
    # the held batch is listed until someone decides
    held = held_batches(store).filter(pl.col("batch_id") == "qa:7")
    assert held.select("client_id", "dataset").rows() == [(zero_tenant, "meter_readings")]
    assert held["failed_rules"].to_list() == [["zero_power_while_open"]]
    ref = load_registry().get("meter_readings").ref
    assert record_decision(
        store,
        tenant=zero_tenant,
        dataset="meter_readings",
        batch_id="qa:7",
        decision="release",
        decided_by="ops-anita",
        reason="CT fault confirmed at one branch; rows kept, flagged in the report",
        contract_ref=ref,
    )
    assert not record_decision(
        store,
        tenant=zero_tenant,
        dataset="meter_readings",
        batch_id="qa:7",
        decision="discard",
        decided_by="ops-ravi",
        reason="second thoughts",
        contract_ref=ref,
    )
    assert held_batches(store).filter(pl.col("batch_id") == "qa:7").height == 0
    decisions = read_results(store, tenant=zero_tenant).filter(pl.col("record_kind") == "decision")
    assert decisions.select("decision", "decided_by").rows() == [("release", "ops-anita")]


def test_quality_report_command(faulty_day: Faulty) -> None:
    from cli.app import app
    from lake.errors import LakeError

    day = faulty_day.day
    write_results(day.store, _results(faulty_day, 8))
    runner = CliRunner()
    out = runner.invoke(
        app,
        ["quality", "report", "--data-dir", str(day.settings.data_dir), "--batches", "1"],
        env={"COLUMNS": "300"},
    )
    assert out.exit_code == 0, out.output
    assert "qa:8" in out.output
    assert "zero_power_while_open" in out.output
    assert "HELD" in out.output
    bad = runner.invoke(
        app, ["quality", "report", "--data-dir", str(day.settings.data_dir), "--tenant", "NO!"]
    )
    assert bad.exit_code == LakeError.exit_code  # the root's one catch of EnergylakeError
    assert "error:" in bad.output
