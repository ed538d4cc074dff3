"""Benchmark: the quality gate's cost against the batch it guards, measured in one run.

Simulates ``--clients x --branches`` for one day into landing segments (about 100k records
with the defaults), loads the reference data, then in this process:

1. the whole batch, end to end, on fresh copies of the same segments: ``process_once``
   with the gate on (as shipped: validation, the quality_results commits, lineage
   assertions, Data Docs when due) and with it off, alternately, ``--repeat`` times each.
   The first gate-on batch of the process is reported apart (GE's import and context);
   a long-running ``process --follow`` pays it once;
2. the gate alone (``transforms.quality.run_gate``) on every (tenant, dataset) frame the
   batch published, warm: its throughput;
3. prints the gate's share of the batch (the issue's goal: <= 20 %).

``--profile`` runs one warm gate pass under cProfile and prints the hot spots.

    .venv/bin/python -m bench.quality_gate [--clients 2 --branches 15 --repeat 3 --profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from contracts import load_registry
from lake.delta import read_table, table_exists
from lake.layout import table_rel, tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines.batch_hooks import wait_for_data_docs
from pipelines.process import load_devices, process_once
from pipelines.settings import load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing


def _frames(store: Store) -> list[tuple[str, str, pl.DataFrame]]:
    registry = load_registry()
    out = []
    for tenant in tenants(store):
        for dataset in registry.readings_datasets:
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


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--branches", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        pristine = Path(tmp) / "pristine"
        settings = load_settings(data_dir=pristine)
        config = SimConfig(clients=args.clients, branches=args.branches, days=1, seed=args.seed)
        result = simulate_to_landing(config, settings.sim_dir, settings.landing)
        load_reference(Store.from_uri(settings.lake), result.reference_dir, load_registry())

        def batch(gate: bool, n: int, docs_every_s: float = 0.0) -> tuple[float, float, Any]:
            work = Path(tmp) / f"run-{n}"
            shutil.copytree(pristine, work)
            run = load_settings(
                data_dir=work, quality_gate=gate, quality_docs_interval_s=docs_every_s
            )
            started = time.perf_counter()
            report = process_once(run)
            wait_for_data_docs()  # the worst case: its rendering counted in the batch
            seconds = time.perf_counter() - started
            assert report is not None
            return seconds, report.gate_seconds, (report, Store.from_uri(run.lake), work)

        cold_s, cold_gate, (_, _, cold_dir) = batch(True, 0)
        # Data Docs are rebuilt at most every quality_docs_interval_s (default 60 s): "gate
        # on" rebuilds them in every batch (the worst case); "between rebuilds" finds a
        # fresh site (the cold run's) and skips them, as most batches of a follow do.
        shutil.copytree(cold_dir / "quality", pristine / "quality")
        on: list[tuple[float, float]] = []
        steady: list[tuple[float, float]] = []
        off: list[float] = []
        kept: Any = None
        for n in range(args.repeat):
            s_off, _, kept = batch(False, 3 * n + 1)
            off.append(s_off)
            s_on, gate_s, _ = batch(True, 3 * n + 2)
            on.append((s_on, gate_s))
            s_steady, gate_s, _ = batch(True, 3 * n + 3, docs_every_s=1e9)
            steady.append((s_steady, gate_s))
        report, store, _ = kept
        records = report.records_out
        rows = sum(report.rows.values())
        off_s = min(off)
        on_s, on_gate = min(on)
        steady_s, _ = min(steady)
        share = (on_s - off_s) / on_s
        steady_share = (steady_s - off_s) / steady_s

        frames = _frames(store)
        devices = load_devices(store)
        branches = _branches(store)
        warm_s, lines = _gate_pass(frames, devices, branches, 99)

        print(f"records in batch            {records:>10,}  (rows published {rows:,})")
        print(f"tables gated                {len(frames):>10}")
        print(f"batch, gate off (min of {args.repeat})  {off_s:>8.3f} s   runs: {_list(off)}")
        print(
            f"batch, gate on  (min of {args.repeat})  {on_s:>8.3f} s   runs: "
            f"{_list([s for s, _ in on])}; validation {on_gate:.3f} s"
        )
        print(
            f"batch, gate on, between Data Docs rebuilds (min of {args.repeat})  "
            f"{steady_s:.3f} s   runs: {_list([s for s, _ in steady])}"
        )
        print(
            f"gate's share, Data Docs rebuilt   {100 * share:>5.1f} %   (batch on - batch off) "
            "/ batch on; goal <= 20 %"
        )
        print(f"gate's share, between rebuilds    {100 * steady_share:>5.1f} %")
        print(f"validation only             {100 * on_gate / on_s:>9.1f} %   of the gate-on batch")
        print(
            f"first gate-on batch         {cold_s:>10.3f} s   (validation {cold_gate:.3f} s: "
            "GE import and context, once per process)"
        )
        print(f"gate alone, warm            {warm_s:>10.3f} s   {rows / warm_s:,.0f} rows/s")
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
