"""The ``energylake`` command line: the root app, the one catch of ``EnergylakeError``, and
``main``. Composition only: the work is done in the packages.

Every command module exposes ``app = typer.Typer(...)``: a command group names itself
(``typer.Typer(name="devices")``), a module of top-level commands leaves the name out and its
commands join the root. The root adds them all in one list (``_COMMANDS``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from cli import (
    access,
    audit,
    config,
    contracts,
    decoders,
    demo,
    devices,
    gateway,
    lake,
    lineage,
    modbus,
    process,
    publish,
    quality,
    reference,
    report,
    retention,
    simulate,
    sql,
    status,
    subject,
)
from cli.common import CliContext, error
from contracts import EnergylakeError
from pipelines.settings import private_files

__all__ = ["app", "main"]


class _Root(TyperGroup):
    """The root command: the one place that turns an ``EnergylakeError`` into one line on
    stderr and its exit code. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # ctx: typer's Context (its vendored click's)
        try:
            return super().invoke(ctx)
        except EnergylakeError as err:
            error(str(err))
            raise typer.Exit(err.exit_code) from err


app = typer.Typer(
    name="energylake",
    cls=_Root,
    help="energylake: governed streaming lake for energy telemetry (meters, DG sets, solar).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The command modules, in the order `energylake --help` lists them.
_COMMANDS = (
    contracts.app,
    decoders.app,  # payload formats as data (issue 17)
    config.app,
    reference.app,
    lake.app,
    simulate.app,
    process.app,
    demo.app,
    lineage.app,
    quality.app,
    devices.app,
    publish.app,
    gateway.app,
    modbus.app,  # the Modbus TCP poller (issue 17)
    status.app,
    access.app,
    sql.app,
    audit.app,  # the tamper-evident audit log (issue 14)
    retention.app,
    subject.app,  # data-subject rights (issue 15)
    report.app,  # sustainability reporting (issue 16)
)
for _commands in _COMMANDS:
    app.add_typer(_commands)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version as package_version

        typer.echo(f"energylake {package_version('energylake')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Config file (default ./energylake.toml, or $ENERGYLAKE_CONFIG)."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run `energylake COMMAND --help` for any command."""
    given = ctx.obj if isinstance(ctx.obj, CliContext) else CliContext()
    ctx.obj = replace(given, config=config)


def main() -> None:
    """Console entry point (``energylake``, ``python -m cli``)."""
    private_files()
    state = CliContext()
    try:
        app(obj=state)
    except SystemExit as exc:
        if not state.exit_plan.fast:
            raise
        code = exc.code
    else:
        if not state.exit_plan.fast:
            return
        code = 0
    _exit_now(code)


def _exit_now(code: object) -> NoReturn:
    """Exit without the interpreter's teardown (measured: 0.3-0.4 s after a batch, freeing
    the ~2,400 modules Beam imports and everything they hold, which the operating system
    reclaims at once anyway). Only after a command that has made all it wrote durable;
    logs and the console are flushed first, and worker threads are idle by then."""
    import logging

    logging.shutdown()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
