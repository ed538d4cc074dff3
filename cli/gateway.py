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
from pipelines.settings import build_gateway_config

__all__ = ["app"]

log = logging.getLogger("energylake.run")

app = typer.Typer()


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
    """One-machine deployment: the gateway, `process --follow` and the retention schedule
    (`retention apply --apply --every-s retention_interval_s`) as supervised children.

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
        # retention (issue 15): a pass shortly after start, then every retention_interval_s
        "retention": _child_command(
            cli,
            [
                "retention",
                "apply",
                "--apply",
                "--every-s",
                str(settings.retention_interval_s),
                "--first-delay-s",
                str(settings.retention_first_delay_s),
                *common,
            ],
        ),
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
