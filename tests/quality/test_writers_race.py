"""Exactly once across writers: a ``quality release`` and a ``process`` batch that publish the
same readings, each committing between the other's duplicate check and its commit.

Batch 1 holds the faulty meters' rows (the gate) and publishes the tenant's other meters;
the same day is then delivered again, and batch 2 (gate off) would publish the held
readings too. Whichever of the two writers commits second leaves them out: the table holds
each reading once, and the counts still add up (batch 2's plan counts them as duplicates
when it is the one that leaves them out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from analytics.queries import read_frame
from contracts import load_registry
from lake.guard import READING_KEY
from pipelines.process import process_once
from pipelines.release import release_batch
from pipelines.settings import Settings, load_settings
from simulator.landing import LandingSink
from simulator.run import simulate
from tests.pipeline.conftest import CONFIG
from tests.quality.conftest import Day, _FaultySink, firmware_fault, process_day

pytestmark = pytest.mark.slow
DS = "meter_readings"


@dataclass
class Race:
    day: Day
    tenant: str
    gate_off: Settings


def _race(tmp: Path, clean: Day) -> Race:
    by_tenant = clean.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [(str(t[0]), str(part["branch_id"][0])) for t, part in by_tenant]
    (tenant, zero_branch), (_, silent_branch) = firsts[0], firsts[1]
    fault = firmware_fault(zero_branch, silent_branch)
    day = process_day(tmp / "data", CONFIG, fault, gate=True)  # batch 1 holds the meters
    # The same day delivered again (new segments, the same readings): batch 2's input.
    sink = LandingSink(day.settings.landing)
    simulate(CONFIG, tmp / "again", registry=load_registry(), sink=_FaultySink(sink, fault))
    sink.finish()
    gate_off = load_settings(data_dir=day.settings.data_dir, quality_gate=False)
    return Race(day, tenant, gate_off)


def _plan(settings: Settings, n: int) -> dict[str, Any]:
    path = Path(settings.lake) / f"_state/main/batches/{n:010d}/plan.json"
    return dict(json.loads(path.read_text()))


def _held_rows(race: Race) -> tuple[int, int]:
    """Batch 1's (published, held) rows of the tenant's meter readings."""
    plan = _plan(race.day.settings, 1)
    entry = plan["tables"][f"tenants/{race.tenant}/meter_readings"]
    held = sum(f["num_records"] for f in entry["held_files"])
    assert held, "batch 1 held nothing: the test needs held rows"
    published = read_frame(race.day.store, race.tenant, "meter_readings").height
    assert published == sum(f["num_records"] for f in entry["files"])
    assert published, "batch 1 published nothing: the faulty meters are not the whole tenant"
    return published, held


def _assert_each_reading_once(race: Race) -> pl.DataFrame:
    rows = read_frame(race.day.store, race.tenant, "meter_readings")
    keys = rows.select(READING_KEY)
    assert keys.height == keys.unique().height, "a reading was published twice"
    return rows


def _counts(plan: dict[str, Any], tenant: str) -> dict[str, int]:
    return {
        kind: sum(
            c
            for k, t, d, _b, _k, c in plan["stats"]
            if (k, t, d) == (kind, tenant, "meter_readings")
        )
        for kind in ("written", "duplicates", "day")
    }


def test_a_batch_committing_between_a_releases_check_and_commit(
    tmp_path: Path, clean_day: Day
) -> None:
    race = _race(tmp_path, clean_day)
    published, held = _held_rows(race)
    batches: list[Any] = []

    report = release_batch(
        race.day.settings,
        "1",
        decided_by="ops@example",
        reason="CT fixed",
        apply=True,
        before_commit=lambda: batches.append(process_once(race.gate_off)),
    )
    assert len(batches) == 1
    assert batches[0] is not None
    assert batches[0].batch_no == 2
    rows = _assert_each_reading_once(race)
    assert rows.height == published + held  # batch 2 published the held ones; the release none
    counts = _counts(_plan(race.gate_off, 2), race.tenant)
    assert counts["written"] == held
    assert counts["duplicates"] >= published
    (table,) = [t for t in report.tables if t.rel.endswith(f"{race.tenant}/meter_readings")]
    assert table.already_in_table == held  # the release left every one out
    assert table.rows_published == 0


def test_a_release_committing_between_a_batchs_check_and_commit(
    tmp_path: Path, clean_day: Day
) -> None:
    race = _race(tmp_path, clean_day)
    published, held = _held_rows(race)
    releases: list[Any] = []

    report = process_once(
        race.gate_off,
        before_commit=lambda: releases.append(
            release_batch(
                race.day.settings, "1", decided_by="ops@example", reason="CT fixed", apply=True
            )
        ),
    )
    assert report is not None
    assert len(releases) == 1
    rows = _assert_each_reading_once(race)
    assert rows.height == published + held  # the release published them; batch 2 none
    # Batch 2's plan was amended before its commit: those rows are duplicates, not written.
    counts = _counts(_plan(race.gate_off, 2), race.tenant)
    assert counts["written"] == counts["day"] == 0
    assert counts["duplicates"] >= published + held
    assert report.rows.get(f"tenants/{race.tenant}/meter_readings", 0) == 0
    assert f"tenants/{race.tenant}/meter_readings" in report.committed  # its batch recorded
