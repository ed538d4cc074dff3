"""``energylake devices``: provision the broker and gateway from the registry, revoke, list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import cli_context, error
from pipelines.settings import Settings, gateway_patterns

__all__ = ["app"]

app = typer.Typer(
    name="devices",
    help="Devices at the edge: broker accounts, ACL and identity book from the registry.",
    no_args_is_help=True,
)

_OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Folder of the provisioned files (default DATA_DIR/gateway)."),
]
_DataDirOption = Annotated[Path | None, typer.Option(help="Override data_dir.")]


def _out(settings: Settings, out: Path | None) -> Path:
    return out or settings.data_dir / "gateway"


@app.command("provision")
def devices_provision(
    ctx: typer.Context,
    out: _OutOption = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="JSON of clear device secrets from onboarding ({'version': 1, 'devices': "
            "{id: token}}); each is checked against the registry's token digest.",
        ),
    ] = None,
    gateway_user: Annotated[
        str,
        typer.Option(help="Base of the gateway's MQTT accounts (one per tenant: BASE.<client>)."),
    ] = "energylake-gateway",
    queue_messages: Annotated[
        int, typer.Option(help="Broker queue bound of each gateway session (messages).")
    ] = 300_000,
    queue_bytes: Annotated[
        int, typer.Option(help="Broker queue bound of each gateway session (payload bytes).")
    ] = 128 * 1024 * 1024,
    broker_memory: Annotated[
        int,
        typer.Option(
            help="The broker's memory limit in bytes (Mosquitto memory_limit); the gateway "
            "sessions' queues together may take 3/4 of it."
        ),
    ] = 4 * 1024 * 1024 * 1024,
    broker_port: Annotated[int, typer.Option(help="Port of the broker's plain listener.")] = 1883,
    broker_bind: Annotated[
        str, typer.Option(help="Address of the broker's plain listener (keep it private).")
    ] = "127.0.0.1",
    broker_user: Annotated[
        str | None,
        typer.Option(help="Account the broker runs as (default: the one running this)."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Broker TLS listener: PEM certificate chain (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Broker TLS listener: PEM key of --tls-cert.")
    ] = None,
    tls_port: Annotated[int, typer.Option(help="Port of the broker's TLS listener.")] = 8883,
    tls_bind: Annotated[
        str, typer.Option(help="Address of the broker's TLS listener.")
    ] = "0.0.0.0",  # noqa: S104 - the listener devices on public networks reach
    data_dir: _DataDirOption = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Write the Mosquitto password file, ACL and config, the gateway's account and the
    identity book from the device registry in the lake (idempotent; prints no secret).
    """
    from gateway.provisioning import BrokerOptions, provision, read_credentials
    from lake.reference import load_device_registry
    from lake.storage import Store

    cli = cli_context(ctx)
    console = cli.console
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri)
    folder = _out(settings, out)
    registry = load_device_registry(Store.from_uri(settings.lake))
    if registry.num_rows == 0:
        error(
            f"no devices in the registry at {settings.lake}: "
            "run `energylake reference load DIR` first"
        )
        raise typer.Exit(2)
    secrets = read_credentials(credentials) if credentials is not None else None
    report = provision(
        registry,
        folder,
        credentials=secrets,
        patterns=gateway_patterns(settings),
        gateway_user=gateway_user,
        broker=BrokerOptions(
            port=broker_port,
            bind=broker_bind,
            user=broker_user,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_port=tls_port,
            tls_bind=tls_bind,
            max_queued_messages=queue_messages,
            max_queued_bytes=queue_bytes,
            memory_limit_bytes=broker_memory,
        ),
    )
    console.print(
        f"provisioned {report.devices} device(s) into {report.out_dir}: "
        f"{report.mqtt_accounts} MQTT account(s), {len(report.revoked)} revoked, "
        f"{report.gateway_sessions} gateway session(s) ({report.gateway_user}.<tenant> "
        f"and the shared {report.gateway_user})"
    )
    if report.retired_sessions:
        console.print(
            f"{len(report.retired_sessions)} retired gateway session(s) kept until the "
            f"gateway has drained them (run provision again after): "
            f"{', '.join(report.retired_sessions)}"
        )
    if report.pending:
        console.print(
            f"{len(report.pending)} device(s) of new tenant(s) get their MQTT account once a "
            "gateway has subscribed their tenant (its log: `MQTT session "
            f"{report.gateway_user}.<tenant> added`): reload the broker, then run this again"
        )
    if report.without_mqtt:
        console.print(
            f"{len(report.without_mqtt)} active device(s) have no MQTT account "
            "(no secret supplied): pass --credentials"
        )
    changed = ", ".join(report.changed) or "nothing (already up to date)"
    console.print(f"rewrote: {changed}")
    console.print(f"broker: mosquitto -c {report.files['mosquitto.conf']}")
    if tls_cert is not None:
        console.print(f"broker TLS listener: {tls_bind}:{tls_port} (plain: {broker_bind})")
    if report.changed:
        console.print(
            "a running gateway picks up new sessions and devices within a second; then "
            "reload a running broker (SIGHUP, or `systemctl reload mosquitto`)"
        )


@app.command("revoke")
def devices_revoke(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device to revoke.")],
    out: _OutOption = None,
    pid_file: Annotated[
        Path | None,
        typer.Option(help="Broker pid file: send it SIGHUP so it rereads its accounts."),
    ] = None,
    data_dir: _DataDirOption = None,
) -> None:
    """Revoke a device: revoked in the identity book, its MQTT account removed."""
    from gateway.provisioning import revoke

    cli = cli_context(ctx)
    console = cli.console
    report = revoke(_out(cli.settings(data_dir=data_dir), out), device_id, pid_file=pid_file)
    state = "was already revoked" if report.already_revoked else "revoked"
    console.print(
        f"device {device_id} {state}; MQTT account removed: {report.removed_mqtt_account}"
    )
    if report.signalled_pid is not None:
        console.print(f"broker (pid {report.signalled_pid}) told to reload")
    else:
        console.print("reload the broker (SIGHUP, or `systemctl reload mosquitto`) to apply")


@app.command("list")
def devices_list(
    ctx: typer.Context, out: _OutOption = None, data_dir: _DataDirOption = None
) -> None:
    """The provisioned devices: HTTP token, MQTT account, revoked."""
    from gateway.provisioning import device_status

    cli = cli_context(ctx)
    rows = device_status(_out(cli.settings(data_dir=data_dir), out))
    table = Table(title=f"devices ({len(rows)})")
    for column in ("device", "client", "branch", "kind", "http token", "mqtt", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.device_id,
            row.client_id,
            row.branch_id,
            row.kind,
            "yes" if row.http_token else "no",
            "yes" if row.mqtt_account else "no",
            "REVOKED" if row.revoked else "",
        )
    cli.console.print(table)
