"""One retention pass (``retention.apply``) over a simulated year for 100 branches (the
lake of ``bench.year_lake``, shared with ``bench.erasure``), against plain polars moving
the same readings, measured in the same run.

    .venv/bin/python -m bench.retention [--branches 100] [--days 365] [--interval-min 15]

The pass runs at the moment the readings' archive cut-off falls half way through the year:
half the readings move to the archive tier (two commits per hot table, the hot files
rewritten by delta-rs' delete); quarantine rows past 30 days move too, those past 90 are
deleted and purged. Printed: seconds, rows moved and deleted, files and bytes written and
removed, rows per second. The baseline: polars scanning the same hot readings files for
the same rows (``ts`` before the cut-off) and writing them as Parquet (zstd), one file per
month: what an engineer would write without the platform (no commit, no delete from hot,
no idempotence, no quarantine). Ratio: platform seconds / baseline seconds. The last line
is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from bench.year_lake import DATASET, START, TENANTS, build_year_lake
from contracts import load_registry
from lake.layout import table_rel
from lake.storage import Store
from retention.apply import apply_retention
from retention.plan import cutoffs


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
    cached = build_year_lake(args.root, args.branches, args.days, args.interval_min)
    generate_s = time.perf_counter() - t0
    contract = load_registry().get(DATASET)
    now = START + timedelta(days=args.days / 2 + contract.retention.hot_days)
    cut = cutoffs(contract.retention, now)

    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        work = Path(tmp) / "lake"
        shutil.copytree(cached / "lake", work)
        store = Store.from_uri(work)
        rels = [table_rel(t, DATASET) for t in TENANTS]
        hot_bytes = sum(_tree_bytes(work / rel) for rel in rels)

        # baseline: plain polars, the same rows, Parquet per month
        out = Path(tmp) / "baseline"
        out.mkdir()
        t1 = time.perf_counter()
        files = [
            str(p)
            for rel in rels
            for p in (work / rel).rglob("*.parquet")
            if "_delta_log" not in p.parts
        ]
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
    readings = sum(t.rows_archived for t in report.tables if t.dataset == DATASET)
    result = {
        "branches": args.branches,
        "days": args.days,
        "interval_min": args.interval_min,
        "hot_table_bytes_before": hot_bytes,
        "generate_s": round(generate_s, 2),
        "retention_s": round(pass_s, 2),
        "rows_moved": totals["rows_archived"],
        "readings_moved": readings,
        "rows_deleted": totals["rows_deleted"],
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
    if readings != baseline_rows:
        raise SystemExit(f"readings differ: retention {readings}, polars {baseline_rows}")
    print(
        f"retention pass: {pass_s:.2f} s, {totals['rows_archived']:,} rows moved "
        f"({readings:,} readings), {totals['rows_deleted']:,} deleted, "
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
