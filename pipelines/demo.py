"""``make demo``: simulate a fleet, then show what three purposes see of one dataset."""

from __future__ import annotations

from datetime import date

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.rule import Rule

from contracts import apply_plan, load_registry, plan_for
from lake.keys import KeyStore
from pipelines import render
from pipelines.settings import Settings
from simulator.config import FaultRates, SimConfig
from simulator.run import simulate

__all__ = ["run_demo"]

# Enough of every fault that each one shows up in a one-day demo.
DEMO_FAULTS = FaultRates().with_overrides({"counter_reset": 0.5, "stuck_sensor": 0.5})


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
    registry = load_registry(settings.contracts_dir)
    contract = registry.get(dataset)
    plans = [plan_for(contract, p, registry.vocabulary) for p in purposes]  # fail fast
    console.print(Rule(f"simulating {clients} clients x {branches} branches x {days} day(s)"))
    config = SimConfig(
        clients=clients,
        branches=branches,
        days=days,
        seed=seed,
        start=date(2026, 11, 16),
        faults=DEMO_FAULTS,
    )
    result = simulate(config, settings.sim_dir, registry=registry)
    console.print(render.simulation_summary(result.manifest, result.out))

    console.print(Rule(f"purpose limitation: {dataset} as each purpose sees it"))
    console.print(render.compare_table(contract, plans))
    table = pq.read_table(result.reference_dir / f"{dataset}.parquet")
    tenant = str(table.column("client_id")[0]) if "client_id" in table.column_names else "default"
    rows = (
        table.filter(pc.equal(table.column("client_id"), tenant)) if tenant != "default" else table
    )
    key = KeyStore(settings.keys).get(tenant)
    shaped = {plan.purpose: apply_plan(plan, rows, key, contract) for plan in plans}
    console.print(render.record_table(contract, shaped, f"one {dataset} record of tenant {tenant}"))
    console.print(
        f"Pseudonyms use tenant {tenant}'s key in {settings.keys}; another tenant's key gives "
        "other pseudonyms. Try: energylake contracts show contacts --purpose benchmarking"
    )
