"""Every record ends in exactly one place, and the lake's totals match the devices' truth."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from analytics.queries import branch_totals
from lake.delta import open_table
from lake.layout import UNASSIGNED_TENANT, table_rel
from lake.storage import Store
from landing.reader import read_records_at, read_segment
from pipelines.process import ingest_stats, process_once
from tests.pipeline.conftest import Processed, land

READINGS = ("meter_readings", "dg_readings", "solar_readings")
_CLAIM = re.compile(r"^emaas/v1/[^/]+/([^/]+)/")


def _read(p: Processed, tenant: str, dataset: str) -> pl.DataFrame:
    rel = table_rel(tenant, dataset)
    try:
        table = open_table(p.store, rel).to_pyarrow_table()
    except Exception:
        return pl.DataFrame()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _tenants(p: Processed) -> list[str]:
    return sorted({b["client_id"] for b in p.manifest["branches"].values() if "client_id" in b})


def _quarantine(p: Processed) -> pl.DataFrame:
    frames = [_read(p, t, "quarantine") for t in [*_tenants(p), UNASSIGNED_TENANT]]
    return pl.concat([f for f in frames if f.height], how="vertical_relaxed")


@pytest.mark.slow
def test_a_day_with_message_faults_passes_every_blocking_rule_of_the_gate(
    processed: Processed,
) -> None:
    # Bad messages are quarantined row by row; what is left is a healthy day: nothing held.
    assert processed.report.gate_seconds > 0
    assert processed.report.held == {}


def test_segments_hold_what_the_simulator_sent(processed: Processed) -> None:
    per_branch: Counter[str] = Counter()
    for path in processed.segments:
        records = read_segment(path)
        assert records.damage is None
        for topic in records.topic:
            match = _CLAIM.match(topic)
            assert match
            per_branch[match.group(1)] += 1
    expected = {b: v["records"]["lines"] for b, v in processed.manifest["branches"].items()}
    assert dict(per_branch) == expected


def test_every_record_ends_in_exactly_one_place_per_branch(processed: Processed) -> None:
    lake: Counter[str] = Counter()
    for tenant in _tenants(processed):
        for dataset in READINGS:
            frame = _read(processed, tenant, dataset)
            if frame.height:
                lake.update(dict(frame.group_by("branch_id").len().iter_rows()))
    quarantine = _quarantine(processed).with_columns(
        pl.col("topic").str.extract(r"^emaas/v1/[^/]+/([^/]+)/", 1).alias("claimed")
    )
    quarantined = Counter(dict(quarantine.group_by("claimed").len().iter_rows()))
    duplicates: Counter[str] = Counter()
    for kind, _tenant, _dataset, branch, _key, n in ingest_stats(processed.settings):
        if kind == "duplicates":
            duplicates[branch] += n
    for branch, info in processed.manifest["branches"].items():
        records = info["records"]
        assert lake[branch] == sum(records["lake"].values()), branch
        assert quarantined[branch] == sum(records["quarantine"].values()), branch
        assert duplicates[branch] == records["duplicates"], branch
        assert lake[branch] + quarantined[branch] + duplicates[branch] == records["lines"]


def test_day_stats_count_the_rows_each_branch_day_holds(processed: Processed) -> None:
    # Lineage answers "which runs wrote branch B on day D" from these stats.
    stats = Counter[tuple[str, str, str, str]]()
    for kind, tenant, dataset, branch, key, n in ingest_stats(processed.settings):
        if kind == "day":
            stats[(tenant, dataset, branch, key)] += n
    lake = Counter[tuple[str, str, str, str]]()
    for tenant in _tenants(processed):
        for dataset in READINGS:
            frame = _read(processed, tenant, dataset)
            if frame.height:
                days = frame.group_by("branch_id", pl.col("ts").dt.date().alias("d")).len()
                for branch, day, n in days.iter_rows():
                    lake[(tenant, dataset, branch, str(day))] += n
    # A quarantined record's day is when it was received (it may have no event time).
    for tenant in [*_tenants(processed), UNASSIGNED_TENANT]:
        frame = _read(processed, tenant, "quarantine")
        if frame.height:
            days = frame.group_by(
                pl.col("branch_id").fill_null(""), pl.col("received_at").dt.date().alias("d")
            ).len()
            for branch, day, n in days.iter_rows():
                lake[(tenant, "quarantine", branch, str(day))] += n
    assert len(lake) > 10
    assert {k for k in lake if k[1] == "quarantine"}
    assert stats == lake


def test_quarantine_reasons_match_the_manifest(processed: Processed) -> None:
    quarantine = _quarantine(processed)
    got = dict(quarantine.group_by("reason_code").len().iter_rows())
    assert got == processed.manifest["expected"]["quarantine"]
    assert quarantine["quarantine_id"].is_unique().all()
    # Each row points at its raw bytes.
    assert quarantine["payload_sha256"].str.len_chars().eq(64).all()
    assert quarantine["segment"].is_not_null().all()
    unknown = _read(processed, UNASSIGNED_TENANT, "quarantine")
    assert set(unknown["reason_code"].to_list()) <= {"UNKNOWN_DEVICE"}
    assert unknown["client_id"].is_null().all()


def test_each_quarantined_row_points_at_its_exact_raw_bytes(processed: Processed) -> None:
    # Rows rejected by Enforce carry their bytes; rows rejected later (IMPLAUSIBLE_DELTA, by
    # the series checks) get them read back from the segment: both must hash the same.
    quarantine = _quarantine(processed)
    assert (quarantine["reason_code"] == "IMPLAUSIBLE_DELTA").any()
    by_name = {p.name: p for p in processed.segments}
    for (segment,), part in quarantine.group_by("segment"):
        offsets = part["offset_bytes"].to_list()
        raw = read_records_at(by_name[str(segment)], offsets)
        got = [hashlib.sha256(e.payload).hexdigest() for e in raw]
        assert got == part["payload_sha256"].to_list()
        assert [len(e.payload) for e in raw] == part["payload_size_bytes"].to_list()


def test_security_quarantines_are_audited_once(processed: Processed) -> None:
    quarantine = _quarantine(processed)
    security = quarantine.filter(pl.col("reason_code").is_in(["BRANCH_MISMATCH", "UNKNOWN_DEVICE"]))
    assert security.height > 0
    folder = processed.settings.data_dir / "audit" / "pipeline"
    records = [
        json.loads(line)
        for f in sorted(folder.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert {r["component"] for r in records} == {"pipeline"}
    got = Counter(r["event"] for r in records)
    want = Counter(str(c).lower() for c in security["reason_code"].to_list())
    assert got == want
    ids = [r["detail"].split("quarantine_id ")[1].split(";")[0] for r in records]
    assert sorted(ids) == sorted(security["quarantine_id"].to_list())
    mismatch = [r for r in records if r["event"] == "branch_mismatch"]
    assert all(r["device_id"] and r["branch_id"] for r in mismatch)


def test_lake_rows_per_dataset_match_the_manifest(processed: Processed) -> None:
    got: Counter[str] = Counter()
    for tenant in _tenants(processed):
        for dataset in READINGS:
            frame = _read(processed, tenant, dataset)
            got[dataset] += frame.height
            if frame.height:
                assert frame.select(pl.struct("device_id", "seq").is_unique().all()).item()
                assert frame["ts"].dtype == pl.Datetime("us", "UTC")
    assert dict(got) == processed.manifest["expected"]["lake_rows"]


def _totals(p: Processed) -> dict[str, dict[str, float]]:
    return {b: asdict(v) for b, v in branch_totals(p.store).items()}


@pytest.mark.parametrize("key", ["grid_import_kwh", "solar_kwh", "dg_fuel_l", "dg_run_hours"])
def test_lake_totals_match_the_truth_within_half_a_percent(processed: Processed, key: str) -> None:
    totals = _totals(processed)
    checked = 0
    for branch, info in processed.manifest["branches"].items():
        truth = float(info.get(key, 0.0))
        got = totals.get(branch, {}).get(key, 0.0)
        assert got >= 0.0
        assert got == pytest.approx(truth, rel=0.005, abs=0.05), (branch, key, got, truth)
        checked += truth > 0
    assert checked, f"no branch has any {key}: the comparison would prove nothing"


def test_flags_mark_the_simulated_state_faults(processed: Processed) -> None:
    flagged: dict[str, set[int]] = {}
    for tenant in _tenants(processed):
        for dataset in READINGS:
            frame = _read(processed, tenant, dataset)
            if frame.height == 0:
                continue
            for flag in ("COUNTER_RESET", "STUCK"):
                hit = frame.filter(pl.col("quality_flags").list.contains(flag))
                for device, seq in hit.select("device_id", "seq").iter_rows():
                    flagged.setdefault(f"{flag}:{device}", set()).add(seq)
    faults: list[dict[str, Any]] = processed.manifest["state_faults"]
    assert faults
    for fault in faults:
        flag = "COUNTER_RESET" if fault["fault"] == "counter_reset" else "STUCK"
        seqs = flagged.get(f"{flag}:{fault['device_id']}", set())
        window = set(range(fault["first_seq"], fault["first_seq"] + fault["length"]))
        assert seqs & window, fault


def test_a_second_run_finds_nothing_and_replays_change_nothing(processed: Processed) -> None:
    assert process_once(processed.settings) is None


@pytest.mark.slow
def test_many_small_batches_give_the_same_lake_and_totals(
    processed: Processed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Batch boundaries must not matter: dedupe against committed rows, series checks with
    # lookback, and read-time consumption (row order across files) give the same answers.
    # Only the LATE flag may differ: it marks rows behind what an earlier batch committed.
    settings, _manifest, own = land(tmp_path_factory.mktemp("small-batches"))
    # The single batch's segments byte for byte (segment names are unique to the writer
    # that made them, and rows carry them: their raw reference, their quarantine id).
    for path in own:
        path.unlink()
    segments = [
        Path(shutil.copy(p, settings.landing / "closed" / p.name)) for p in processed.segments
    ]
    per_batch = len(segments) // 6 + 1
    batches = 0
    while process_once(settings, max_segments=per_batch) is not None:
        batches += 1
    assert batches >= 5
    store = Store.from_uri(settings.lake)
    not_late = pl.col("quality_flags").list.set_difference(pl.lit(["LATE"]))
    for tenant in _tenants(processed):
        for dataset in (*READINGS, "quarantine"):
            frames = []
            for s in (processed.store, store):
                frame = pl.from_arrow(open_table(s, table_rel(tenant, dataset)).to_pyarrow_table())
                assert isinstance(frame, pl.DataFrame)
                if dataset == "quarantine":
                    frame = frame.drop("batch_id").sort("quarantine_id")
                else:
                    frame = frame.with_columns(not_late.list.sort()).sort("device_id", "seq")
                frames.append(frame)
            one, many = frames
            assert many.equals(one), (tenant, dataset)
    single = branch_totals(processed.store)
    for branch, totals in branch_totals(store).items():
        for key, value in asdict(totals).items():
            if key != "branch_id":
                assert value == pytest.approx(getattr(single[branch], key), rel=1e-9, abs=1e-9)
