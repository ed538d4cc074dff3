"""One retention pass (``retention.apply``) over a year of meter readings, against plain
polars moving the same rows, measured in the same run.

    .venv/bin/python -m bench.retention [--branches 100] [--days 365] [--interval-min 15]

The lake: one tenant, ``--branches`` branches with one meter each, a reading every
``--interval-min`` minutes for ``--days`` days, written directly as the pipeline writes
them (``lake.delta``: one file per branch and month, the contract's schema; realistic
values: a daily load curve, energy counters that only grow). It is generated once per
set of arguments under the temp folder (``energylake-bench-retention-*``) and copied
before each measured pass, so a rerun starts at once.

The pass runs at the moment the archive cut-off falls half way through the year: half
the rows move to the archive tier (two commits per hot table, the hot files rewritten
by delta-rs' delete). Printed: seconds, rows moved, files and bytes written and removed,
and rows per second. The baseline: polars scanning the same hot files for the same rows
(``ts`` before the cut-off) and writing them as Parquet (zstd), one file per month: what
an engineer would write without the platform (no commit, no delete from hot, no
idempotence). Ratio: platform seconds / baseline seconds. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from contracts import load_registry
from lake.delta import commit_files, ensure_table, stats_columns, write_data_file
from lake.layout import table_rel
from lake.storage import Store
from retention.apply import apply_retention
from retention.plan import cutoffs

TENANT = "bench"
DATASET = "meter_readings"
START = datetime(2025, 1, 1, tzinfo=UTC)


def _month_rows(
    branch: int, month_start: datetime, month_end: datetime, interval_s: int, seq0: int
) -> pa.Table:
    contract = load_registry().get(DATASET)
    seconds = np.arange(
        int(month_start.timestamp()), int(month_end.timestamp()), interval_s, dtype=np.int64
    )
    n = len(seconds)
    rng = np.random.default_rng(branch * 1000 + month_start.month)
    hour = (seconds % 86400) / 3600
    load = 20 + 15 * np.sin((hour - 6) / 24 * 2 * np.pi).clip(0) + rng.normal(0, 1.5, n)
    phase = [load / 3 + rng.normal(0, 0.3, n) for _ in range(3)]
    volts = [230 + rng.normal(0, 2, n) for _ in range(3)]
    energy = (seq0 * interval_s / 3600 * 20) + np.cumsum(load * interval_s / 3600)
    ts = pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
    month = month_start.strftime("%Y-%m")
    columns: dict[str, Any] = {
        "client_id": pa.array([TENANT] * n),
        "branch_id": pa.array([f"b{branch:03d}"] * n),
        "device_id": pa.array([f"em-{branch:06x}"] * n),
        "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
        "ts": ts,
        "received_at": pa.array((seconds + 2) * 1_000_000, pa.timestamp("us", tz="UTC")),
        "event_month": pa.array([month] * n),
        "quality_flags": pa.nulls(n, pa.list_(pa.string())),
        "voltage_l1_v": volts[0],
        "voltage_l2_v": volts[1],
        "voltage_l3_v": volts[2],
        "current_l1_a": phase[0] * 1000 / 230,
        "current_l2_a": phase[1] * 1000 / 230,
        "current_l3_a": phase[2] * 1000 / 230,
        "power_l1_kw": phase[0],
        "power_l2_kw": phase[1],
        "power_l3_kw": phase[2],
        "power_kw": load,
        "apparent_power_kva": load / 0.95,
        "reactive_power_kvar": load * 0.33,
        "power_factor": np.full(n, 0.95),
        "frequency_hz": 50 + rng.normal(0, 0.02, n),
        "energy_import_kwh": energy,
        "energy_export_kwh": np.zeros(n),
        "boot": pa.array(np.zeros(n, dtype=np.int64)),
    }
    return pa.table(columns).cast(contract.arrow_schema())


def build_lake(root: Path, branches: int, days: int, interval_min: int) -> Path:
    """The cached lake for these arguments (generated on first use)."""
    lake = root / f"energylake-bench-retention-{branches}-{days}-{interval_min}"
    done = lake / "READY"
    if done.exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    store = Store.from_uri(lake / "lake")
    contract = load_registry().get(DATASET)
    rel = table_rel(TENANT, DATASET)
    ensure_table(store, rel, contract)
    end = START + timedelta(days=days)
    columns = stats_columns(contract)
    for branch in range(branches):
        files = []
        month_start, seq = START, 0
        while month_start < end:
            nxt = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
            rows = _month_rows(branch, month_start, min(nxt, end), interval_min * 60, seq)
            seq += rows.num_rows
            values = {"branch_id": f"b{branch:03d}", "event_month": month_start.strftime("%Y-%m")}
            name = f"part-bench-{branch:03d}-{month_start:%Y%m}.zstd.parquet"
            files.append(write_data_file(store, rel, rows, values, name, stats_columns=columns))
            month_start = nxt
        commit_files(store, rel, contract, files, app_id="bench", version=branch, metadata={})
    done.write_text("ok")
    return lake


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branches", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval-min", type=int, default=15)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    cached = build_lake(args.root, args.branches, args.days, args.interval_min)
    generate_s = time.perf_counter() - t0
    contract = load_registry().get(DATASET)
    now = START + timedelta(days=args.days / 2 + contract.retention.hot_days)
    cut = cutoffs(contract.retention, now)

    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        work = Path(tmp) / "lake"
        shutil.copytree(cached / "lake", work)
        store = Store.from_uri(work)
        rel = table_rel(TENANT, DATASET)
        hot_bytes = _tree_bytes(work / rel)

        # baseline: plain polars, the same rows, Parquet per month
        out = Path(tmp) / "baseline"
        out.mkdir()
        t1 = time.perf_counter()
        files = [str(p) for p in (work / rel).rglob("*.parquet") if "_delta_log" not in p.parts]
        frame = (
            pl.scan_parquet(files, hive_partitioning=False)
            .filter(pl.col("ts") < cut.archive_before)
            .collect()
        )
        frame = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m").alias("basis_month"))
        for (month,), part in frame.partition_by("basis_month", as_dict=True).items():
            part.drop("basis_month").write_parquet(out / f"{month}.parquet", compression="zstd")
        baseline_s = time.perf_counter() - t1
        baseline_rows = frame.height
        baseline_bytes = _tree_bytes(out)

        t2 = time.perf_counter()
        report = apply_retention(store, load_registry(), now, apply=True)
        pass_s = time.perf_counter() - t2
    totals = report.totals()
    result = {
        "branches": args.branches,
        "days": args.days,
        "interval_min": args.interval_min,
        "hot_table_bytes_before": hot_bytes,
        "generate_s": round(generate_s, 2),
        "retention_s": round(pass_s, 2),
        "rows_moved": totals["rows_archived"],
        "files_written": totals["files_written"],
        "bytes_written": totals["bytes_written"],
        "files_removed": totals["files_removed"],
        "bytes_removed": totals["bytes_removed"],
        "rows_per_s": round(totals["rows_archived"] / pass_s) if pass_s else None,
        "baseline_s": round(baseline_s, 2),
        "baseline_rows": baseline_rows,
        "baseline_bytes_written": baseline_bytes,
        "ratio_retention_to_baseline": round(pass_s / baseline_s, 2) if baseline_s else None,
    }
    if totals["rows_archived"] != baseline_rows:
        raise SystemExit(
            f"rows differ: retention {totals['rows_archived']}, polars {baseline_rows}"
        )
    print(
        f"retention pass: {pass_s:.2f} s, {totals['rows_archived']:,} rows moved, "
        f"{totals['files_written']} files / {totals['bytes_written']:,} bytes written, "
        f"{totals['files_removed']} files / {totals['bytes_removed']:,} bytes removed"
    )
    print(
        f"baseline (polars): {baseline_s:.2f} s, {baseline_rows:,} rows, {baseline_bytes:,} bytes"
    )
    print(f"ratio retention / baseline: {result['ratio_retention_to_baseline']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
