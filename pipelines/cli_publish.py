"""``energylake simulate-publish``: simulate a fleet and publish it over MQTT and/or HTTP."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cliutil import console, error, settings_from

__all__ = ["parse_broker", "register"]


def parse_broker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); a clear error otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def simulate_publish(
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
    clients: Annotated[int, typer.Option(help="Number of clients (tenants).")] = 2,
    branches: Annotated[int, typer.Option(help="Branches per client.")] = 5,
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 1,
    start: Annotated[
        str, typer.Option(help="First local day (YYYY-MM-DD, Asia/Kolkata).")
    ] = "2026-11-16",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same fleet.")] = 42,
    cadence: Annotated[int, typer.Option(help="Seconds between readings of a device.")] = 60,
    faults: Annotated[str, typer.Option(help="Fault profile: default or none.")] = "default",
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help="Override one fault rate, NAME=RATE (repeatable)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default DATA_DIR/sim).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Simulate (reference data, truth manifest) and publish the telemetry over real sockets:
    MQTT as each device (QoS 1) and/or HTTP with each device's token. Writes publish.json
    and deliveries.ndjson (what was acknowledged) next to the manifest.
    """
    from pipelines.cli import _parse_faults
    from pipelines.provision import CREDENTIALS_NAME, write_credentials
    from simulator.config import FaultRates, SimConfig
    from simulator.publish import PublishTargets, simulate_and_publish

    settings = settings_from(data_dir=data_dir)
    try:
        rates = {"default": FaultRates(), "none": FaultRates.none()}[faults]
    except KeyError:
        raise typer.BadParameter("faults must be 'default' or 'none'") from None
    try:
        config = SimConfig(
            clients=clients,
            branches=branches,
            days=days,
            start=date.fromisoformat(start),
            seed=seed,
            cadence_s=cadence,
            faults=rates.with_overrides(_parse_faults(fault)),
        )
        targets = PublishTargets(
            mqtt=parse_broker(mqtt) if mqtt else None,
            http=http,
            http_share=http_share,
            rate_per_s=rate,
            http_batch=http_batch,
            ack_timeout_s=ack_timeout,
        )
    except ValueError as exc:
        error(f"{exc}")
        raise typer.Exit(2) from exc
    folder = out or settings.sim_dir
    published = simulate_and_publish(config, folder, targets)
    write_credentials(folder / CREDENTIALS_NAME, published.secrets)
    summary = published.report.summary()
    console.print(
        f"published {summary['messages']} message(s) in {summary['elapsed_s']} s "
        f"({summary['rate_per_s']}/s); acknowledged {summary['acked']}"
    )
    for outcome, count in summary["outcomes"].items():
        console.print(f"  {outcome:<18} {count}")
    console.print(f"truth manifest and deliveries: {folder}")


def register(app: typer.Typer) -> None:
    """Add ``energylake simulate-publish`` to the root command."""
    app.command("simulate-publish")(simulate_publish)
