"""``energylake gateway`` (MQTT + HTTP into the landing log) and ``energylake run``
(the gateway and ``process --follow`` as two supervised child processes)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cli.common import CliContext, cli_context, configure_logging, error
from gateway.config import GatewayConfig
from gateway.sessions import SESSION_STATE_FILE, MqttSession
from pipelines.settings import Settings

__all__ = ["app", "build_gateway_config"]

log = logging.getLogger("energylake.run")

app = typer.Typer()


def build_gateway_config(
    settings: Settings, *, mqtt: bool = True, http: bool = True
) -> GatewayConfig:
    """The gateway's config from the settings; reads the MQTT credentials file."""
    from contracts.errors import ConfigError
    from gateway.sessions import SessionBookError, read_session_book

    gateway_dir = settings.data_dir / "gateway"
    username: str | None = None
    password: str | None = None
    sessions: tuple[MqttSession, ...] | None = None
    retired: tuple[MqttSession, ...] = ()
    creds = settings.gateway_mqtt_credentials or gateway_dir / "gateway-mqtt.json"
    if mqtt:
        try:
            book = read_session_book(creds)
        except SessionBookError as exc:
            raise ConfigError(
                str(exc), setting="gateway_mqtt_credentials", value=str(creds)
            ) from exc
        password = book.password
        # (a version 1 book is one session of scope "all"; reloaded like any other, so an
        # upgrade of the book reaches a running gateway)
        username = book.sessions[0].username if book.sessions else None
        sessions, retired = book.sessions, book.retired
    return GatewayConfig(
        landing_dir=settings.landing,
        identity_book=settings.gateway_identity_book or gateway_dir / "identities.json",
        audit_dir=settings.data_dir / "audit" / "gateway",
        writer_id=settings.gateway_writer_id,
        fsync=settings.gateway_fsync,
        roll_bytes=settings.gateway_roll_bytes,
        roll_seconds=settings.gateway_roll_s,
        flush_interval_s=settings.gateway_flush_interval_ms / 1000.0,
        flush_max_records=settings.gateway_flush_max_records,
        min_free_bytes=settings.gateway_min_free_bytes,
        max_lag_bytes=settings.gateway_max_lag_bytes,
        max_lag_age_s=settings.gateway_max_lag_age_s,
        retry_after_s=settings.gateway_retry_after_s,
        monitor_interval_s=settings.gateway_monitor_interval_s,
        mqtt_enabled=mqtt,
        mqtt_host=settings.gateway_mqtt_host,
        mqtt_port=settings.gateway_mqtt_port,
        mqtt_client_id=settings.gateway_mqtt_client_id,
        mqtt_username=username,
        mqtt_password=password,
        mqtt_topics=tuple(settings.gateway_mqtt_topics),
        mqtt_sessions=sessions,
        mqtt_session_book=creds,
        mqtt_retired_sessions=retired,
        mqtt_session_state=creds.with_name(SESSION_STATE_FILE),
        mqtt_max_topic_bytes=settings.gateway_mqtt_max_topic_bytes,
        mqtt_topic_cache_bytes=settings.gateway_mqtt_topic_cache_bytes,
        mqtt_flood_messages=settings.gateway_mqtt_flood_messages,
        mqtt_flood_window_s=settings.gateway_mqtt_flood_window_s,
        mqtt_drain_quiet_s=settings.gateway_mqtt_drain_quiet_s,
        mqtt_broker_log=settings.gateway_mqtt_broker_log or gateway_dir / "mosquitto.log",
        mqtt_broker_log_state=gateway_dir / "broker-log-position.json",
        http_enabled=http,
        http_host=settings.gateway_http_host,
        http_port=settings.gateway_http_port,
        http_max_body_bytes=settings.gateway_http_max_body_bytes,
        http_max_decompressed_bytes=settings.gateway_http_max_decompressed_bytes,
        http_max_depth=settings.gateway_http_max_depth,
        http_max_readings=settings.gateway_http_max_readings,
        http_rate_per_s=settings.gateway_http_rate_per_s,
        http_burst=settings.gateway_http_burst,
        # HTTP edge hardening and HTTPS
        http_idle_timeout_s=settings.gateway_http_idle_timeout_s,
        http_body_timeout_s=settings.gateway_http_body_timeout_s,
        http_max_connections=settings.gateway_http_max_connections,
        http_max_connections_per_address=settings.gateway_http_max_connections_per_address,
        http_auth_failures_per_s=settings.gateway_http_auth_failures_per_s,
        http_auth_failure_burst=settings.gateway_http_auth_failure_burst,
        audit_repeat_window_s=settings.gateway_audit_repeat_window_s,
        audit_max_first_records=settings.gateway_audit_max_first_records,
        http_tls_cert=settings.gateway_http_tls_cert,
        http_tls_key=settings.gateway_http_tls_key,
        drain_timeout_s=settings.gateway_drain_timeout_s,
        switch_interval_s=settings.gateway_switch_interval_ms / 1000.0,
    )


@app.command("gateway")
def _gateway(
    ctx: typer.Context,
    mqtt: Annotated[bool, typer.Option("--mqtt/--no-mqtt", help="Run the MQTT consumer.")] = True,
    http: Annotated[bool, typer.Option("--http/--no-http", help="Run the HTTP server.")] = True,
    http_port: Annotated[int | None, typer.Option(help="Override gateway_http_port.")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="Override gateway_mqtt_port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    landing_dir: Annotated[Path | None, typer.Option(help="Override landing_dir.")] = None,
) -> None:
    """Run the ingest gateway: MQTT consumer and HTTP server writing the landing log.

    Acknowledges (MQTT PUBACK, HTTP 202) only after the landing log's fsync. SIGTERM
    drains: stop accepting, fsync, close the open segment, exit 0. Exit 2: a setting or
    file is wrong (the message names it); exit 3: the HTTP address cannot be bound (port
    in use, not permitted).
    """
    from gateway.identity import IdentityError
    from gateway.service import Gateway, GatewayStartError
    from landing.format import LandingError

    settings = cli_context(ctx).settings(
        data_dir=data_dir,
        landing_dir=landing_dir,
        gateway_http_port=http_port,
        gateway_mqtt_port=mqtt_port,
    )
    configure_logging(settings.log_level)
    try:
        Gateway(build_gateway_config(settings, mqtt=mqtt, http=http)).run()
    except (ValueError, LandingError, IdentityError, OSError) as exc:
        # A setting or file is wrong: EXIT_CONFIG (GatewayStartError's code), which `run`
        # does not retry. A GatewayListenError (EXIT_LISTEN) passes through; the root prints
        # either as one line and exits with its code.
        raise GatewayStartError(str(exc)) from exc


def _child_command(cli: CliContext, command: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "cli"]
    config = cli.config
    if config is not None:
        cmd += ["--config", str(config)]
    return cmd + command


@app.command("run")
def _run(
    ctx: typer.Context,
    mqtt: Annotated[bool, typer.Option("--mqtt/--no-mqtt", help="Gateway: MQTT consumer.")] = True,
    http: Annotated[bool, typer.Option("--http/--no-http", help="Gateway: HTTP server.")] = True,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    max_restarts: Annotated[
        int, typer.Option(help="Give up after this many quick crashes of one child in a row.")
    ] = 5,
) -> None:
    """One-machine deployment: the gateway and `process --follow` as supervised children.

    A child that dies is restarted with backoff; after more than --max-restarts failures
    in a row within 10 s of starting, or when the gateway reports a configuration error
    (exit 2), everything is stopped, with the reason, and run exits 1. SIGTERM / SIGINT
    are forwarded to both; exits 0 once both have drained and exited 0.
    """
    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir)
    common = ["--data-dir", str(settings.data_dir)]
    specs = {
        "gateway": _child_command(
            cli,
            [
                "gateway",
                "--mqtt" if mqtt else "--no-mqtt",
                "--http" if http else "--no-http",
                *common,
            ],
        ),
        "process": _child_command(cli, ["process", "--follow", *common]),
    }
    from gateway.service import EXIT_CONFIG, EXIT_LISTEN

    code = _supervise(
        cli,
        specs,
        max_restarts=max_restarts,
        meanings={
            "gateway": {
                EXIT_CONFIG: "a setting or file is wrong",
                EXIT_LISTEN: "it cannot listen on its HTTP port (in use or not permitted)",
            }
        },
        fatal={"gateway": {EXIT_CONFIG}},
    )
    raise typer.Exit(code)


_QUICK_S = 10.0  # a child that dies sooner after its start failed to start


def _supervise(
    cli: CliContext,
    specs: dict[str, list[str]],
    *,
    max_restarts: int,
    meanings: dict[str, dict[int, str]] | None = None,
    fatal: dict[str, set[int]] | None = None,
) -> int:
    """Run ``specs`` (name -> command) until a signal; restart what dies, within bounds.

    ``meanings`` explains a child's exit codes in the messages; an exit code in
    ``fatal`` is not retried (restarting cannot fix it).
    """
    meanings = meanings or {}
    fatal = fatal or {}
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    started: dict[str, float] = {}
    quick_failures = dict.fromkeys(specs, 0)
    next_start = dict.fromkeys(specs, 0.0)
    codes: dict[str, int] = {}
    try:
        for name, cmd in specs.items():
            procs[name] = subprocess.Popen(cmd, start_new_session=True)  # noqa: S603
            started[name] = time.monotonic()
            cli.console.print(f"run: started {name} (pid {procs[name].pid})")
        forwarded = False
        while True:
            if stopping and not forwarded:
                for name, proc in procs.items():
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        cli.console.print(f"run: SIGTERM -> {name} (pid {proc.pid})")
                forwarded = True
            for name, proc in list(procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                if forwarded:
                    codes[name] = rc
                    del procs[name]
                    continue
                quick = time.monotonic() - started[name] < _QUICK_S
                quick_failures[name] = quick_failures[name] + 1 if quick else 0
                meaning = meanings.get(name, {}).get(rc)
                why = f"exit {rc}" + (f": {meaning}; see its message above" if meaning else "")
                del procs[name]
                if rc in fatal.get(name, set()) or quick_failures[name] > max_restarts:
                    reason = (
                        "restarting cannot fix it"
                        if rc in fatal.get(name, set())
                        else f"it failed {quick_failures[name]} times in a row, each within "
                        f"{_QUICK_S:g} s of starting"
                    )
                    error(f"run: {name} cannot run ({why}); {reason}; stopping everything")
                    stopping = True
                    codes[name] = rc or 1
                    continue
                delay = min(30.0, 0.5 * 2 ** quick_failures[name])
                error(
                    f"run: {name} exited ({why}); restarting in {delay:g} s "
                    f"(quick failures in a row: {quick_failures[name]} of at most {max_restarts})"
                )
                next_start[name] = time.monotonic() + delay
            for name, cmd in specs.items():
                if (
                    not stopping
                    and name not in procs
                    and name not in codes
                    and time.monotonic() >= next_start[name]
                ):
                    procs[name] = subprocess.Popen(cmd, start_new_session=True)  # noqa: S603
                    started[name] = time.monotonic()
            if forwarded and not procs:
                break
            if stopping and not forwarded:
                continue
            time.sleep(0.1)
    finally:
        for proc in procs.values():  # only if we are leaving by an exception
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {n: c for n, c in codes.items() if c != 0}
    for name, rc in sorted(codes.items()):
        cli.console.print(f"run: {name} exited with {rc}")
    return 1 if failed else 0
