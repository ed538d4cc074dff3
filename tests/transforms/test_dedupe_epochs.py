"""Deduplication on (device_id, boot epoch, seq): a device that restarts its numbering keeps
its readings; a redelivery appears once (counted); a seq sent again with other content is
quarantined as SEQ_CONFLICT with both copies' hashes, never dropped as a plain duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from contracts import load_registry
from transforms.series import SeriesResult, content_columns, dedupe_and_check, reading_sha256

CONTRACT = load_registry(Path(__file__).resolve().parents[2] / "contracts").get("meter_readings")
T0 = datetime(2026, 11, 24, tzinfo=UTC)
_TYPES = {"double": pl.Float64, "int64": pl.Int64, "int32": pl.Int32, "string": pl.String}


def reading(seq: int, minute: float, *, boot: int | None = None, **values: Any) -> dict[str, Any]:
    """A clean meter reading at T0 + minute (counters rise slowly, voltages vary)."""
    row: dict[str, Any] = {}
    for f in CONTRACT.fields:
        if f.physical_type == "double":
            row[f.name] = 0.5
    row.update(
        client_id="c1",
        branch_id="b1",
        device_id="m-1",
        seq=seq,
        boot=boot,
        ts=T0 + timedelta(minutes=minute),
        received_at=T0 + timedelta(minutes=minute, seconds=5),
        event_month=T0.strftime("%Y-%m"),
        quality_flags=[],
        voltage_l1_v=230.0 + (seq % 11) / 10,
        voltage_l2_v=231.0 + (seq % 13) / 10,
        voltage_l3_v=229.0 + (seq % 7) / 10,
        frequency_hz=50.0,
        power_factor=0.9,
        energy_import_kwh=1000.0 + minute * 0.1,
        energy_export_kwh=0.0,
    )
    row.update(values)
    return row


def frame(rows: list[dict[str, Any]], *, arrival: int = 0) -> pl.DataFrame:
    schema: dict[str, Any] = {
        f.name: pl.List(pl.String)
        if f.name == "quality_flags"
        else pl.Datetime("us", "UTC")
        if f.physical_type.startswith("timestamp")
        else _TYPES[f.physical_type]
        for f in CONTRACT.fields
    }
    out = pl.DataFrame(rows, schema=schema)
    n = len(rows)
    return out.with_columns(
        pl.lit("seg").alias("segment"),
        pl.Series("offset_bytes", range(arrival, arrival + n), pl.Int64),
        pl.lit(0, pl.Int32).alias("_elem"),
        pl.lit(50.0).alias("reg_rated_power_kw"),
    )


def run(batch: list[dict[str, Any]], committed: list[dict[str, Any]] = ()) -> SeriesResult:  # type: ignore[assignment]
    past = frame(list(committed)).select([f.name for f in CONTRACT.fields])
    return dedupe_and_check(CONTRACT, frame(batch), past)


def kept(result: SeriesResult) -> list[tuple[int, int]]:
    minutes = (result.rows["ts"] - T0).dt.total_seconds() // 60
    return sorted(zip(result.rows["seq"].to_list(), minutes.cast(int).to_list(), strict=True))


def duplicates(result: SeriesResult) -> int:
    return int(result.duplicates["duplicates"].sum())


def test_a_restart_in_the_batch_keeps_both_numberings() -> None:
    before = [reading(k, k) for k in range(20)]
    after = [reading(k, 20 + k) for k in range(20)]  # rebooted: seq 0..19 again
    result = run(before + after)
    assert len(kept(result)) == 40
    assert duplicates(result) == 0
    assert result.rejects.height == 0


def test_a_restart_after_committed_readings_keeps_the_new_ones() -> None:
    committed = [reading(k, k) for k in range(30)]
    restarted = [reading(k, 40 + k) for k in range(10)]  # seq 0..9 again, ten minutes on
    result = run(restarted, committed)
    assert kept(result) == [(k, 40 + k) for k in range(10)]
    assert duplicates(result) == 0
    assert result.rejects.height == 0


def test_a_redelivery_is_counted_once_in_the_batch_and_against_the_lake() -> None:
    committed = [reading(1000 + k, k) for k in range(30)]
    batch = [reading(1030, 30), reading(1030, 30), reading(1025, 25), reading(1031, 31)]
    result = run(batch, committed)
    assert kept(result) == [(1030, 30), (1031, 31)]
    assert duplicates(result) == 2
    assert result.rejects.height == 0


def test_a_seq_sent_again_with_other_content_is_a_seq_conflict_with_both_hashes() -> None:
    committed = [reading(1000 + k, k) for k in range(11)]
    changed = reading(1005, 5, power_kw=7.25)  # same seq and time, another value
    resent = reading(1006, 12)  # same seq, a later time, no restart in between
    in_batch = [reading(1011, 11), reading(1011, 11, power_kw=3.0)]  # first arrival wins
    result = run([changed, resent, *in_batch], committed)
    assert kept(result) == [(1011, 11)]
    assert duplicates(result) == 0
    rejects = result.rejects.sort("seq")
    assert rejects["reason_code"].to_list() == ["SEQ_CONFLICT"] * 3
    assert rejects["seq"].to_list() == [1005, 1006, 1011]
    content = content_columns(CONTRACT)
    first = reading_sha256({c: reading(1005, 5)[c] for c in content})
    this = reading_sha256({c: changed[c] for c in content})
    assert first != this
    detail = rejects["detail"][0]
    assert f"first copy ts {(T0 + timedelta(minutes=5)).isoformat()}, reading sha256 {first}" in (
        detail
    )
    assert f"reading sha256 {this}" in detail


def test_a_boot_number_separates_numberings_without_a_fall_of_seq() -> None:
    committed = [reading(100 + k, k, boot=1) for k in range(10)]
    batch = [
        *[reading(100 + k, 20 + k, boot=2) for k in range(5)],  # rebooted, same seqs
        reading(105, 5, boot=1),  # a redelivery of boot 1's seq 105
        reading(103, 3, boot=1, power_kw=9.0),  # boot 1's seq 103 with other content
    ]
    result = run(batch, committed)
    assert kept(result) == [(100 + k, 20 + k) for k in range(5)]
    assert result.rows["boot"].to_list() == [2] * 5
    assert duplicates(result) == 1
    assert result.rejects["reason_code"].to_list() == ["SEQ_CONFLICT"]
    assert result.rejects["seq"].to_list() == [103]


def test_a_crash_loop_that_sends_seq_0_again_keeps_every_boot() -> None:
    """No boot number, and the seq before is as low: seq 0 (or 1) again, later, is a restart
    (it used to be a SEQ_CONFLICT); the same seq 0 at the same time is still a redelivery."""
    for first in (0, 1):
        batch = [reading(first, 0), reading(first, 5), reading(first + 1, 6), reading(first, 5)]
        result = run(batch)
        assert kept(result) == [(first, 0), (first, 5), (first + 1, 6)]
        assert duplicates(result) == 1
        assert result.rejects.height == 0
    committed = [reading(0, 0), reading(1, 1)]
    result = run([reading(0, 9), reading(1, 10), reading(1, 1)], committed)
    assert kept(result) == [(0, 9), (1, 10)]
    assert duplicates(result) == 1
