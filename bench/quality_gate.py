"""Benchmark: the quality gate's cost against the batch it guards, measured in one run.

Simulates ``--clients x --branches`` for one day into landing segments (about 100k records
with the defaults), loads the reference data, then in this process:

1. runs ``process_once`` (the batch, gate off) and times it;
2. runs the gate (``transforms.quality.run_gate``) on every (tenant, dataset) frame the
   batch published -- once cold (GE import and context, suites built) and ``--repeat``
   times warm, as a long-running ``process --follow`` would pay it;
3. prints the gate's time as a share of the batch time (the issue's goal: <= 20 %), and
   the split between the polars metrics, pandas conversion and GE validation.

``--profile`` runs one warm gate pass under cProfile and prints the hot spots.

    .venv/bin/python -m bench.quality_gate [--clients 2 --branches 15 --repeat 3 --profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import polars as pl

from contracts import load_registry
from lake.delta import read_table, table_exists
from lake.layout import table_rel, tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import load_devices, process_once
from pipelines.settings import load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

READINGS = ("meter_readings", "dg_readings", "solar_readings")


def _frames(store: Store) -> list[tuple[str, str, pl.DataFrame]]:
    registry = load_registry()
    out = []
    for tenant in tenants(store):
        for dataset in READINGS:
            rel = table_rel(tenant, dataset)
            if table_exists(store, rel):
                frame = pl.from_arrow(read_table(store, rel))
                assert isinstance(frame, pl.DataFrame)
                out.append((tenant, dataset, frame.select(registry.get(dataset).field_names)))
    return out


def _branches(store: Store) -> pl.DataFrame:
    parts = []
    for tenant in tenants(store):
        rel = table_rel(tenant, "branches")
        if table_exists(store, rel):
            frame = pl.from_arrow(read_table(store, rel))
            assert isinstance(frame, pl.DataFrame)
            parts.append(frame)
    return pl.concat(parts)


def _gate_pass(
    frames: list[tuple[str, str, pl.DataFrame]],
    devices: pl.DataFrame,
    branches: pl.DataFrame,
    batch_no: int,
) -> tuple[float, list[str]]:
    from transforms.quality import GateBatch, run_gate

    registry = load_registry()
    started = time.perf_counter()
    lines = []
    for tenant, dataset, frame in frames:
        result = run_gate(
            registry.get(dataset),
            frame,
            devices,
            GateBatch("bench", batch_no),
            tenant=tenant,
            branches=branches,
        )
        lines.append(result.summary())
    return time.perf_counter() - started, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--branches", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        settings = load_settings(data_dir=Path(tmp))
        config = SimConfig(clients=args.clients, branches=args.branches, days=1, seed=args.seed)
        result = simulate_to_landing(config, settings.sim_dir, settings.landing)
        store = Store.from_uri(settings.lake)
        load_reference(store, result.reference_dir, load_registry())

        started = time.perf_counter()
        report = process_once(settings)
        batch_s = time.perf_counter() - started
        assert report is not None
        records = report.records_out
        rows = sum(report.rows.values())

        frames = _frames(store)
        devices = load_devices(store)
        branches = _branches(store)
        cold_s, _ = _gate_pass(frames, devices, branches, 1)
        warm = []
        lines: list[str] = []
        for n in range(args.repeat):
            seconds, lines = _gate_pass(frames, devices, branches, 2 + n)
            warm.append(seconds)
        warm_s = min(warm)

        print(f"records in batch         {records:>10,}  (rows published {rows:,})")
        print(f"tables gated             {len(frames):>10}")
        print(f"batch (process_once)     {batch_s:>10.3f} s  gate off")
        print(f"gate, cold (1st batch)   {cold_s:>10.3f} s  {100 * cold_s / batch_s:5.1f} %")
        print(
            f"gate, warm (min of {args.repeat})   {warm_s:>10.3f} s  "
            f"{100 * warm_s / batch_s:5.1f} %  (goal <= 20 %)"
        )
        print(f"gate throughput (warm)   {rows / warm_s:>10,.0f} rows/s")
        for line in lines:
            print("  " + line)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            _gate_pass(frames, devices, branches, 99)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue())


if __name__ == "__main__":
    main()
