"""A release deduplicates the held readings against what the table got meanwhile, with the
batch's rules, and the ledger and ``energylake status`` account for every held reading.

The held meter's first and last held readings reach the table again with the same content
(redeliveries: duplicates), ten others with its clock corrected by a second (the same seqs
with other content: SEQ_CONFLICT, quarantined, never published a second time). Before the
release, the meter's seqs the table does not hold between those are held, not missing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import write_deltalake

from analytics.gaps import seq_gaps
from analytics.queries import read_frame
from lake.layout import table_rel
from pipelines.process import ingest_stats
from pipelines.release import release_batch
from tests.pipeline.conftest import CONFIG
from tests.quality.conftest import Day, firmware_fault, process_day


def _held(day: Day, rel: str, plan: dict[str, Any]) -> pl.DataFrame:
    root = Path(day.settings.lake) / rel
    return pl.concat(
        [
            pl.read_parquet(root / f["path"]).with_columns(
                *[pl.lit(v).alias(k) for k, v in f["partition_values"].items()]
            )
            for f in plan["tables"][rel]["held_files"]
        ],
        how="diagonal_relaxed",
    ).sort("device_id", "seq")


def _append(day: Day, rel: str, tenant: str, rows: pl.DataFrame) -> None:
    schema = day.frame(tenant, "meter_readings").to_arrow().schema
    write_deltalake(
        day.store.url(rel),
        rows.select(schema.names).to_arrow().cast(schema),
        mode="append",
        storage_options=day.store.storage_options(),
    )


def _sums(stats: list[tuple[str, str, str, str, str, int]], tenant: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, t, dataset, _branch, key, n in stats:
        if t == tenant and dataset == "meter_readings":
            name = f"{kind}:{key}" if kind == "quarantined" else kind
            out[name] = out.get(name, 0) + n
    return out


@pytest.mark.slow
def test_release_dedupes_against_the_table_and_every_held_reading_is_accounted_for(
    tmp_path: Path, clean_day: Day
) -> None:
    by_tenant = clean_day.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [(str(t[0]), str(part["branch_id"][0])) for t, part in by_tenant]
    (tenant, zero_branch), (_, silent_branch) = firsts[0], firsts[1]
    day = process_day(tmp_path, CONFIG, firmware_fault(zero_branch, silent_branch), gate=True)
    rel = table_rel(tenant, "meter_readings")
    plan = json.loads(
        (Path(day.settings.lake) / "_state/main/batches/0000000001/plan.json").read_text()
    )
    held = _held(day, rel, plan)
    devices = held["device_id"].unique().sort().to_list()
    meter = devices[0]
    mine = held.filter(pl.col("device_id") == meter)
    assert mine.height > 40, "the test needs a meter with many held readings"
    again = pl.concat([mine.head(1), mine.tail(1)])  # redelivered, published by "a later batch"
    resent = mine.slice(10, 10).with_columns(
        pl.col("ts") + timedelta(seconds=1)  # the same seqs, the clock corrected
    )
    _append(day, rel, tenant, pl.concat([again, resent]))

    # status: the meter's seqs between its readings in the lake are held, not missing.
    since = held["ts"].min() - timedelta(hours=1)  # type: ignore[operator]
    gaps = seq_gaps(day.store, since).filter(pl.col("device_id") == meter)
    assert gaps["missing"].to_list() == [0], gaps
    assert gaps["held"].to_list() == [mine.height - 2 - resent.height]

    before = _sums(ingest_stats(day.settings), tenant)
    assert before["held"] == held.height
    report = release_batch(day.settings, "1", decided_by="ops", reason="fixed", apply=True)
    (table,) = [t for t in report.tables if t.rel == rel]
    assert table.already_in_table == 2
    assert table.conflicts == resent.height
    assert table.rows_published == held.height - 2 - resent.height

    # Each (device, seq) of the held meters once in the table: the first copy stands.
    rows = read_frame(day.store, tenant, "meter_readings").filter(
        pl.col("device_id").is_in(devices)
    )
    assert rows.select("device_id", "seq").is_unique().all()
    assert rows.height == held.height
    kept = rows.filter(pl.col("seq").is_in(resent["seq"].implode())).sort("seq")
    assert kept["ts"].to_list() == resent.sort("seq")["ts"].to_list()
    # The conflicting held copies are in the quarantine, with both copies' hashes.
    quarantine = read_frame(day.store, tenant, "quarantine").filter(
        pl.col("reason_code") == "SEQ_CONFLICT", pl.col("source") == "held"
    )
    assert quarantine.height == resent.height
    assert sorted(quarantine["seq"].to_list()) == sorted(resent["seq"].to_list())
    assert quarantine["detail"].str.count_matches("sha256").to_list() == [2] * resent.height
    assert quarantine["segment"].str.starts_with("_held/").all()

    # The ledger: every held reading decided, and where it went.
    after = _sums(ingest_stats(day.settings), tenant)
    assert after["decided"] == held.height
    assert after["released"] == table.rows_published
    assert after["duplicates"] - before.get("duplicates", 0) == 2
    assert after["quarantined:SEQ_CONFLICT"] - before.get("quarantined:SEQ_CONFLICT", 0) == (
        resent.height
    )
    # status after the release: nothing held, nothing missing for the held meters.
    gaps = seq_gaps(day.store, since).filter(pl.col("device_id").is_in(devices))
    assert gaps["missing"].sum() == 0
    assert gaps["held"].sum() == 0
