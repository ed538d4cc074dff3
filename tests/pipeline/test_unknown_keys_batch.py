"""A whole batch (``energylake process`` in its own process) with 150 MQTT messages of 2,000
distinct unknown top-level keys each among a day of clean telemetry: it took 36 s and
4.9 GB before; now about as long as the day alone, and the 150 are quarantined."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import polars as pl
import pytest

from analytics.queries import read_frame
from lake.storage import Store
from landing.format import Envelope
from landing.writer import LandingWriter
from simulator.config import FaultRates, SimConfig
from simulator.stream import topic_for
from tests.pipeline.conftest import land

ENERGYLAKE = Path(sys.executable).with_name("energylake")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_batch_with_unique_unknown_keys_takes_seconds_and_little_memory(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=1, days=1, seed=11, faults=FaultRates.none())
    settings, _manifest, _segments = land(tmp_path, config)
    devices = pl.read_parquet(settings.sim_dir / "reference" / "devices.parquet")
    meter = devices.filter(pl.col("kind") == "meter").row(0, named=True)
    topic = topic_for(meter["client_id"], meter["branch_id"], meter["device_id"])
    now_us = time.time_ns() // 1000
    with LandingWriter(settings.landing, "hostile", clock=None) as writer:
        for i in range(150):
            payload = {"device_id": meter["device_id"], "seq": 10**9 + i, "ts": now_us / 1e6}
            payload.update({f"{i:03d}{k:04d}": 0 for k in range(2000)})
            writer.append(
                Envelope(now_us + i, "mqtt", topic, meter["device_id"], orjson.dumps(payload))
            )
    child = subprocess.Popen(
        [str(ENERGYLAKE), "process", "--data-dir", str(settings.data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    start = time.monotonic()
    _pid, status, usage = os.wait4(child.pid, 0)  # the child's own peak RSS
    seconds = time.monotonic() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.stderr is not None
    errors = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    assert child.returncode == 0, errors
    peak_mb = usage.ru_maxrss / 1024
    print(f"\nbatch with 150 hostile messages: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert seconds < 30, seconds  # about 6 s here (a process start and a day of telemetry)
    assert peak_mb < 2000, peak_mb  # 4.9 GB before
    q = read_frame(Store.from_uri(settings.lake), meter["client_id"], "quarantine")
    hostile = q.filter(pl.col("payload_size_bytes") > 20_000)
    assert hostile.height == 150
    assert set(hostile["reason_code"]) == {"SCHEMA_MISMATCH"}
    assert set(hostile["pipeline_step"]) == {"decode"}  # past the key cap
    assert set(hostile["device_id"]) == {meter["device_id"]}
    assert q.height == 150  # and nothing else: the day is clean
