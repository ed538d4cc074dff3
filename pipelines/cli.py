"""The ``energylake`` command line. Composition only: the work is done in the packages."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.table import Table

from contracts import (
    CONTRACTS_DIR,
    ContractNotFoundError,
    UnknownPurposeError,
    lint_paths,
    load_registry,
    load_vocabulary,
    plan_for,
)
from pipelines import render
from pipelines.cliutil import (
    STATE,
    Cadence,
    Clients,
    Days,
    FaultOverrides,
    Faults,
    PerClient,
    Seed,
    Start,
    configure_logging,
    console,
    error,
    private_files,
    settings_from,
    sim_config,
)
from pipelines.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="energylake",
    help="energylake: governed streaming lake for energy telemetry (meters, DG sets, solar).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
contracts_app = typer.Typer(
    help="Data contracts: lint them, list them, show what a purpose sees.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Settings: what energylake will use, and from where.", no_args_is_help=True
)
reference_app = typer.Typer(
    help="Reference data: clients, branches, devices, contacts, work orders.",
    no_args_is_help=True,
)
lake_app = typer.Typer(help="The lake's Delta tables: compact them.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(config_app, name="config")
app.add_typer(reference_app, name="reference")
app.add_typer(lake_app, name="lake")

_error = error


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version as package_version

        console.print(f"energylake {package_version('energylake')}")
        raise typer.Exit()


@app.callback()
def _root(
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
    STATE["config"] = config


_settings = settings_from


# --- config -------------------------------------------------------------------------------
@config_app.command("show")
def config_show(
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Print the effective settings (flag > ENERGYLAKE_* env > energylake.toml > defaults)."""
    settings = _settings(data_dir=data_dir)
    table = Table("setting", "value", title="effective settings")
    for name, value in settings.model_dump().items():
        table.add_row(name, str(value))
    table.add_row("lake (resolved)", settings.lake)
    table.add_row("keys (resolved)", str(settings.keys))
    console.print(table)


# --- contracts ----------------------------------------------------------------------------
def _contracts_dir(settings: Settings) -> Path:
    return settings.contracts_dir or CONTRACTS_DIR


@contracts_app.command("lint")
def contracts_lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Contract files or folders (default: the configured contracts)."),
    ] = None,
) -> None:
    """Validate contracts: the ODCS v3 JSON Schema, then energylake's governance rules.

    Exits 1 when any contract has an issue; each line names the file, the property path,
    what is wrong, and a stable code.
    """
    settings = _settings()
    targets = paths or [_contracts_dir(settings)]
    missing = [p for p in targets if not p.exists()]
    if missing:
        _error(f"no such file or folder: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    files = [f for p in targets for f in (sorted(p.glob("*.odcs.yaml")) if p.is_dir() else [p])]
    if not files:
        _error(f"no *.odcs.yaml contracts under {', '.join(map(str, targets))}")
        raise typer.Exit(2)
    issues = lint_paths(files)
    for issue in issues:  # one plain line each: grep-able, never wrapped
        typer.echo(str(issue), err=True)
    if issues:
        typer.echo(
            f"{len(issues)} issue(s) in {len({i.file for i in issues})} "
            f"of {len(files)} contract(s)",
            err=True,
        )
        raise typer.Exit(1)
    console.print(f"{len(files)} contract(s) OK")


@contracts_app.command("list")
def contracts_list() -> None:
    """List the datasets with their contract version, retention and field counts."""
    registry = load_registry(_contracts_dir(_settings()))
    console.print(render.contracts_table(registry))


@contracts_app.command("purposes")
def contracts_purposes() -> None:
    """The purposes of the privacy policy, the only ones a field may be granted to."""
    vocab = load_vocabulary()
    table = Table("purpose", "title", "privacy policy, section 3", title="purposes")
    for pid, spec in vocab.purposes.items():
        table.add_row(pid, spec["title"], spec["policy"])
    console.print(table)


@contracts_app.command("show")
def contracts_show(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. meter_readings.")],
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", "-p", help="Show the plan for this purpose (field by field)."),
    ] = None,
) -> None:
    """Show a contract's fields, or with --purpose what that purpose sees of each field."""
    registry = load_registry(_contracts_dir(_settings()))
    try:
        contract = registry.get(dataset)
        if purpose is None:
            console.print(render.fields_table(contract))
            return
        plan = plan_for(contract, purpose, registry.vocabulary)
    except (ContractNotFoundError, UnknownPurposeError) as exc:
        _error(f"{exc}")
        raise typer.Exit(2) from exc
    console.print(render.plan_table(contract, plan))


# --- simulate -----------------------------------------------------------------------------
@app.command()
def simulate(
    clients: Clients = 2,
    branches: PerClient = 5,
    days: Days = 1,
    start: Start = "2026-11-16",
    seed: Seed = 42,
    cadence: Cadence = 60,
    faults: Faults = "default",
    fault: FaultOverrides = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default DATA_DIR/sim).")] = None,
    landing: Annotated[
        bool,
        typer.Option(
            "--landing/--ndjson",
            help="Write telemetry as landing-log segments (DATA_DIR/landing) instead of NDJSON.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Simulate a fleet (meters, DG sets, rooftop solar) with faults and a truth manifest."""
    from simulator.run import simulate as run_simulation

    settings = _settings(data_dir=data_dir)
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
    if landing:
        from simulator.landing import simulate_to_landing

        result = simulate_to_landing(config, out or settings.sim_dir, settings.landing)
        telemetry = render.landing_written(result.out, settings.landing)
    else:
        result = run_simulation(config, out or settings.sim_dir)
        telemetry = str(result.telemetry_dir)
    from pipelines.provision import CREDENTIALS_NAME, write_credentials

    # The fleet's clear device secrets (0600), as onboarding would export them for
    # `energylake devices provision --credentials`.
    write_credentials(result.out / CREDENTIALS_NAME, result.fleet.tokens)
    console.print(render.simulation_summary(result.manifest, result.out, telemetry=telemetry))


# --- process ------------------------------------------------------------------------------
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
    from pipelines.batch_hooks import wait_for_data_docs

    settings = _settings(data_dir=data_dir, lake_uri=lake_uri, landing_dir=landing_dir)
    configure_logging(settings.log_level)
    beam_args = list(ctx.args)
    # Everything this command writes is durable before it returns (fsync, Delta commit),
    # and a Data Docs build still running is waited for: the interpreter's own teardown of
    # Beam's ~2,400 modules may be skipped.
    _FAST_EXIT.append(True)
    try:
        _process(settings, runner, beam_args, follow=follow, max_segments=max_segments)
    finally:
        wait_for_data_docs()


def _process(
    settings: Settings,
    runner: str,
    beam_args: list[str],
    *,
    follow: bool,
    max_segments: int | None,
) -> None:
    from pipelines.process import ProcessError, process_once
    from pipelines.process import follow as follow_batches

    try:
        if follow:
            follow_batches(
                settings,
                runner=runner,
                beam_args=beam_args,
                on_batch=lambda r: console.print(render.batch_line(r)),
            )
            return
        report = process_once(
            settings, runner=runner, beam_args=beam_args, max_segments=max_segments
        )
    except ProcessError as exc:
        _error(f"{exc}")
        raise typer.Exit(2) from exc
    if report is None:
        console.print(f"nothing to process: no closed segments in {settings.landing / 'closed'}")
        return
    console.print(render.batch_report(report))


# --- reference ----------------------------------------------------------------------------
@reference_app.command("load")
def reference_load(
    directory: Annotated[Path, typer.Argument(help="Folder of <dataset>.parquet files.")],
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Load reference data into its Delta tables under its contracts (idempotent)."""
    from lake.errors import LakeError
    from lake.reference import load_reference

    settings = _settings(data_dir=data_dir, lake_uri=lake_uri)
    if not directory.is_dir():
        _error(f"no such folder: {directory}")
        raise typer.Exit(2)
    try:
        loads = load_reference(
            settings.lake_store(), directory, load_registry(_contracts_dir(settings))
        )
    except LakeError as exc:
        _error(f"{exc}")
        raise typer.Exit(2) from exc
    from pipelines.cli_lineage import emit_reference_lineage

    emit_reference_lineage(settings, directory, loads)
    console.print(render.reference_table(loads))


# --- lake ---------------------------------------------------------------------------------
@lake_app.command("compact")
def lake_compact(
    min_files: Annotated[
        int, typer.Option(help="Compact partitions holding at least this many files.")
    ] = 2,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
    lake_uri: Annotated[str | None, typer.Option(help="Override lake_uri (path or s3://).")] = None,
) -> None:
    """Compact the hot partitions of every table (one commit per table; readers unaffected)."""
    from pipelines.compaction import compact_all

    settings = _settings(data_dir=data_dir, lake_uri=lake_uri)
    console.print(render.compact_table(compact_all(settings, min_files=min_files)))


@app.command()
def demo(
    clients: Annotated[int, typer.Option(help="Number of clients.")] = 2,
    branches: Annotated[int, typer.Option(help="Branches per client.")] = 5,
    days: Annotated[int, typer.Option(help="Days to simulate.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed.")] = 42,
    dataset: Annotated[
        str, typer.Option(help="Dataset whose purpose views are shown.")
    ] = "work_orders",
    purposes: Annotated[
        str, typer.Option(help="Three purposes to compare, comma-separated.")
    ] = "field_service,predictive_maintenance,benchmarking",
    via: Annotated[
        str,
        typer.Option(
            help="network: Mosquitto + gateway + processor, published over MQTT and HTTP; "
            "landing: write landing segments directly (no services)."
        ),
    ] = "network",
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """The main job end to end on embedded defaults: a private Mosquitto, the gateway and the
    processor; the simulator publishes a day over MQTT and HTTP; then what landed, its
    lineage, and what each purpose sees."""
    from pipelines.demo import run_demo
    from pipelines.stack import StackError

    settings = _settings(data_dir=data_dir)
    try:
        run_demo(
            settings,
            console,
            clients=clients,
            branches=branches,
            days=days,
            seed=seed,
            dataset=dataset,
            purposes=[p.strip() for p in purposes.split(",") if p.strip()],
            via=via,
        )
    except (ContractNotFoundError, UnknownPurposeError, ValueError, StackError) as exc:
        _error(f"{exc}")
        raise typer.Exit(2) from exc


# Command modules register themselves here (one line each).
from pipelines import cli_lineage  # noqa: E402

cli_lineage.register(app)
from pipelines import cli_quality  # noqa: E402

cli_quality.register(app)
from pipelines import cli_devices  # noqa: E402

cli_devices.register(app)
from pipelines import cli_publish  # noqa: E402

cli_publish.register(app)
from pipelines import cli_gateway  # noqa: E402

cli_gateway.register(app)
from pipelines import cli_status  # noqa: E402

cli_status.register(app)


_FAST_EXIT: list[bool] = []


def main() -> None:
    """Console entry point."""
    private_files()
    try:
        app()
    except SystemExit as exc:
        if not _FAST_EXIT:
            raise
        code = exc.code
    else:
        if not _FAST_EXIT:
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
