"""``energylake status``: backlog, last batch, per-device sequence gaps, silent devices,
undecoded topics and the Modbus poller's devices."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import CliContext, cli_context

__all__ = ["EXIT_BROKER_LOG_UNREADABLE", "app"]

EXIT_BROKER_LOG_UNREADABLE = 3  # nothing missing, but the broker's drops cannot be seen

app = typer.Typer()


@app.command("status")
def status(
    ctx: typer.Context,
    hours: Annotated[float, typer.Option(help="Window of readings checked for gaps.")] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    metrics: Annotated[
        Path | None, typer.Option(help="Also write the figures as a Prometheus textfile here.")
    ] = None,
    top: Annotated[int, typer.Option(help="Devices to list (with gaps; silent).")] = 20,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """What is waiting in the landing log, the last batch, devices whose seq has gaps, and
    devices that have fallen silent.

    Exits 0 when every seq of the window is in the lake or the quarantine and the broker
    dropped nothing, 1 when messages are missing or the broker dropped some (for a cron
    check), 3 when nothing is missing but the broker's log is configured (set, or written
    by the provisioned broker) and cannot be read: broker drops would go unseen. The
    figures are the same either way. Silent devices (active in the registry, nothing for
    3 cadences) are listed and counted in the metrics; they do not change the exit code (a
    device switched off loses nothing that was sent).
    """
    from pipelines.status import collect_status, write_metrics

    cli = cli_context(ctx)
    console = cli.console
    settings = cli.settings(data_dir=data_dir)
    st = collect_status(settings, window=timedelta(hours=hours))
    if metrics is not None:
        write_metrics(st, metrics)
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=1, default=str))
    else:
        b = st.backlog
        age = f"{b.oldest_closed_age_s:.0f} s" if b.oldest_closed_age_s is not None else "-"
        console.print(
            f"landing: {b.closed_segments} closed segment(s) waiting, {b.closed_bytes:,} bytes,"
            f" oldest {age}; {b.open_segments} open"
        )
        last = st.last_batch
        if last:
            rows = sum((last.get("rows") or {}).values())
            console.print(
                f"last batch: {last['batch_no']} ({rows:,} rows,"
                f" {last.get('duplicates', 0):,} duplicates, {last.get('seconds', 0)} s)"
            )
        else:
            console.print("last batch: none yet")
        console.print(
            f"sequence over the last {st.window_hours:g} h: {st.devices} device(s),"
            f" {st.devices_with_gaps} with gaps, {st.missing_total:,} missing (in neither the"
            f" lake, the quarantine nor held by the quality gate), {st.quarantined_total:,}"
            f" quarantined, {st.held_total:,} held and"
            f" {st.unreadable_total:,} unreadable in the quarantine, {st.restarts_total}"
            " restart(s)"
        )
        if st.gaps:
            table = Table(
                "tenant",
                "device",
                "branch",
                "readings",
                "seq range",
                "missing",
                "quarantined",
                "held",
            )
            for row in st.gaps[:top]:
                table.add_row(
                    row["tenant"],
                    row["device_id"],
                    row["branch_id"],
                    f"{row['readings']:,}",
                    f"{row['first_seq']}..{row['last_seq']}",
                    f"{row['missing']:,}",
                    f"{row['quarantined'] + row['unreadable']:,}",
                    f"{row['held']:,}",
                )
            console.print(table)
        _print_broker(cli, st)
        _print_silent(cli, st, top)
        _print_undecoded(cli, st, top)
        _print_modbus(cli, st, top)
    dropped = st.broker.episodes if st.broker is not None else 0
    if st.missing_total or dropped:
        raise typer.Exit(1)
    blind = st.broker is not None and st.broker.configured and not st.broker.readable
    raise typer.Exit(EXIT_BROKER_LOG_UNREADABLE if blind else 0)


def _print_silent(cli: CliContext, st: Any, top: int) -> None:
    """Active registered devices that sent nothing for 3 cadences (at least 15 min)."""
    console = cli.console
    console.print(
        f"silent devices: {len(st.silent)} (active in the registry, nothing in the lake or the"
        " quarantine for 3 cadences, at least 15 min)"
    )
    if not st.silent:
        return
    table = Table("tenant", "device", "branch", "kind", "cadence", "last seen", "silent for")
    for row in st.silent[:top]:
        last = row["last_seen"]
        table.add_row(
            row["tenant"],
            row["device_id"],
            row["branch_id"],
            row["kind"],
            f"{row['cadence_s']} s",
            last.isoformat(timespec="seconds") if last is not None else "nothing in the window",
            str(timedelta(seconds=round(row["silent_s"]))),
        )
    console.print(table)


def _print_undecoded(cli: CliContext, st: Any, top: int) -> None:
    """Provisioned devices' messages on topics no decoder reads (quarantined, not lost)."""
    total = sum(int(r["messages"]) for r in st.undecoded)
    cli.console.print(
        f"undecoded topics: {total:,} message(s) on {len(st.undecoded)} topic(s) no decoder"
        " reads (quarantined UNDECODED_TOPIC; `energylake decoders list`)"
    )
    if not st.undecoded:
        return
    table = Table("tenant", "device", "topic", "messages", "last seen")
    for row in st.undecoded[:top]:
        table.add_row(
            row["tenant"],
            row["device_id"],
            row["topic"],
            f"{row['messages']:,}",
            row["last_seen"].isoformat(timespec="seconds"),
        )
    cli.console.print(table)


def _print_modbus(cli: CliContext, st: Any, top: int) -> None:
    """The Modbus poller's devices, from its status file (when it has run)."""
    if st.modbus is None:
        return
    if "unreadable" in st.modbus:
        cli.console.print(f"modbus poller: status file unreadable: {st.modbus['unreadable']}")
        return
    devices = st.modbus.get("devices") or {}
    failing = {k: d for k, d in devices.items() if d.get("state") == "failing"}
    running = "running" if st.modbus.get("running") else "stopped"
    cli.console.print(
        f"modbus poller ({running}, status at {st.modbus.get('written_at')}): "
        f"{len(devices)} device(s), {len(failing)} failing, "
        f"{len(st.modbus.get('skipped') or {})} not polled"
    )
    if not failing:
        return
    table = Table("device", "endpoint", "failures in a row", "last error", "last success")
    for device_id, d in sorted(failing.items())[:top]:
        error = d.get("last_error") or {}
        table.add_row(
            device_id,
            f"{d.get('endpoint')} unit {d.get('unit_id')}",
            str(d.get("consecutive_failures")),
            f"{error.get('reason')}: {error.get('detail')}",
            str(d.get("last_success") or "never"),
        )
    cli.console.print(table)


def _print_broker(cli: CliContext, st: Any) -> None:
    """Broker-side drops (issue 12): episodes per gateway session, from the broker's log."""
    console = cli.console
    broker = st.broker
    if broker is None:
        return
    if not broker.readable:
        hint = ": drops are unseen; let this account read it (exit 3)" if broker.configured else ""
        console.print(f"broker drops: log {broker.log} not readable{hint}")
        return
    console.print(
        f"broker drops over the last {st.window_hours:g} h: {broker.episodes} episode(s)"
        " (acknowledged messages the broker dropped: its queue for a session was full)"
    )
    for row in broker.sessions:
        console.print(
            f"  {row['session']} (tenant {row['tenant'] or '?'}): {row['episodes']}"
            f" episode(s), last {row['last'] or '?'}"
        )
