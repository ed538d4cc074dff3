"""``energylake status``: sequence gaps computed from the lake, backlog, metrics textfile."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from analytics.gaps import seq_gaps
from analytics.queries import read_frame
from cli.app import app
from contracts import load_registry
from lake.layout import table_rel
from lake.storage import Store
from pipelines.process import process_once
from pipelines.status import backlog
from simulator.config import FaultRates, SimConfig
from tests.pipeline.conftest import Processed, land

READINGS = load_registry().readings_datasets

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def test_quarantined_readings_are_not_missing(processed: Processed) -> None:
    """Every seq the lake lacks in this landing-only run is in the quarantine: with its seq,
    or unreadable (malformed JSON has no seq to read). Nothing is missing (it was: 986
    "missing" in a demo were exactly the quarantined readings)."""
    gaps = seq_gaps(processed.store, EPOCH)
    assert gaps.height > 0
    held: dict[str, set[int]] = defaultdict(set)
    for tenant in {str(t) for t in gaps["tenant"].unique()}:
        for dataset in READINGS:
            frame = read_frame(processed.store, tenant, dataset, ["device_id", "seq"])
            for device, seq in frame.iter_rows():
                held[device].add(seq)
    quarantined_seqs: dict[str, set[int]] = defaultdict(set)
    unreadable: dict[str, int] = defaultdict(int)
    for tenant in {str(t) for t in gaps["tenant"].unique()}:
        q = read_frame(processed.store, tenant, "quarantine", ["device_id", "seq"])
        for device, seq in q.iter_rows():
            if seq is None:
                unreadable[device] += 1
            else:
                quarantined_seqs[device].add(seq)
    with_gaps = 0
    for row in gaps.iter_rows(named=True):
        device = row["device_id"]
        lake = held[device]
        assert row["readings"] == len(lake)  # duplicates never reach the lake
        assert row["restarts"] == 0
        gap = set(range(min(lake), max(lake) + 1)) - lake
        with_gaps += bool(gap)
        assert row["quarantined"] == len(gap & quarantined_seqs[device]), device
        assert row["unreadable"] == unreadable[device], device
        assert len(gap - quarantined_seqs[device]) <= unreadable[device], device
        assert row["missing"] == 0, row
    assert with_gaps > 0  # the faults do quarantine readings, so the lake has gaps
    assert int(gaps["quarantined"].sum()) > 0


def test_status_exits_0_when_the_gaps_are_quarantined(processed: Processed, tmp_path: Path) -> None:
    prom = tmp_path / "metrics" / "energylake.prom"
    data_dir = str(processed.settings.data_dir)
    result = CliRunner().invoke(
        app,
        ["status", "--data-dir", data_dir, "--json", "--hours", "1000000", "--metrics", str(prom)],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    gaps = seq_gaps(processed.store, EPOCH)
    assert body["missing_total"] == 0
    assert body["devices_with_gaps"] == 0
    assert body["gaps"] == []
    assert body["quarantined_total"] == int(gaps["quarantined"].sum()) > 0
    assert body["last_batch"]["batch_no"] >= 1
    text = prom.read_text()
    assert 'energylake_seq_missing{pipeline="main"} 0.0' in text
    assert f'energylake_seq_quarantined{{pipeline="main"}} {float(body["quarantined_total"])}' in (
        text
    )


@pytest.mark.slow
def test_a_seq_that_is_nowhere_is_missing_and_status_exits_1(tmp_path: Path) -> None:
    """Seqs taken out of the lake (so in neither the lake nor the quarantine): missing."""
    config = SimConfig(clients=1, branches=1, days=1, seed=5, faults=FaultRates())
    settings, _manifest, _segments = land(tmp_path, config)
    assert process_once(settings) is not None
    store = Store.from_uri(settings.lake)
    (tenant,) = {str(t) for t in seq_gaps(store, EPOCH)["tenant"]}
    meters = read_frame(store, tenant, "meter_readings", ["device_id", "seq"]).sort("seq")
    device = meters["device_id"][0]
    seqs = meters.filter(pl.col("device_id") == device)["seq"].to_list()
    lost = seqs[100:103]
    before = seq_gaps(store, EPOCH).filter(pl.col("device_id") == device).row(0, named=True)
    DeltaTable(store.url(table_rel(tenant, "meter_readings"))).delete(
        f"device_id = '{device}' AND seq IN ({', '.join(map(str, lost))})"
    )
    after = seq_gaps(store, EPOCH).filter(pl.col("device_id") == device).row(0, named=True)
    assert after["missing"] == before["missing"] + 3
    assert after["quarantined"] == before["quarantined"]
    result = CliRunner().invoke(
        app, ["status", "--data-dir", str(settings.data_dir), "--json", "--hours", "1000000"]
    )
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    assert {g["device_id"]: g["missing"] for g in body["gaps"]}[device] == after["missing"]


def test_backlog_counts_closed_segments(processed: Processed, tmp_path: object) -> None:
    import shutil
    from pathlib import Path

    landing = Path(str(tmp_path)) / "landing"
    (landing / "closed").mkdir(parents=True)
    (landing / "open").mkdir()
    for path in processed.segments[:3]:
        shutil.copy(path, landing / "closed" / path.name)
    got = backlog(landing)
    assert got.closed_segments == 3
    assert got.closed_bytes == sum(p.stat().st_size for p in processed.segments[:3])
    assert got.oldest_closed_age_s is not None
    assert got.oldest_closed_age_s >= 0
    assert got.open_segments == 0
