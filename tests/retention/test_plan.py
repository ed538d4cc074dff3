"""``retention.plan``: what each contract's retention says is due, counted exactly (checked
against a count of the raw table), settled by statistics where whole files are old
enough, and without changing the lake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from contracts import load_registry
from lake.delta import latest_version, read_table
from lake.layout import table_rel
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from retention.plan import cutoffs, plan_retention
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("retention"))
    result = simulate_to_landing(
        SimConfig(clients=1, branches=2, days=2, seed=3), settings.sim_dir, settings.landing
    )
    load_reference(Store.from_uri(settings.lake), result.reference_dir, load_registry())
    while process_once(settings) is not None:
        pass
    return settings


def _rel(settings: Settings, dataset: str) -> str:
    store = Store.from_uri(settings.lake)
    (tenant,) = [t for t in store.children("tenants") if not t.startswith("_")]
    return table_rel(tenant, dataset)


def test_a_cut_off_inside_the_data_is_counted_exactly(lake: Settings) -> None:
    store = Store.from_uri(lake.lake)
    registry = load_registry()
    rel = _rel(lake, "meter_readings")
    ts = read_table(store, rel, columns=["ts"])["ts"]
    first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
    middle = first + (last - first) / 2
    retention = registry.get("meter_readings").retention
    now = middle + timedelta(days=retention.hot_days)  # the archive cut-off falls mid-data
    versions = {r: latest_version(store, r) for r in (rel, _rel(lake, "quarantine"))}

    plan = plan_retention(store, registry, now)

    readings = [p for p in plan.partitions if p.table == rel]
    assert readings
    expected = int(pc.sum(pc.less(ts, middle)).as_py())
    assert 0 < expected < len(ts)
    assert sum(p.archive_rows for p in readings) == expected
    assert sum(p.delete_rows for p in readings) == 0
    assert sum(p.rows for p in readings) == len(ts)
    assert sum(p.files_read for p in readings) > 0  # files straddling the cut were read
    assert {tuple(p.partition) for p in readings} == {("branch_id", "event_month")}
    # Quarantine: 30 days hot, 60 archived: long gone by then, settled by statistics.
    quarantine = [p for p in plan.partitions if p.dataset == "quarantine"]
    assert sum(p.delete_rows for p in quarantine) == sum(p.rows for p in quarantine) > 0
    # Contacts keep 730 days: nothing due.
    contacts = [p for p in plan.partitions if p.dataset == "contacts"]
    assert sum(p.archive_rows + p.delete_rows for p in contacts) == 0
    # A plan changes nothing.
    assert {r: latest_version(store, r) for r in versions} == versions


def test_past_the_archive_period_everything_is_due_for_deletion(lake: Settings) -> None:
    store = Store.from_uri(lake.lake)
    registry = load_registry()
    rel = _rel(lake, "meter_readings")
    last = pc.max(read_table(store, rel, columns=["ts"])["ts"]).as_py()
    retention = registry.get("meter_readings").retention
    now = last + timedelta(days=retention.total_days, seconds=1)
    cut = cutoffs(retention, now)
    assert cut.delete_before > last
    plan = plan_retention(store, registry, now)
    readings = [p for p in plan.partitions if p.table == rel]
    assert sum(p.delete_rows for p in readings) == sum(p.rows for p in readings) > 0
    assert sum(p.delete_bytes for p in readings) == sum(p.size_bytes for p in readings)
    assert sum(p.files_read for p in readings) == 0  # the statistics settled every file


def test_the_command_prints_the_plan(lake: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    env["COLUMNS"] = "200"
    base = [ENERGYLAKE, "retention", "plan", "--data-dir", str(lake.data_dir)]
    shown = subprocess.run(
        [*base, "--at", "2100-01-01"], capture_output=True, text=True, check=False, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert "(dry run)" in shown.stdout
    assert "meter_readings" in shown.stdout
    as_json = subprocess.run(
        [*base, "--json"], capture_output=True, text=True, check=False, env=env
    )
    assert as_json.returncode == 0, as_json.stderr
    partitions = json.loads(as_json.stdout)["partitions"]
    assert {p["dataset"] for p in partitions} >= {"meter_readings", "quarantine", "contacts"}
    bad = subprocess.run(
        [*base, "--at", "soon"], capture_output=True, text=True, check=False, env=env
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --at 'soon'")
