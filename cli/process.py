"""``energylake process``: closed landing segments -> Delta tables, once or following."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cli import render
from cli.common import CliContext, cli_context, configure_logging
from pipelines.settings import Settings

__all__ = ["app"]

app = typer.Typer()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def process(
    ctx: typer.Context,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep processing new segments until Ctrl-C or SIGTERM."),
    ] = False,
    runner: Annotated[
        str, typer.Option(help="Beam runner (FnApiRunner runs locally; others need a cluster).")
    ] = "FnApiRunner",
    max_segments: Annotated[
        int | None, typer.Option(help="At most this many segments in one batch.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
    landing_dir: Annotated[Path | None, typer.Option(help="Override landing_dir.")] = None,
) -> None:
    """Closed landing segments -> Delta tables (one Beam batch, exactly once).

    Arguments after the options are passed to Beam as pipeline options.
    """
    # A SIGTERM from here on stops the follower cleanly (exit 0), even one that comes while
    # Beam is still being imported (seconds on a loaded machine)
    stop = _stop_on_signal() if follow else None
    from pipelines.batch_hooks import wait_for_data_docs

    cli = cli_context(ctx)
    settings = cli.settings(data_dir=data_dir, lake_uri=lake_uri, landing_dir=landing_dir)
    configure_logging(settings.log_level)
    beam_args = list(ctx.args)
    # Everything this command writes is durable before it returns (fsync, Delta commit),
    # and a Data Docs build still running is waited for: the interpreter's own teardown of
    # Beam's ~2,400 modules may be skipped.
    cli.exit_plan.fast = True
    try:
        _process(cli, settings, runner, beam_args, stop=stop, max_segments=max_segments)
    finally:
        wait_for_data_docs()


def _stop_on_signal() -> threading.Event:
    """An event SIGINT and SIGTERM set (``pipelines.process.follow`` stops on it)."""
    event = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return event


def _process(
    cli: CliContext,
    settings: Settings,
    runner: str,
    beam_args: list[str],
    *,
    stop: threading.Event | None,
    max_segments: int | None,
) -> None:
    from pipelines.process import follow as follow_batches
    from pipelines.process import process_once

    if stop is not None:
        cli.console.print(
            f"following {settings.landing / 'closed'} (Ctrl-C or SIGTERM: the batch in hand"
            " is finished, then it stops)"
        )
        follow_batches(
            settings,
            runner=runner,
            beam_args=beam_args,
            on_batch=lambda r: cli.console.print(render.batch_line(r)),
            stop=stop,
        )
        return
    report = process_once(settings, runner=runner, beam_args=beam_args, max_segments=max_segments)
    if report is None:
        cli.console.print(
            f"nothing to process: no closed segments in {settings.landing / 'closed'}"
        )
        return
    cli.console.print(render.batch_report(report))
