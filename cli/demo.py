"""``energylake demo``: the main job end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import cli_context

__all__ = ["app"]

app = typer.Typer()


@app.command()
def demo(
    ctx: typer.Context,
    clients: Annotated[int, typer.Option(help="Number of clients.")] = 2,
    branches: Annotated[int, typer.Option(help="Branches per client.")] = 5,
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed.")] = 42,
    dataset: Annotated[
        str, typer.Option(help="Dataset whose purpose views are shown.")
    ] = "work_orders",
    purposes: Annotated[
        str, typer.Option(help="Three purposes to compare, comma-separated.")
    ] = "field_service,predictive_maintenance,benchmarking",
    via: Annotated[
        str,
        typer.Option(
            help="network: Mosquitto + gateway + processor, published over MQTT and HTTP; "
            "landing: write landing segments directly (no services)."
        ),
    ] = "network",
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """The main job end to end on embedded defaults: a private Mosquitto, the gateway and the
    processor; the simulator publishes a day over MQTT and HTTP; then what landed, its
    lineage, and what each purpose sees."""
    from cli.demo_steps import run_demo

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    run_demo(
        settings,
        cli.console,
        clients=clients,
        branches=branches,
        days=days,
        seed=seed,
        dataset=dataset,
        purposes=[p.strip() for p in purposes.split(",") if p.strip()],
        via=via,
    )
