"""Simulated days processed by the real pipeline, then handed to the quality gate.

``clean`` is a normal simulated day (every message fault at its usual rate). ``faulty`` is
the same fleet with two firmware faults injected on the wire, before the landing log:

- ZERO_BRANCH: every meter of one branch reports zero power and current while the rest
  (voltage, frequency, counters) stays healthy -- a CT or firmware fault that passes every
  row-level check and must trip ``zero_power_while_open`` (blocking);
- SILENT_BRANCH: one branch's devices go silent after 06:00 local time -- completeness
  (a warning) must name them.

The gate sees each (tenant, dataset) table exactly as ``energylake process`` published it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from contracts import load_registry
from lake.delta import read_table, table_exists
from lake.layout import table_rel, tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import load_devices, process_once
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.landing import LandingSink
from simulator.physics import start_epoch
from simulator.run import simulate
from simulator.stream import Message
from tests.pipeline.conftest import CONFIG

READINGS = ("meter_readings", "dg_readings", "solar_readings")
ZERO_FIELDS = (
    "power_kw",
    "power_l1_kw",
    "power_l2_kw",
    "power_l3_kw",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "apparent_power_kva",
    "reactive_power_kvar",
)


@dataclass
class Day:
    settings: Settings
    store: Store
    devices: pl.DataFrame
    branches: pl.DataFrame
    fleet_branches: list[str]

    def frame(self, tenant: str, dataset: str) -> pl.DataFrame:
        frame = pl.from_arrow(read_table(self.store, table_rel(tenant, dataset)))
        assert isinstance(frame, pl.DataFrame)
        return frame.select(load_registry().get(dataset).field_names)

    def tables(self) -> list[tuple[str, str]]:
        return [
            (t, d)
            for t in tenants(self.store)
            for d in READINGS
            if table_exists(self.store, table_rel(t, d))
        ]

    def tenant_of(self, branch: str) -> str:
        row = self.branches.filter(pl.col("branch_id") == branch)
        return str(row["client_id"][0])

    @property
    def end_of_day(self) -> datetime:
        """Just after the simulated day: freshness is judged as if published then."""
        start = datetime.fromtimestamp(start_epoch(CONFIG.start), tz=UTC)
        return start + timedelta(days=CONFIG.days, minutes=5)


class _FaultySink:
    """Passes each branch's messages to the landing sink, after a firmware fault."""

    def __init__(self, inner: LandingSink, fault: Callable[[list[Message]], list[Message]]):
        self.inner = inner
        self.fault = fault

    def __call__(self, messages: list[Message], seed: int) -> None:
        self.inner(self.fault(messages), seed)


def process_day(
    tmp: Path,
    config: SimConfig,
    fault: Callable[[list[Message]], list[Message]] | None,
    *,
    gate: bool = False,
) -> Day:
    # By default the gate is run by the tests themselves on the published rows, so the
    # pipeline's own gate (which would hold the faulty tables) is off;
    # tests/quality/test_gate_in_batch.py runs it inside the batch.
    settings = load_settings(data_dir=tmp, quality_gate=gate)
    sink = LandingSink(settings.landing)
    chosen = _FaultySink(sink, fault) if fault else sink
    result = simulate(config, settings.sim_dir, registry=load_registry(), sink=chosen)
    sink.finish()
    store = Store.from_uri(settings.lake)
    load_reference(store, result.reference_dir, load_registry())
    report = process_once(settings)
    assert report is not None
    branch_tables = [
        pl.from_arrow(read_table(store, rel))
        for t in tenants(store)
        if table_exists(store, rel := table_rel(t, "branches"))
    ]
    branches = pl.concat([b for b in branch_tables if isinstance(b, pl.DataFrame)])
    return Day(
        settings=settings,
        store=store,
        devices=load_devices(store),
        branches=branches,
        fleet_branches=sorted(branches["branch_id"].to_list()),
    )


@pytest.fixture(scope="package")
def clean_day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    return process_day(tmp_path_factory.mktemp("clean"), CONFIG, None)


@dataclass
class Faulty:
    day: Day
    zero_branch: str
    silent_branch: str


@pytest.fixture(scope="package")
def faulty_day(tmp_path_factory: pytest.TempPathFactory, clean_day: Day) -> Faulty:
    # Two branches of different tenants, each with a meter (every simulated branch has one).
    by_tenant = clean_day.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [str(part["branch_id"][0]) for _, part in by_tenant]
    zero_branch, silent_branch = firsts[0], firsts[1]
    day = process_day(
        tmp_path_factory.mktemp("faulty"), CONFIG, firmware_fault(zero_branch, silent_branch)
    )
    return Faulty(day=day, zero_branch=zero_branch, silent_branch=silent_branch)


def firmware_fault(
    zero_branch: str, silent_branch: str
) -> Callable[[list[Message]], list[Message]]:
    """One branch's meters report zero power while open; another branch falls silent."""
    t0 = start_epoch(CONFIG.start)

    def fault(messages: list[Message]) -> list[Message]:
        out = []
        for msg in messages:
            if msg.claim_branch == silent_branch and msg.ts > t0 + 6 * 3600:
                continue  # the branch's uplink dies at 06:00
            if msg.claim_branch == zero_branch and msg.kind == "meter":
                for name in ZERO_FIELDS:
                    if name in msg.readings:
                        msg.readings[name] = 0.0
            out.append(msg)
        return out

    return fault
