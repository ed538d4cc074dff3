"""Erasing one person (``retention.erase``) from a simulated year for 100 branches (the lake
of ``bench.year_lake``, shared with ``bench.retention``), against plain polars and a plain
byte search doing the visible part of the same work, measured in the same run.

    .venv/bin/python -m bench.erasure [--branches 100] [--days 365] [--interval-min 15]

The person is a branch contact, the technician of six tickets over the year, and named in
two raw payloads (and so two quarantine excerpts). The platform's erasure: find (every
table a contract marks, the raw archive, the reference files through lineage), delete or
clear the rows, star the mentions in the raw segments and the quarantine, purge each
table, re-find, and read every byte of the data folder as the proof. The baseline: polars
reading the same three tables and writing them back without the person (contacts
deleted, tickets cleared, excerpts starred) as plain Parquet, and a Python search of
every raw segment's bytes for the person's mobile -- no Delta commit, no purge of old files
and log, no rewrite of the segments, no proof. Printed: seconds (and per step), files and
bytes rewritten, bytes read by the proof; ratio platform / baseline. The last line is a
JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from bench.year_lake import SUBJECT_MOBILE, SUBJECT_NAME, TENANTS, build_year_lake
from contracts import load_registry
from lake.layout import table_rel
from pipelines.settings import load_settings
from retention.erase import erase_subject, resume
from retention.find import Places, find_subject
from retention.subject import Subject


def _copy(cached: Path, target: Path) -> Path:
    shutil.copytree(cached, target)
    for events in (target / "lineage" / "events").glob("*.jsonl"):
        events.write_text(events.read_text().replace(str(cached), str(target)))
    return target


def _baseline(data: Path, out: Path) -> tuple[float, int]:
    """Polars and a byte search: the rows rewritten without the person, the segments found."""
    started = time.perf_counter()
    out.mkdir()
    digits = SUBJECT_MOBILE[3:].encode()
    for tenant in TENANTS:
        lake = data / "lake"
        contacts = pl.read_delta(str(lake / table_rel(tenant, "contacts")))
        contacts.filter(pl.col("mobile") != SUBJECT_MOBILE).write_parquet(
            out / f"{tenant}-contacts.parquet"
        )
        orders = pl.read_delta(str(lake / table_rel(tenant, "work_orders")))
        mine = pl.col("technician_phone") == SUBJECT_MOBILE
        cleared = ("technician_id", "technician_name", "technician_phone", "notes")
        orders.with_columns(
            [pl.when(mine).then(None).otherwise(pl.col(c)).alias(c) for c in cleared]
        ).write_parquet(out / f"{tenant}-work_orders.parquet")
        quarantine = pl.read_delta(str(lake / table_rel(tenant, "quarantine")))
        quarantine.with_columns(
            pl.col("payload_excerpt").str.replace_all(f"(?i){SUBJECT_NAME}", "*")
        ).write_parquet(out / f"{tenant}-quarantine.parquet")
    found = 0
    for segment in (data / "lake" / "raw").rglob("*.seg"):
        if digits in segment.read_bytes().replace(b" ", b""):
            found += 1
    return time.perf_counter() - started, found


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
    registry = load_registry()
    with tempfile.TemporaryDirectory(prefix="bench-erasure-") as tmp:
        data = _copy(cached, Path(tmp) / "data")
        raw_bytes = sum(p.stat().st_size for p in (data / "lake" / "raw").rglob("*.seg"))
        data_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        baseline_s, baseline_segments = _baseline(data, Path(tmp) / "baseline")

        settings = load_settings(data_dir=data)
        store = settings.lake_store()
        places = Places(
            data_dir=data,
            landing_dir=settings.landing,
            lineage_dir=data / "lineage",
            keys_dir=settings.keys,
            text_dirs=(data / "quality", data / "logs"),
        )
        start, digest = resume(places, Subject.start("mobile", SUBJECT_MOBILE), b"bench-key")
        t1 = time.perf_counter()
        findings = find_subject(store, registry, places, start)
        find_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        _found, receipt = erase_subject(
            store, registry, places, start, digest=digest, apply=True,
            scan_roots=(data,), findings=findings,
        )  # fmt: skip
        erase_s = time.perf_counter() - t2
        segments = [p for p in receipt.places if p.place == "raw segment"]
        segment_bytes = sum((data / "lake" / p.path).stat().st_size for p in segments)
    tables = [p for p in receipt.places if p.place == "table"]
    result = {
        "branches": args.branches,
        "days": args.days,
        "interval_min": args.interval_min,
        "data_bytes": data_bytes,
        "raw_archive_bytes": raw_bytes,
        "generate_s": round(generate_s, 2),
        "find_s": round(find_s, 2),
        "erase_and_prove_s": round(erase_s, 2),
        "platform_s": round(find_s + erase_s, 2),
        "verified": receipt.verified,
        "tables_rewritten": len(tables),
        "table_files_removed": sum(int(p.after.get("removed_files", 0)) for p in tables),
        "segments_rewritten": len(segments),
        "segment_bytes_rewritten": segment_bytes,
        "proof_files_read": receipt.scanned_files,
        "proof_bytes_read": receipt.scanned_bytes,
        "baseline_s": round(baseline_s, 2),
        "baseline_segments_found": baseline_segments,
        "ratio_platform_to_baseline": round((find_s + erase_s) / baseline_s, 2),
    }
    if not receipt.verified:
        raise SystemExit(f"the erasure's proof found residues: {receipt.residues[:5]}")
    print(
        f"erasure of one person: find {find_s:.2f} s + erase and prove {erase_s:.2f} s; "
        f"{len(tables)} tables rewritten and purged ({result['table_files_removed']} files "
        f"removed), {len(segments)} raw segments rewritten; the proof read "
        f"{receipt.scanned_files:,} files, {receipt.scanned_bytes:,} bytes"
    )
    print(
        f"baseline (polars + byte search): {baseline_s:.2f} s, {baseline_segments} segments found"
    )
    print(f"ratio platform / baseline: {result['ratio_platform_to_baseline']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
