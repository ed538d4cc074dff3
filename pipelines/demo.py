"""``make demo``: simulate a fleet into landing segments, process them into the lake, then
show what landed next to the simulator's truth, and what three purposes see of one dataset.
"""

from __future__ import annotations

import shutil
import time
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.rule import Rule

from contracts import apply_plan, load_registry, plan_for
from lake.keys import KeyStore
from lake.reference import load_reference
from lake.storage import Store
from pipelines import render
from pipelines.lakeops import branch_totals, table_counts
from pipelines.process import process_once
from pipelines.settings import Settings
from simulator.config import FaultRates, SimConfig
from simulator.landing import simulate_to_landing

__all__ = ["DemoError", "run_demo"]

# Enough of every fault that each one shows up in a one-day demo.
DEMO_FAULTS = FaultRates().with_overrides({"counter_reset": 0.5, "stuck_sensor": 0.5})
_MARKER = ".energylake-demo"


class DemoError(ValueError):
    """The data folder holds something the demo did not make; it will not overwrite it."""


def _reset(settings: Settings) -> None:
    """The demo starts clean, but only ever removes what an earlier demo made."""
    root = settings.data_dir
    marker = root / _MARKER
    owned = [settings.sim_dir, settings.landing, Path(settings.lake)]
    if settings.lake_uri and "://" in settings.lake_uri:
        raise DemoError("the demo runs on local disk; unset lake_uri (or ENERGYLAKE_LAKE_URI)")
    present = [p for p in owned if p.exists() and any(p.iterdir())]
    if present and not marker.exists():
        raise DemoError(
            f"{', '.join(map(str, present))} exist and were not made by the demo; "
            "use another --data-dir"
        )
    for path in owned:
        if path.exists():
            shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by energylake demo; the next demo may delete sim/, landing/, lake/\n")


def run_demo(
    settings: Settings,
    console: Console,
    *,
    clients: int,
    branches: int,
    days: int,
    seed: int,
    dataset: str,
    purposes: list[str],
) -> None:
    started = time.perf_counter()
    registry = load_registry(settings.contracts_dir)
    contract = registry.get(dataset)
    plans = [plan_for(contract, p, registry.vocabulary) for p in purposes]  # fail fast
    _reset(settings)
    console.print(Rule(f"1. simulate {clients} clients x {branches} branches x {days} day(s)"))
    config = SimConfig(
        clients=clients,
        branches=branches,
        days=days,
        seed=seed,
        start=date(2026, 11, 16),
        faults=DEMO_FAULTS,
    )
    result = simulate_to_landing(config, settings.sim_dir, settings.landing, registry=registry)
    segments = sorted((settings.landing / "closed").glob("*.seg"))
    console.print(render.simulation_summary(result.manifest, result.out))
    console.print(f"{len(segments)} landing segments in {settings.landing / 'closed'}")

    console.print(Rule("2. energylake reference load + energylake process"))
    store = Store.from_uri(settings.lake)
    loads = load_reference(store, result.reference_dir, registry)
    console.print(render.reference_table(loads))
    report = process_once(settings)
    assert report is not None
    console.print(render.batch_report(report))

    console.print(Rule("3. what the lake holds, next to the simulator's truth"))
    console.print(render.lake_tables_table(table_counts(store)))
    console.print(
        render.quarantine_vs_manifest(report.quarantined, result.manifest["expected"]["quarantine"])
    )
    console.print(render.totals_vs_truth(branch_totals(store), result.manifest["branches"]))

    console.print(Rule(f"4. purpose limitation: {dataset} as each purpose sees it"))
    console.print(render.compare_table(contract, plans))
    table = pq.read_table(result.reference_dir / f"{dataset}.parquet")
    tenant = str(table.column("client_id")[0]) if "client_id" in table.column_names else "default"
    rows = (
        table.filter(pc.equal(table.column("client_id"), tenant)) if tenant != "default" else table
    )
    key = KeyStore(settings.keys).get(tenant)
    shaped = {plan.purpose: apply_plan(plan, rows, key, contract) for plan in plans}
    console.print(render.record_table(contract, shaped, f"one {dataset} record of tenant {tenant}"))

    console.print(Rule("5. query it yourself"))
    console.print(render.duckdb_hint(settings.lake, tenant))
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")
