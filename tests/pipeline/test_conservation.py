"""Every record ends in exactly one place, and the lake's totals match the devices' truth."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict
from typing import Any

import polars as pl
import pytest

from gateway.landing import read_segment
from lake.delta import open_table
from lake.layout import UNASSIGNED_TENANT, table_rel
from pipelines.lakeops import branch_totals
from pipelines.process import ingest_stats, process_once
from tests.pipeline.conftest import Processed

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
