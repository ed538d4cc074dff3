"""Crash safety of ``retention apply --apply`` (issue 15, point 10): the process is
SIGKILLed at named steps of a pass (a test-only hook, inert unless its variable is set)
and after random delays; after each kill a reader sees every row once (hot, less what an
unfinished pass has archived, plus the archive), and a rerun finishes the pass: the rows
of hot and archive together are the rows before, each key once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from contracts import load_registry
from lake.delta import commit_files, open_table, read_table, table_exists
from lake.layout import archive_rel, table_rel
from lake.storage import Store
from retention.apply import apply_retention, pending_cutoff
from retention.plan import cutoffs
from tests.retention.test_apply import ENERGYLAKE, build_lake, tenant_of

KILLS: list[str | None] = [
    "expired_deleted:quarantine",  # quarantine (30 + 60 days) is past both periods
    *(
        f"{step}:{dataset}"
        for _ in range(2)
        for dataset in ("meter_readings", "dg_readings")
        for step in ("archive_written", "archive_committed", "hot_deleted")
    ),
    None,  # a random delay
]


def _seen(store: Store, tenant: str) -> dict[str, list[tuple[object, ...]]]:
    """What a reader sees per dataset: hot (opened first) less an unfinished pass's rows,
    plus the archive; every key, with its basis last."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for contract in load_registry():
        if contract.retention.archive_days == 0:
            continue
        key = contract.primary_key
        hot_rel = table_rel(tenant, contract.dataset)
        if not table_exists(store, hot_rel):
            continue
        hot = open_table(store, hot_rel)
        rows = read_table(store, hot_rel, columns=[*key, contract.retention.basis])
        pending = pending_cutoff(store, hot_rel, hot, contract.dataset)
        if pending is not None:
            rows = rows.filter(pc.field(contract.retention.basis) >= pa.scalar(pending))
        arch = archive_rel(tenant, contract.dataset)
        cols = [*key, contract.retention.basis]
        parts = [rows.select(cols)]
        if table_exists(store, arch):
            parts.append(read_table(store, arch, columns=cols))
        keys: list[tuple[object, ...]] = []
        for part in parts:
            keys += list(zip(*(part.column(k).to_pylist() for k in cols), strict=True))
        out[contract.dataset] = keys
    return out


def _kept(dataset: str, keys: list[tuple[object, ...]], now: datetime) -> list[tuple[object, ...]]:
    cut = cutoffs(load_registry().get(dataset).retention, now)
    return [k for k in keys if k[-1] is None or k[-1] >= cut.delete_before]  # type: ignore[operator]


def _run(data_dir: Path, now: datetime, kill: str | None, delay_s: float) -> int:
    env = {**os.environ}
    if kill:
        env["ENERGYLAKE_TEST_RETENTION_KILL_AT"] = kill
    proc = subprocess.Popen(
        [ENERGYLAKE, "retention", "apply", "--apply", "--at", now.isoformat(),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    if kill is None:
        try:
            proc.wait(timeout=delay_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -9), err.decode()
    return proc.returncode


@pytest.mark.slow
def test_sigkill_at_any_step_loses_and_doubles_nothing(tmp_path: Path) -> None:
    settings = build_lake(tmp_path)
    store = Store.from_uri(settings.lake)
    tenant = tenant_of(store)
    before = _seen(store, tenant)
    ts = read_table(store, table_rel(tenant, "meter_readings"), columns=["ts"])["ts"]
    first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
    rng = random.Random(15)
    killed = 0
    started = time.monotonic()
    for i, kill in enumerate(KILLS):
        # each pass moves another slice of the data (hot days = 400 for these datasets)
        now = first + (last - first) * (i + 1) / (len(KILLS) + 1) + timedelta(days=400)
        code = _run(settings.data_dir, now, kill, rng.uniform(2.0, 3.5))
        killed += code == -9
        expected = {d: sorted(_kept(d, keys, now), key=repr) for d, keys in before.items()}
        seen = _seen(store, tenant)  # between the kill and the rerun
        for dataset, keys in before.items():
            # all the rows, less those a pass has deleted (past both periods) if it got there
            got = sorted(seen[dataset], key=repr)
            assert got in (expected[dataset], sorted(keys, key=repr)), (kill, dataset)
        for dataset in ("meter_readings", "dg_readings"):  # the pipeline goes on meanwhile
            commit_files(
                store, table_rel(tenant, dataset), load_registry().get(dataset), [],
                app_id="test-writer", version=i, metadata={},
            )  # fmt: skip
        apply_retention(store, load_registry(), now, apply=True)  # the rerun
        after = _seen(store, tenant)
        for dataset in before:
            assert len(set(after[dataset])) == len(after[dataset]), (kill, dataset)
            assert sorted(after[dataset], key=repr) == expected[dataset], (kill, dataset)
        before = after
        for dataset in before:  # settled: nothing pending
            hot_rel = table_rel(tenant, dataset)
            assert pending_cutoff(store, hot_rel, open_table(store, hot_rel), dataset) is None
    assert killed >= 10, f"only {killed} runs were killed"
    assert (
        sum(
            read_table(store, archive_rel(tenant, "meter_readings"), columns=["ts"]).num_rows
            for _ in [0]
        )
        > 0
    )
    assert time.monotonic() - started < 120
