"""``energylake status``: sequence gaps computed from the lake, backlog, metrics textfile."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import polars as pl
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.lakeops import READINGS, read_frame
from pipelines.status import backlog, seq_gaps
from tests.pipeline.conftest import Processed

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def test_gaps_are_exactly_the_sent_seqs_the_lake_does_not_hold(processed: Processed) -> None:
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
        q = read_frame(processed.store, tenant, "quarantine", ["identity", "seq"])
        for identity, seq in q.iter_rows():
            if seq is None:
                unreadable[identity] += 1
            else:
                quarantined_seqs[identity].add(seq)
    checked = 0
    for row in gaps.iter_rows(named=True):
        device = row["device_id"]
        lake = held[device]
        assert row["readings"] == len(lake)  # duplicates never reach the lake
        assert (row["first_seq"], row["last_seq"]) == (min(lake), max(lake))
        # Missing: sent (so it was quarantined) or never sent (lost), within the range held.
        expected = set(range(min(lake), max(lake) + 1)) - lake
        assert row["missing"] == len(expected), device
        assert row["restarts"] == 0
        checked += bool(expected)
        # In this landing-only run nothing is lost: every gap is a quarantined message,
        # either with its seq readable (then it is that seq) or not (counted per device).
        readable = quarantined_seqs[device]
        assert expected - readable == set() or len(expected - readable) <= unreadable[device]
    assert checked > 0  # the faults do quarantine readings, so some devices have gaps


def test_status_command_reports_and_exits_1_on_gaps(processed: Processed, tmp_path: object) -> None:
    from pathlib import Path

    prom = Path(str(tmp_path)) / "metrics" / "energylake.prom"
    data_dir = str(processed.settings.data_dir)
    result = CliRunner().invoke(
        app,
        ["status", "--data-dir", data_dir, "--json", "--hours", "1000000", "--metrics", str(prom)],
    )
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    gaps = seq_gaps(processed.store, EPOCH)
    assert body["missing_total"] == int(gaps["missing"].sum()) > 0
    assert body["devices_with_gaps"] == gaps.filter(pl.col("missing") > 0).height
    assert body["last_batch"]["batch_no"] >= 1
    text = prom.read_text()
    assert f'energylake_seq_missing{{pipeline="main"}} {float(body["missing_total"])}' in text
    assert "energylake_seq_missing_by_device{" in text


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
