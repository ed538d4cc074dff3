"""Benchmark: the time grain of the lake's partitions, day against month.

The readings tables are partitioned by ``branch_id`` and a time grain. This writes the same
synthetic meter-like rows (``--branches`` x ``--devices`` x ``--days`` at ``--cadence-s``) as
two Delta tables with ``deltalake.write_deltalake``, one partitioned by (branch_id,
event_day), one by (branch_id, event_month), appending ``--batches-per-day`` batches per day
as the pipeline does, then compacts both (``DeltaTable.optimize.compact()``) and measures:
active files and bytes before and after compaction, write and compaction time, and DuckDB
``delta_scan`` query time (fastest of ``--runs``) before and after compaction for

    (a) one branch, one day    (b) one branch, one month
    (c) all branches, one day  (d) a full-scan aggregate

Queries filter on ``branch_id`` and ``ts`` (what an analyst writes), never on the partition
column. Every figure is measured in this run.

    .venv/bin/python -m bench.partition_grain [--branches 50 --devices 3 --days 60]
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, WriterProperties, write_deltalake

START = datetime(2026, 9, 1, tzinfo=UTC)
GRAINS = {"day": ("event_day", "%Y-%m-%d"), "month": ("event_month", "%Y-%m")}


@dataclass
class GrainResult:
    grain: str
    rows: int = 0
    write_s: float = 0.0
    first_append_s: float = 0.0
    last_append_s: float = 0.0
    files_before: int = 0
    bytes_before: int = 0
    compact_s: float = 0.0
    files_after: int = 0
    bytes_after: int = 0
    queries_before: dict[str, float] = field(default_factory=dict)
    queries_after: dict[str, float] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)


def batches(
    branches: int, devices: int, days: int, cadence_s: int, per_day: int, seed: int
) -> Iterator[pa.Table]:
    """Meter-like rows, ``per_day`` batches per simulated day (all branches in each)."""
    rng = np.random.default_rng(seed)
    branch_ids = np.array([f"branch-{b:04d}" for b in range(branches)])
    per_slice = 86400 // cadence_s // per_day
    n_dev = branches * devices
    dev_branch = np.repeat(branch_ids, devices)
    dev_ids = np.array([f"em-{d:08x}" for d in range(n_dev)])
    rated = rng.uniform(10, 200, n_dev)
    energy = rng.uniform(1e3, 1e5, n_dev)
    seq = np.zeros(n_dev, dtype=np.int64)
    for day in range(days):
        for part in range(per_day):
            t0 = START + timedelta(days=day, seconds=part * per_slice * cadence_s)
            offsets = np.arange(per_slice, dtype=np.int64) * cadence_s * 1_000_000
            base_us = int(t0.timestamp() * 1_000_000)
            ts = np.tile(base_us + offsets, n_dev)
            load = rng.uniform(0.1, 0.9, (n_dev, per_slice)) * rated[:, None]
            kwh = energy[:, None] + np.cumsum(load * cadence_s / 3600, axis=1)
            energy = kwh[:, -1]
            seqs = (seq[:, None] + np.arange(1, per_slice + 1, dtype=np.int64)[None, :]).ravel()
            seq = seq + per_slice
            n = n_dev * per_slice
            when = pa.array(ts, pa.timestamp("us", tz="UTC"))
            volts = rng.normal(230, 4, (3, n))
            yield pa.table(
                {
                    "branch_id": np.repeat(dev_branch, per_slice),
                    "device_id": np.repeat(dev_ids, per_slice),
                    "seq": seqs,
                    "ts": when,
                    "voltage_l1_v": volts[0].round(1),
                    "voltage_l2_v": volts[1].round(1),
                    "voltage_l3_v": volts[2].round(1),
                    "power_kw": load.ravel().round(3),
                    "power_factor": rng.uniform(0.8, 1.0, n).round(3),
                    "frequency_hz": rng.normal(50, 0.05, n).round(2),
                    "energy_import_kwh": kwh.ravel().round(3),
                    "event_day": np.full(n, t0.strftime("%Y-%m-%d")),
                    "event_month": np.full(n, t0.strftime("%Y-%m")),
                }
            )


def active(table: DeltaTable) -> tuple[int, int]:
    """(active files, their bytes)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.num_rows, int(sum(actions.column("size_bytes").to_pylist()))


def connect() -> Any:
    root = importlib.resources.files("duckdb_extension_delta")
    path = root / "extensions" / f"v{duckdb.__version__}" / "delta.duckdb_extension"
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    con.execute(f"LOAD '{path}'")
    return con


SQL = {
    "a: 1 branch, 1 day": (
        "SELECT count(*), avg(power_kw), max(energy_import_kwh) - min(energy_import_kwh) "
        "FROM t WHERE branch_id = ? AND ts >= ? AND ts < ?"
    ),
    "b: 1 branch, 1 month": (
        "SELECT count(*), avg(power_kw), max(energy_import_kwh) - min(energy_import_kwh) "
        "FROM t WHERE branch_id = ? AND ts >= ? AND ts < ?"
    ),
    "c: all branches, 1 day": (
        "SELECT branch_id, count(*), avg(power_kw), "
        "max(energy_import_kwh) - min(energy_import_kwh) "
        "FROM t WHERE ts >= ? AND ts < ? GROUP BY branch_id"
    ),
    "d: full scan": (
        "SELECT branch_id, count(*), avg(power_kw), "
        "max(energy_import_kwh) - min(energy_import_kwh) FROM t GROUP BY branch_id"
    ),
}


def queries(days: int, branches: int) -> dict[str, tuple[str, list[Any]]]:
    """The four queries with their parameters (one branch in the middle, day 15, the first
    calendar month)."""
    day = START + timedelta(days=min(days - 1, 14))
    month_end = (START + timedelta(days=32)).replace(day=1)
    if (month_end - START).days > days:
        month_end = START + timedelta(days=days)
    branch = f"branch-{branches // 2:04d}"
    next_day = day + timedelta(days=1)
    params: list[list[Any]] = [
        [branch, day, next_day],
        [branch, START, month_end],
        [day, next_day],
        [],
    ]
    return {name: (SQL[name], p) for name, p in zip(SQL, params, strict=True)}


def time_queries(
    paths: dict[str, Path], sql: dict[str, tuple[str, list[Any]]], runs: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Fastest of ``runs`` of each query on each table, the tables taking turns run by run
    (so both see the same load), after one warm-up; and each query's answer per table.
    The fastest, not the median: other work on a shared machine only ever adds time."""
    con = connect()
    times: dict[str, dict[str, list[float]]] = {g: {n: [] for n in sql} for g in paths}
    answers: dict[str, dict[str, Any]] = {g: {} for g in paths}
    try:
        for grain, path in paths.items():
            con.execute(f"CREATE VIEW t_{grain} AS SELECT * FROM delta_scan('{path}')")  # noqa: S608
        for name, (query, params) in sql.items():
            for grain in paths:
                text = query.replace(" FROM t ", f" FROM t_{grain} ")
                answers[grain][name] = sorted(con.execute(text, params).fetchall())
            for _ in range(runs):
                for grain in paths:
                    text = query.replace(" FROM t ", f" FROM t_{grain} ")
                    t0 = time.perf_counter()
                    con.execute(text, params).fetchall()
                    times[grain][name].append(time.perf_counter() - t0)
    finally:
        con.close()
    fastest = {g: {n: min(v) for n, v in by.items()} for g, by in times.items()}
    return fastest, answers


def run_all(grains: list[str], root: Path, args: argparse.Namespace) -> list[GrainResult]:
    """Append every batch to one table per grain (interleaved, so both see the same machine),
    then query, compact and query each."""
    results = {g: GrainResult(g) for g in grains}
    props = WriterProperties(compression="ZSTD")
    appends: dict[str, list[float]] = {g: [] for g in grains}
    for table in batches(
        args.branches, args.devices, args.days, args.cadence_s, args.batches_per_day, args.seed
    ):
        for grain in grains:
            column, _ = GRAINS[grain]
            part = table.drop_columns([c for c, _ in GRAINS.values() if c != column])
            t0 = time.perf_counter()
            write_deltalake(
                str(root / f"by_{grain}"),
                part,
                mode="append",
                partition_by=["branch_id", column],
                writer_properties=props,
            )
            appends[grain].append(time.perf_counter() - t0)
            results[grain].rows += part.num_rows
    print("written", flush=True)
    sql = queries(args.days, args.branches)
    paths = {g: root / f"by_{g}" for g in grains}
    for grain, result in results.items():
        result.write_s = sum(appends[grain])
        result.first_append_s = appends[grain][0]
        result.last_append_s = appends[grain][-1]
        result.files_before, result.bytes_before = active(DeltaTable(str(paths[grain])))
    before, _ = time_queries(paths, sql, args.runs)
    print("queried before compaction", flush=True)
    for grain, result in results.items():
        result.queries_before = before[grain]
        dt = DeltaTable(str(paths[grain]))
        t0 = time.perf_counter()
        dt.optimize.compact(writer_properties=props)
        result.compact_s = time.perf_counter() - t0
        result.files_after, result.bytes_after = active(DeltaTable(str(paths[grain])))
    print("compacted", flush=True)
    after, answers = time_queries(paths, sql, args.runs)
    for grain, result in results.items():
        result.queries_after = after[grain]
        result.answers = answers[grain]
    return list(results.values())


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _close(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Same rows; floats equal to 1e-9 relative (sums depend on the order of reading)."""
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if abs(x - y) > 1e-9 * max(abs(x), abs(y), 1.0):
                    return False
            elif x != y:
                return False
    return True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def report(results: list[GrainResult], args: argparse.Namespace) -> str:
    head = ["", *[f"by branch, {r.grain}" for r in results]]
    rows = [
        ["rows", *[f"{r.rows:,}" for r in results]],
        ["appends", *[f"{args.days * args.batches_per_day}" for _ in results]],
        ["write s (all appends)", *[f"{r.write_s:.1f}" for r in results]],
        [
            "first / last append s",
            *[f"{r.first_append_s:.2f} / {r.last_append_s:.2f}" for r in results],
        ],
        ["files before compaction", *[f"{r.files_before:,}" for r in results]],
        ["MB before", *[f"{r.bytes_before / 2**20:.1f}" for r in results]],
        ["rows per file before", *[f"{r.rows / r.files_before:,.0f}" for r in results]],
        ["compaction s", *[f"{r.compact_s:.1f}" for r in results]],
        ["files after compaction", *[f"{r.files_after:,}" for r in results]],
        ["MB after", *[f"{r.bytes_after / 2**20:.1f}" for r in results]],
    ]
    names = list(results[0].queries_before)
    for name in names:
        rows.append(
            [
                f"query {name} ms (before / after)",
                *[f"{_ms(r.queries_before[name])} / {_ms(r.queries_after[name])}" for r in results],
            ]
        )
    by = {r.grain: r for r in results}
    out = [
        f"bench.partition_grain  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, duckdb {duckdb.__version__}",
        f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"rows: {args.branches} branches x {args.devices} devices x {args.days} days at "
        f"{args.cadence_s} s, {args.batches_per_day} append(s) per day; queries: fastest of "
        f"{args.runs} runs after a warm-up, the tables taking turns",
        "",
        _table([head, *rows]),
    ]
    if "day" in by and "month" in by:
        day, month = by["day"], by["month"]
        out.append("")
        out.append("after compaction, month / day query time (below 1: month faster):")
        for name in names:
            ratio = month.queries_after[name] / day.queries_after[name]
            out.append(f"  {name}: {ratio:.2f}")
        same = all(_close(day.answers[n], month.answers[n]) for n in names)
        out.append(f"both tables give the same answers: {'yes' if same else 'NO'}")
        out.append(
            f"files after compaction: day {day.files_after:,}, month {month.files_after:,} "
            f"({day.files_after / max(month.files_after, 1):.1f}x); "
            f"write time month / day {month.write_s / day.write_s:.2f}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="partition time grain: day vs month")
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--devices", type=int, default=3, help="per branch")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--cadence-s", type=int, default=60)
    parser.add_argument("--batches-per-day", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--grains", default="day,month")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="energylake-grain-"))
    try:
        t0 = time.perf_counter()
        results = run_all(args.grains.split(","), tmp, args)
        print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
        print()
        print(report(results, args))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
