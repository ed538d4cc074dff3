"""``energylake modbus``: poll the registry's Modbus TCP devices into the landing log, and
lint register maps."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import cli_context, configure_logging, error

if TYPE_CHECKING:
    import pyarrow as pa

    from contracts import ContractRegistry
    from gateway.modbus import ModbusDevice

__all__ = ["app", "devices_from_registry"]

app = typer.Typer(
    name="modbus",
    help="Modbus TCP devices: poll them into the landing log; lint register maps.",
    no_args_is_help=True,
)


def devices_from_registry(
    table: pa.Table, registry: ContractRegistry | None = None
) -> tuple[list[ModbusDevice], dict[str, str]]:
    """The active devices with a register map, ready to poll, and the ones that cannot be
    (device id -> why: no endpoint, a map that does not load or serves another kind)."""
    from gateway.modbus import ModbusDevice, parse_endpoint
    from gateway.modbus_maps import MapError, RegisterMap, load_map

    maps: dict[str, RegisterMap | str] = {}
    devices: list[ModbusDevice] = []
    skipped: dict[str, str] = {}
    for row in table.to_pylist():
        name = row.get("register_map")
        if row.get("status") != "active" or not name:
            continue
        device_id = str(row["device_id"])
        if name not in maps:
            try:
                maps[name] = load_map(str(name), registry)
            except MapError as exc:
                maps[name] = str(exc).splitlines()[0]
        found = maps[name]
        if isinstance(found, str):
            skipped[device_id] = found
            continue
        if found.kind != row.get("kind"):
            skipped[device_id] = (
                f"register map {name} serves {found.kind}, the device is {row.get('kind')}"
            )
            continue
        endpoint = row.get("modbus_endpoint")
        if not endpoint:
            skipped[device_id] = "no modbus_endpoint"
            continue
        try:
            host, port = parse_endpoint(str(endpoint))
        except ValueError as exc:
            skipped[device_id] = str(exc)
            continue
        unit = row.get("modbus_unit_id")
        devices.append(
            ModbusDevice(
                device_id=device_id,
                client_id=str(row["client_id"]),
                branch_id=str(row["branch_id"]),
                host=host,
                port=port,
                unit_id=int(unit) if unit is not None else 1,
                cadence_s=float(row["cadence_s"]),
                register_map=found,
            )
        )
    return devices, skipped


@app.command("poll")
def modbus_poll(
    ctx: typer.Context,
    device: Annotated[
        list[str] | None, typer.Option("--device", help="Poll only this device (repeatable).")
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 3.0,
    backoff_max_s: Annotated[
        float, typer.Option(help="Longest wait before retrying a failing device.")
    ] = 300.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (127.0.0.1).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
    landing_dir: Annotated[Path | None, typer.Option(help="Override landing_dir.")] = None,
) -> None:
    """Poll the active Modbus devices of the registry (those with a register_map) on their
    cadence and land each reading as source modbus. Status: DATA_DIR/modbus/status.json.
    SIGTERM / SIGINT: finish the polls in hand (and their landing sync), then exit 0.
    """
    from gateway.modbus import ModbusPoller, PollerOptions
    from lake.reference import load_device_registry

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri, landing_dir=landing_dir)
    configure_logging(settings.log_level)
    registry = _contracts(settings.contracts_dir)
    table = load_device_registry(settings.lake_store(), registry)
    devices, skipped = devices_from_registry(table, registry)
    if device:
        wanted = set(device)
        devices = [d for d in devices if d.device_id in wanted]
        skipped = {k: v for k, v in skipped.items() if k in wanted}
    for device_id, why in sorted(skipped.items()):
        error(f"modbus: {device_id} is not polled: {why}")
    if not devices:
        error(f"no Modbus device to poll in the registry at {settings.lake}")
        raise typer.Exit(2)
    poller = ModbusPoller(
        devices,
        landing_dir=settings.landing,
        state_dir=settings.data_dir / "modbus",
        options=PollerOptions(timeout_s=timeout_s, backoff_max_s=backoff_max_s),
        skipped=skipped,
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=poller.metrics.registry)
    cli.console.print(f"modbus: polling {len(devices)} device(s); status {poller.status_path}")
    asyncio.run(_run(poller))


async def _run(poller: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, poller.stop)
    try:
        await poller.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _contracts(folder: Path | None) -> ContractRegistry:
    from contracts import load_registry

    return load_registry(folder) if folder else load_registry()


@app.command("lint")
def modbus_lint(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None, typer.Argument(help="Map files (default: the shipped maps).")
    ] = None,
) -> None:
    """Check register maps against the readings contracts; exit 2 when one has a problem."""
    from gateway.modbus_maps import available_maps, lint_map, map_path

    cli = cli_context(ctx)
    settings = cli.settings()
    registry = _contracts(settings.contracts_dir)
    paths = list(files) if files else [map_path(n) for n in available_maps()]
    problems = 0
    for path in paths:
        issues = lint_map(path, registry)
        problems += len(issues)
        for issue in issues:
            typer.echo(str(issue), err=True)
        if not issues:
            cli.console.print(f"ok: {path}")
    if problems:
        error(f"{problems} problem(s) in {len(paths)} map(s)")
        raise typer.Exit(2)
