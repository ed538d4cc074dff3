"""``energylake simulate-publish``: simulate a fleet and publish it over MQTT and/or HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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

__all__ = ["app", "parse_broker"]

app = typer.Typer()


def parse_broker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); a clear error otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


@app.command("simulate-publish")
def simulate_publish(
    ctx: typer.Context,
    mqtt: Annotated[
        str | None, typer.Option("--mqtt", help="Broker to publish to, HOST:PORT.")
    ] = None,
    http: Annotated[
        str | None, typer.Option("--http", help="Gateway base URL, e.g. http://127.0.0.1:8080.")
    ] = None,
    http_share: Annotated[
        float, typer.Option(help="With both: the share of devices that use HTTP.")
    ] = 0.5,
    rate: Annotated[
        float | None,
        typer.Option(help="Messages per second overall (default: as fast as possible)."),
    ] = None,
    http_batch: Annotated[int, typer.Option(help="Readings per HTTP request.")] = 100,
    ack_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the last acknowledgements.")
    ] = 60.0,
    clients: Clients = 2,
    branches: PerClient = 5,
    days: Days = 1,
    start: Start = "2026-11-16",
    seed: Seed = 42,
    cadence: Cadence = 60,
    faults: Faults = "default",
    fault: FaultOverrides = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default DATA_DIR/sim).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Simulate (reference data, truth manifest) and publish the telemetry over real sockets:
    MQTT as each device (QoS 1) and/or HTTP with each device's token. Writes publish.json
    and deliveries.ndjson (what was acknowledged) next to the manifest.
    """
    from gateway.provisioning import CREDENTIALS_NAME, write_credentials
    from simulator.publish import PublishTargets, simulate_and_publish

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
    targets = PublishTargets(
        mqtt=parse_broker(mqtt) if mqtt else None,
        http=http,
        http_share=http_share,
        rate_per_s=rate,
        http_batch=http_batch,
        ack_timeout_s=ack_timeout,
    )
    folder = out or settings.sim_dir
    published = simulate_and_publish(config, folder, targets)
    write_credentials(folder / CREDENTIALS_NAME, published.secrets)
    summary = published.report.summary()
    cli.console.print(
        f"published {summary['messages']} message(s) in {summary['elapsed_s']} s "
        f"({summary['rate_per_s']}/s); acknowledged {summary['acked']}"
    )
    for outcome, count in summary["outcomes"].items():
        cli.console.print(f"  {outcome:<18} {count}")
    cli.console.print(f"truth manifest and deliveries: {folder}")
