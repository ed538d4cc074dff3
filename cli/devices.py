"""``energylake devices``: add, show and retire devices; provision the broker and gateway from
the registry, revoke, list."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import cli_context, error
from contracts import CONTRACTS_DIR, load_registry
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
_PidFileOption = Annotated[
    Path | None,
    typer.Option(help="Broker pid file: send it SIGHUP so it rereads its accounts."),
]


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
    pid_file: _PidFileOption = None,
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


def _audit(settings: Settings) -> Any:
    from audit.log import AuditLog

    return AuditLog(
        settings.data_dir / "audit" / "devices",
        component="devices",
        fail_closed=True,
        anchor_dir=settings.audit_anchor_dir,
        anchor_every_records=settings.audit_anchor_every_records,
        anchor_interval_s=settings.audit_anchor_interval_s,
    )


def _maps() -> dict[str, str]:
    """Register map name -> the device kind it serves (the shipped maps)."""
    from gateway.modbus_maps import MapError, available_maps, load_map

    out: dict[str, str] = {}
    for name in available_maps():
        try:
            out[name] = load_map(name).kind
        except MapError:
            continue  # a broken map is named by `energylake modbus lint`
    return out


@app.command("add")
def devices_add(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The new device's id (a-z, 0-9, -).")],
    kind: Annotated[str, typer.Option(help="meter, dg or solar: decides its dataset.")],
    client: Annotated[str, typer.Option(help="Its tenant (client_id).")],
    branch: Annotated[str, typer.Option(help="The branch it is installed in.")],
    manufacturer: Annotated[str, typer.Option(help="Maker of the device.")],
    model: Annotated[str, typer.Option(help="Model of the device.")],
    rated_power_kw: Annotated[
        float, typer.Option(help="Rating: a meter's CT maximum, a DG's prime power, a PV peak.")
    ],
    payload_format: Annotated[
        str,
        typer.Option(
            "--format", help="Its decoder (`energylake decoders list`); a Modbus device: canonical."
        ),
    ] = "canonical",
    cadence_s: Annotated[int, typer.Option(help="Expected interval between readings.")] = 60,
    mqtt_name: Annotated[
        str | None,
        typer.Option(help="The name it publishes under, when not its id (tasmota_1A2B3C)."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="What it measures short of the contract: no_export, single_phase, joined by +."
        ),
    ] = None,
    serial_number: Annotated[str | None, typer.Option(help="Manufacturer's serial number.")] = None,
    rated_kva: Annotated[float | None, typer.Option(help="A DG set's kVA rating.")] = None,
    tank_capacity_l: Annotated[float | None, typer.Option(help="A DG set's tank.")] = None,
    fuel_type: Annotated[str | None, typer.Option(help="A DG set's fuel.")] = None,
    emission_norm: Annotated[str | None, typer.Option(help="A DG set's CPCB norm.")] = None,
    emission_control: Annotated[
        str | None, typer.Option(help="A DG set's emission control.")
    ] = None,
    certificate_ref: Annotated[str | None, typer.Option(help="A DG set's certificate.")] = None,
    modbus_endpoint: Annotated[
        str | None, typer.Option(help="A Modbus TCP device's host:port.")
    ] = None,
    modbus_unit_id: Annotated[int | None, typer.Option(help="Its Modbus unit id.")] = None,
    register_map: Annotated[
        str | None, typer.Option(help="Its register map (gateway/registers/).")
    ] = None,
    edge_node: Annotated[
        str | None, typer.Option(help="A Sparkplug B device's edge node (registered first).")
    ] = None,
    installed_on: Annotated[
        str | None, typer.Option(help="Commissioning date, YYYY-MM-DD (default today).")
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="Where the device's secret goes (JSON, mode 0600, merged with what is there; "
            "default DATA_DIR/gateway/onboarding-credentials.json): hand it to the device, "
            "then `devices provision --credentials` it."
        ),
    ] = None,
    data_dir: _DataDirOption = None,
) -> None:
    """Register a device: checked against the devices contract, the decoder catalogue and the
    registry (every reason it cannot be added is listed), written to its tenant's registry,
    its secret issued once (only its SHA-256 is kept). Audited."""
    from gateway.provisioning import read_credentials, write_credentials
    from pipelines.onboarding import OnboardingError, add_device
    from transforms.catalogue import DECODERS_DIR, load_catalogue

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    catalogue = load_catalogue((settings.decoders_dir or DECODERS_DIR,), registry)
    row = {
        "device_id": device_id,
        "client_id": client,
        "branch_id": branch,
        "kind": kind,
        "manufacturer": manufacturer,
        "model": model,
        "serial_number": serial_number,
        "payload_format": payload_format,
        "rated_power_kw": rated_power_kw,
        "rated_kva": rated_kva,
        "tank_capacity_l": tank_capacity_l,
        "fuel_type": fuel_type,
        "emission_norm": emission_norm,
        "emission_control": emission_control,
        "certificate_ref": certificate_ref,
        "cadence_s": cadence_s,
        "modbus_endpoint": modbus_endpoint,
        "modbus_unit_id": modbus_unit_id,
        "register_map": register_map,
        "edge_node": edge_node,
        "mqtt_name": mqtt_name,
        "profile": profile,
    }
    if installed_on is not None:
        row["installed_on"] = installed_on
    try:
        added = add_device(
            row,
            store=settings.lake_store(),
            registry=registry,
            catalogue=catalogue,
            patterns=gateway_patterns(settings),
            maps=_maps(),
        )
    except (OnboardingError, ValueError) as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    path = credentials or settings.data_dir / "gateway" / "onboarding-credentials.json"
    tokens = read_credentials(path) if path.exists() else {}
    tokens[device_id] = added.secret
    path.parent.mkdir(parents=True, exist_ok=True)
    write_credentials(path, tokens)
    _audit(settings).record(
        "device_added",
        device_id=device_id,
        client_id=client,
        branch_id=branch,
        detail=f"{kind} {payload_format} registry version {added.version}",
        actor=getpass.getuser(),
    )
    account = mqtt_name or device_id
    cli.console.print(
        f"device {device_id} added ({kind}, {payload_format}; registry of {client} at version "
        f"{added.version}); its secret is in {path} (only its SHA-256 is kept)"
    )
    if register_map:
        cli.console.print(f"it is polled by `energylake modbus poll` at {modbus_endpoint}")
    else:
        cli.console.print(
            f"next: `energylake devices provision --credentials {path}` creates its MQTT "
            f"account {account}; then the broker reloads"
        )


@app.command("show")
def devices_show(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device.")],
    out: _OutOption = None,
    data_dir: _DataDirOption = None,
) -> None:
    """A device's registry row (never its secret), its topics and its provisioning."""
    from gateway.provisioning import BOOK_FILE, device_status
    from lake.reference import load_device_registry
    from transforms.catalogue import DECODERS_DIR, load_catalogue

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    rows = [
        r
        for r in load_device_registry(settings.lake_store(), registry).to_pylist()
        if r["device_id"] == device_id
    ]
    if not rows:
        error(f"no device {device_id} in the registry at {settings.lake}")
        raise typer.Exit(1)
    row = rows[0]
    account = row.get("mqtt_name") or device_id
    table = Table(title=f"device {device_id}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for name, value in row.items():
        if name == "http_token_sha256":
            value = "set (SHA-256 of its secret)" if value else "none"
        if value is not None:
            table.add_row(name, str(value))
    catalogue = load_catalogue((settings.decoders_dir or DECODERS_DIR,), registry)
    decoder = catalogue.decoders.get(str(row["payload_format"]))
    if row.get("register_map"):
        table.add_row("reaches the lake", f"polled at {row.get('modbus_endpoint')} (modbus)")
    elif decoder is not None:
        for stream in decoder.streams:
            topic = stream.topic.replace("{client}", str(row["client_id"]))
            topic = topic.replace("{branch}", str(row["branch_id"]))
            if "{edge}" in topic:
                topic = topic.replace("{edge}", str(row.get("edge_node"))).replace(
                    "{device}", account
                )
            else:
                topic = topic.replace("{device}", account)
            table.add_row(f"publishes ({stream.name})", topic)
    folder = _out(settings, out)
    status = (
        {s.device_id: s for s in device_status(folder)} if (folder / BOOK_FILE).exists() else {}
    )
    found = status.get(account)
    if found is None:
        table.add_row("provisioned", "no (energylake devices provision)")
    else:
        state = "REVOKED" if found.revoked else "yes"
        mqtt = "yes" if found.mqtt_account else "no"
        table.add_row("provisioned", f"{state}; MQTT account {account}: {mqtt}")
    cli.console.print(table)


@app.command("retire")
def devices_retire(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device to retire.")],
    apply: Annotated[
        bool, typer.Option("--apply", help="Do it (without it: say what would change).")
    ] = False,
    out: _OutOption = None,
    pid_file: _PidFileOption = None,
    data_dir: _DataDirOption = None,
) -> None:
    """Retire a device: status retired in the registry (its rows and history stay; anything
    it still sends is quarantined UNKNOWN_DEVICE), its credentials revoked. A dry run unless
    --apply. Audited."""
    from gateway.provisioning import BOOK_FILE, revoke
    from lake.reference import load_device_registry
    from pipelines.onboarding import OnboardingError, retire_device

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    registry = load_registry(settings.contracts_dir or CONTRACTS_DIR)
    store = settings.lake_store()
    rows = [
        r for r in load_device_registry(store, registry).to_pylist() if r["device_id"] == device_id
    ]
    if not rows:
        error(f"no device {device_id} in the registry at {settings.lake}")
        raise typer.Exit(1)
    row = rows[0]
    account = str(row.get("mqtt_name") or device_id)
    folder = _out(settings, out)
    provisioned = (folder / BOOK_FILE).exists()
    if not apply:
        cli.console.print(
            f"dry run: device {device_id} ({row['status']}) would be marked retired in the "
            f"registry of {row['client_id']}"
            + (f", and its account {account} revoked in {folder}" if provisioned else "")
            + "; run with --apply to do it"
        )
        return
    try:
        retire_device(device_id, store=store, registry=registry)
    except OnboardingError as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    revoked = ""
    if provisioned:
        report = revoke(folder, account, pid_file=pid_file)
        revoked = (
            f"; account {account} revoked (MQTT account removed: {report.removed_mqtt_account})"
        )
    _audit(settings).record(
        "device_retired",
        device_id=device_id,
        client_id=str(row["client_id"]),
        branch_id=str(row["branch_id"]),
        detail=f"was {row['status']}{revoked}",
        actor=getpass.getuser(),
    )
    cli.console.print(f"device {device_id} retired{revoked}")
