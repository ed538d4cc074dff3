"""``energylake simulate``: a simulated fleet's day, as NDJSON or landing segments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import render
from cli.common import (
    Cadence,
    Clients,
    Days,
    FaultOverrides,
    Faults,
    PerClient,
    Seed,
    Start,
    cli_context,
    sim_config,
)

__all__ = ["app"]

app = typer.Typer()


@app.command()
def simulate(
    ctx: typer.Context,
    clients: Clients = 2,
    branches: PerClient = 5,
    days: Days = 1,
    start: Start = "2026-11-16",
    seed: Seed = 42,
    cadence: Cadence = 60,
    faults: Faults = "default",
    fault: FaultOverrides = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default DATA_DIR/sim).")] = None,
    landing: Annotated[
        bool,
        typer.Option(
            "--landing/--ndjson",
            help="Write telemetry as landing-log segments (DATA_DIR/landing) instead of NDJSON.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Simulate a fleet (meters, DG sets, rooftop solar) with faults and a truth manifest."""
    from simulator.run import simulate as run_simulation

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    config = sim_config(
        clients=clients,
        branches=branches,
        days=days,
        start=start,
        seed=seed,
        cadence=cadence,
        faults=faults,
        fault=fault,
    )
    if landing:
        from simulator.landing import simulate_to_landing

        result = simulate_to_landing(config, out or settings.sim_dir, settings.landing)
        telemetry = render.landing_written(result.out, settings.landing)
    else:
        result = run_simulation(config, out or settings.sim_dir)
        telemetry = str(result.telemetry_dir)
    from gateway.provisioning import CREDENTIALS_NAME, write_credentials

    # The fleet's clear device secrets (0600), as onboarding would export them for
    # `energylake devices provision --credentials`.
    write_credentials(result.out / CREDENTIALS_NAME, result.fleet.tokens)
    cli.console.print(render.simulation_summary(result.manifest, result.out, telemetry=telemetry))
