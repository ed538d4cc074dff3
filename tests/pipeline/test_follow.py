"""``process --follow`` picks up new segments, compacts past the bound, and stops cleanly on
SIGTERM; ``reference load`` is idempotent; ``lake compact`` keeps the rows and drops files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lake.delta import files_per_partition, open_table, table_exists
from lake.layout import table_rel, tenants
from lake.storage import Store
from pipelines.process import compact_if_needed, ingest_stats, process_once
from simulator.config import SimConfig
from tests.pipeline.conftest import FAULTS, land

CLI = Path(sys.executable).with_name("energylake")


def _rows(store: Store, rel: str) -> int:
    return int(open_table(store, rel).to_pyarrow_table().num_rows)


@pytest.mark.slow
def test_follow_processes_new_segments_compacts_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=2, days=1, seed=5, faults=FAULTS)
    settings, manifest, segments = land(tmp_path, config)
    # Hold back half the segments: they arrive while --follow runs.
    held = tmp_path / "held"
    held.mkdir()
    for path in segments[len(segments) // 2 :]:
        shutil.move(path, held / path.name)
    env = {
        **os.environ,
        "ENERGYLAKE_FOLLOW_INTERVAL_S": "0.5",
        "ENERGYLAKE_COMPACT_MAX_FILES": "2",
        # every partition past the bound is compacted right after its batch (the budget,
        # tested below, would leave some for later batches)
        "ENERGYLAKE_COMPACT_BUDGET_S": "600",
    }
    proc = subprocess.Popen(
        [CLI, "process", "--follow", "--data-dir", str(tmp_path), "--max-segments", "8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        closed = settings.landing / "closed"
        deadline = time.monotonic() + 120
        while any(closed.glob("*.seg")) and time.monotonic() < deadline:
            time.sleep(0.3)
        for path in sorted(held.iterdir()):
            shutil.move(path, closed / path.name)
        while any(closed.glob("*.seg")) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(closed.glob("*.seg")), "follow did not process every segment"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"batch" in out
    store = Store.from_uri(settings.lake)
    expected = manifest["expected"]
    tenant = next(iter(manifest["branches"].values()))["client_id"]
    for dataset, n in expected["lake_rows"].items():
        rel = table_rel(tenant, dataset)
        assert _rows(store, rel) == n, dataset
        # Several batches wrote several files per partition; follow compacted them.
        assert max(files_per_partition(store, rel).values()) <= 2, dataset
    duplicates = sum(s[5] for s in ingest_stats(settings) if s[0] == "duplicates")
    assert duplicates == expected["duplicates"]


@pytest.mark.slow
def test_reference_load_is_idempotent_and_compact_keeps_rows(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=2, days=1, seed=9, faults=FAULTS)
    settings, _manifest, _segments = land(tmp_path, config)
    args = ["--data-dir", str(tmp_path)]
    again = subprocess.run(
        [CLI, "reference", "load", str(settings.sim_dir / "reference"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "yes" not in again.stdout  # nothing changed: same content, no new versions
    for _ in range(3):  # three batches: several files per partition
        done = subprocess.run(
            [CLI, "process", "--max-segments", "20", *args], capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
    store = Store.from_uri(settings.lake)
    tenant = tenants(store)[0]
    rel = table_rel(tenant, "meter_readings")
    before_rows = _rows(store, rel)
    before_files = sum(files_per_partition(store, rel).values())
    compacted = subprocess.run(
        [CLI, "lake", "compact", *args], capture_output=True, text=True, check=False
    )
    assert compacted.returncode == 0, compacted.stderr
    assert _rows(store, rel) == before_rows
    assert sum(files_per_partition(store, rel).values()) < before_files
    missing = subprocess.run(
        [CLI, "reference", "load", str(tmp_path / "nope"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "no such folder" in missing.stderr


@pytest.mark.slow
def test_compaction_on_a_budget_goes_worst_first_and_finishes_over_later_passes(
    tmp_path: Path,
) -> None:
    config = SimConfig(clients=1, branches=3, days=1, seed=9, faults=FAULTS)
    settings, _, segments = land(tmp_path, config)
    while process_once(settings, max_segments=max(1, len(segments) // 6)) is not None:
        pass
    settings = settings.model_copy(update={"compact_max_files": 2})
    store = Store.from_uri(settings.lake)
    tenant = next(t for t in tenants(store) if not t.startswith("_"))
    tables = [table_rel(tenant, d) for d in ("meter_readings", "dg_readings", "solar_readings")]
    tables = [t for t in tables if table_exists(store, t)]
    rows_before = {t: _rows(store, t) for t in tables}
    over = sum(1 for t in tables for n in files_per_partition(store, t).values() if n > 2)
    assert over >= 3, "the test needs several partitions past the bound"
    worst = max(max(files_per_partition(store, t).values()) for t in tables)
    passes = 0
    pending = tables
    while pending:
        before = {t: files_per_partition(store, t) for t in tables}
        result = compact_if_needed(settings, pending, budget_s=0)  # one partition a pass
        passes += 1
        after = {t: files_per_partition(store, t) for t in tables}
        changed = [(t, k) for t in tables for k, n in before[t].items() if after[t].get(k) != n]
        assert len(changed) == 1, changed  # exactly one partition per pass
        t, k = changed[0]
        if passes == 1:
            assert before[t][k] == worst  # the most fragmented first
        pending = result.remaining
        assert passes <= over
    assert passes == over
    for t in tables:
        assert max(files_per_partition(store, t).values()) <= 2
        assert _rows(store, t) == rows_before[t]
