"""Lineage queries on a year of events: generate them in the file transport's layout, index
them (``LineageStore.refresh``), then time ``runs``, ``trace`` and ``where``.

    .venv/bin/python -m bench.lineage_queries [--days 365] [--per-day 1440] [--branches 8]

Default: one batch a minute for a year (525,600 batch runs, START + COMPLETE each), every
batch writing two tables of one tenant, ``--branches`` partitions each, one segment each.
Events are written from a template shaped like the pipeline's (same keys and facets, a
shorter schema facet) -- the point is the volume and layout, not the emitter's speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lineage.store import LineageStore

LAKE = "file:///srv/energylake/lake"
LANDING = "file:///srv/energylake/landing"
TABLES = ("tenants/acme/meter_readings", "tenants/acme/dg_readings")
FACET = {"_producer": "https://github.com/energylake/energylake", "_schemaURL": "https://x/y.json"}


def _event(kind: str, run_id: str, n: int, when: datetime, branches: int) -> str:
    segment = f"{when:%Y%m%dT%H%M%S}.000000Z-gw-{n:09d}.seg"
    inputs = [{"namespace": LANDING, "name": segment, "facets": {}, "inputFacets": {}}]
    outputs = []
    if kind == "COMPLETE":
        day = when.date().isoformat()
        for rel in TABLES:
            parts = [
                {"branchId": f"acme-br-{b:03d}", "date": day, "rows": 120} for b in range(branches)
            ]
            facets = {
                "version": {**FACET, "datasetVersion": str(n)},
                "storage": {**FACET, "storageLayer": "delta", "fileFormat": "parquet"},
                "schema": {**FACET, "fields": [{"name": "ts", "type": "timestamp[us, UTC]"}]},
                "energylake_contract": {
                    **FACET,
                    "contractId": rel.rsplit("/", 1)[-1],
                    "contractVersion": "1.1.0",
                    "dataset": rel.rsplit("/", 1)[-1],
                    "purposes": ["energy_monitoring"],
                    "partitions": parts,
                },
            }
            stats = {**FACET, "rowCount": 120 * branches, "size": 40_000, "fileCount": branches}
            outputs.append(
                {
                    "namespace": LAKE,
                    "name": rel,
                    "facets": facets,
                    "outputFacets": {"outputStatistics": stats},
                }
            )
            inputs.append(
                {
                    "namespace": LAKE,
                    "name": rel,
                    "facets": {"version": {**FACET, "datasetVersion": str(n - 1)}},
                    "inputFacets": {},
                }
            )
    event = {
        "eventType": kind,
        "eventTime": (when + timedelta(seconds=20 if kind == "COMPLETE" else 0)).isoformat(),
        "producer": FACET["_producer"],
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id, "facets": {}},
        "job": {"namespace": "energylake", "name": "process.main", "facets": {}},
        "inputs": inputs,
        "outputs": outputs,
    }
    return json.dumps(event, separators=(",", ":"))


def generate(events_dir: Path, days: int, per_day: int, branches: int) -> int:
    events_dir.mkdir(parents=True, exist_ok=True)
    start = datetime(2025, 4, 1, tzinfo=UTC)
    step = timedelta(days=1) / per_day
    n = 0
    for d in range(days):
        day = start + timedelta(days=d)
        with (events_dir / f"{day:%Y-%m-%d}.jsonl").open("w") as out:
            for i in range(per_day):
                n += 1
                when = day + i * step
                run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{n}"))
                out.write(_event("START", run_id, n, when, branches) + "\n")
                out.write(_event("COMPLETE", run_id, n, when, branches) + "\n")
    return n


def _time(label: str, fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    print(f"  {label:<44} {best * 1000:9.1f} ms  ({_size(result)})")
    return best


def _size(result: object) -> str:
    if isinstance(result, list):
        return f"{len(result)} rows"
    producers = getattr(result, "producers", None)
    segments = getattr(result, "segments", None)
    if producers is not None and segments is not None:
        return f"{len(producers)} producers, {len(segments)} segments"
    return str(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=1440, help="batches per day")
    parser.add_argument("--branches", type=int, default=8, help="partitions per output table")
    parser.add_argument("--out", type=Path, default=None, help="keep the events here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="lineage-bench-"))
    try:
        t0 = time.perf_counter()
        runs = generate(root / "events", args.days, args.per_day, args.branches)
        size = sum(p.stat().st_size for p in (root / "events").glob("*.jsonl"))
        print(
            f"generated {runs:,} batch runs ({2 * runs:,} events, {size / 1e9:.2f} GB JSON) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        store = LineageStore(root)
        t0 = time.perf_counter()
        indexed = store.refresh()
        print(f"index built: {indexed} day files in {time.perf_counter() - t0:.1f} s (once)")
        last = sorted((root / "events").glob("*.jsonl"))[-1]
        with last.open("a") as out:  # one more batch today: only today's file is re-indexed
            out.write(_event("START", str(uuid.uuid4()), runs + 1, datetime.now(UTC), 1) + "\n")
        t0 = time.perf_counter()
        print(
            f"incremental refresh: {store.refresh()} day file in {time.perf_counter() - t0:.2f} s"
        )
        print("queries (best of 3, after refresh):")
        mid = runs // 2
        _time("runs --limit 20", lambda: store.runs(limit=20))
        _time(f"trace {TABLES[0]}@{mid}", lambda: store.trace(TABLES[0], mid))
        _time(f"trace {TABLES[0]} (whole year)", lambda: store.trace(TABLES[0]))
        _time(
            "where --branch acme-br-003 --date 2025-09-15",
            lambda: store.where("acme-br-003", "2025-09-15"),
        )
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
