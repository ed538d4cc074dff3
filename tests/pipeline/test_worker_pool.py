"""The batch pipeline with Beam's SDK workers in processes of their own.

Flink and Dataflow run Python DoFns in SDK worker processes that share nothing with the
program that built the pipeline. The same happens here with FnApiRunner and a real worker
pool (``python -m apache_beam.runners.worker.worker_pool_main``) on a free loopback port:
the test lands one simulated day (every fault on), processes the same segments once in
process (lake on disk) and once through the pool (lake on S3), and the two lakes must be
identical table by table, row by row (flags, quarantine reasons and gate results
included), with the same counts.
A DoFn that read something only the driver's memory holds (a module global the driver
set, an object the driver mutates) would see it unset in the pool's workers and the lakes
would differ, or the run would fail. Nor may a DoFn read the driver's disk: in the pooled
run each batch's segments are deleted from the landing folder as soon as the claim has
staged them in the lake, so the workers can read them only from the lake (S3).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import pipelines.process as process
from analytics.compare import compare_lakes
from contracts import load_registry
from lake.reference import load_reference
from lake.storage import Store
from pipelines.batch_hooks import wait_for_data_docs
from pipelines.process import ProcessError, ingest_stats, process_once
from pipelines.settings import Settings, load_settings
from simulator.landing import simulate_to_landing
from tests.pipeline.conftest import CONFIG
from transforms.beam import BatchContext

POOL_START_TIMEOUT_S = 60.0
SEGMENTS_FIRST_BATCH = 60  # of the day's 116 (a redelivered one among them)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The pool and the SDK workers it started (its process group, named by its PID)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with_children = subprocess.run(
        ["ps", "-o", "pid=", "--sid", str(proc.pid)], capture_output=True, text=True, check=False
    )
    for pid in with_children.stdout.split():  # an SDK worker that outlived its pool
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ENERGYLAKE_* variable and no ./energylake.toml: the test's flags alone decide."""
    for name in list(os.environ):
        if name.startswith("ENERGYLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def worker_pool(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Beam SDK worker pool on a free loopback port: ``(host:port, its log)``."""
    port = _free_port()
    log = tmp_path / "worker-pool.log"
    env = dict(os.environ)
    # The pool starts each SDK worker as `python -c ...`: this interpreter's, by PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                f"--service_port={port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped with its workers
        )
    try:
        deadline = time.monotonic() + POOL_START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"the worker pool exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no worker pool on {port}:\n{log.read_text()}"
                time.sleep(0.1)
        yield f"localhost:{port}", log
    finally:
        _stop(proc)


def _land(data_dir: Path, same_as: Settings | None = None, **flags: Any) -> Settings:
    """The simulated day as closed segments and reference tables; with ``same_as``, that
    landing log's segments byte for byte (a second simulation names its segments anew)."""
    settings = load_settings(data_dir=data_dir, **flags)
    result = simulate_to_landing(CONFIG, settings.sim_dir, settings.landing)
    closed = settings.landing / "closed"
    if same_as is not None:
        shutil.rmtree(closed)
        shutil.copytree(same_as.landing / "closed", closed)
    else:
        # The first segment once more, as a gateway's redelivery after a crash lands it:
        # under another writer's name, among the second batch's segments, so only the
        # first batch's commits (the pinned snapshot) tell its readings are duplicates.
        names = sorted(p.name for p in closed.glob("*.seg"))
        stamp, instance = names[-1].split("-")[0], "0" * 16
        shutil.copyfile(closed / names[0], closed / f"{stamp}-redelivery-000001-{instance}.seg")
    load_reference(Store.from_uri(settings.lake), result.reference_dir, load_registry())
    return settings


@pytest.mark.slow
@pytest.mark.usefixtures("clean_env")
def test_sdk_workers_in_a_worker_pool_give_the_lake_of_the_in_process_runner(
    tmp_path: Path,
    s3_store: Store,
    worker_pool: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pooled lake is on S3 (moto's server on loopback; the pool has the AWS
    environment, started after ``s3_store`` set it): the workers reach the lake the way
    remote workers do, by its URI and their own environment, not through a shared disk."""
    address, pool_log = worker_pool
    local = _land(tmp_path / "in-process")
    pooled = _land(
        tmp_path / "pooled", same_as=local, beam_worker_pool=address, lake_uri=s3_store.uri
    )
    assert pooled.beam_worker_pool == address
    assert local.beam_worker_pool is None

    # In the pooled run the landing folder lets each batch's segments go once they are staged
    # in the lake, before Beam starts: what the workers read, they read from S3.
    run_beam = process._run_beam
    let_go: list[str] = []

    def landing_gone(ctx: BatchContext, *args: Any) -> None:
        if ctx.lake_uri == pooled.lake:
            for name, rel in ctx.segments.items():
                assert s3_store.exists(rel), f"{name} not staged before Beam ran"
                (pooled.landing / "closed" / name).unlink()
                let_go.append(name)
        run_beam(ctx, *args)

    monkeypatch.setattr(process, "_run_beam", landing_gone)

    # Two batches each: the second deduplicates and checks its series against the first's
    # commits (the pinned snapshot), as every batch after the first does.
    reports = []
    for settings in (local, pooled):
        started = time.perf_counter()
        first = process_once(settings, max_segments=SEGMENTS_FIRST_BATCH)
        second = process_once(settings)
        assert first is not None
        assert second is not None
        assert process_once(settings) is None  # every segment processed
        reports.append((first, second))
        print(f"{settings.data_dir.name}: two batches in {time.perf_counter() - started:.1f} s")
    (first, in_process), (pooled_first, through_pool) = reports

    # The DoFns ran in the pool's SDK worker processes, not in this one.
    assert "Starting worker with command" in pool_log.read_text(), pool_log.read_text()
    assert pooled_first.segments == first.segments
    assert through_pool.segments == in_process.segments
    assert sorted(let_go) == sorted(first.segments + in_process.segments)
    assert not (pooled.data_dir / "lake").exists()  # all of it on S3
    diff = compare_lakes(local.lake_store(), pooled.lake_store())
    empty = [t.table for t in diff.tables if not t.rows_a and not t.table.endswith("/quarantine")]
    assert not empty, f"empty tables: {empty}"
    assert diff.identical, [t for t in diff.tables if not t.identical]
    # Every kind of record is there to compare: the faults reach the quarantine and the gate.
    assert in_process.quarantined
    assert in_process.duplicates
    assert in_process.late
    assert any(t.table.endswith("/quality_results") for t in diff.tables)
    assert sorted(ingest_stats(pooled)) == sorted(ingest_stats(local))
    # Data Docs render the validations of the driver's GE context: in process, the batch's;
    # with the pool, none of this lake's (in this process: the other lake's), so not built.
    wait_for_data_docs(60)
    assert (local.data_dir / "quality" / "index.html").is_file()
    assert not (pooled.data_dir / "quality").exists()
    clock = {"seconds": 0, "gate_seconds": 0}
    assert pooled_first.as_dict() | clock == first.as_dict() | clock
    assert through_pool.as_dict() | clock == in_process.as_dict() | clock


@pytest.mark.usefixtures("clean_env")
def test_the_in_process_runner_takes_a_worker_pool_and_refuses_what_it_cannot_run(
    tmp_path: Path,
) -> None:
    # (Beam's classes by name: only transforms/ and pipelines/ import Beam.)
    runner, _ = process._beam_options(process.DEFAULT_RUNNER, [])
    assert type(runner._default_environment).__name__ == "EmbeddedPythonEnvironment"
    runner, _ = process._beam_options(
        process.DEFAULT_RUNNER, ["--environment_type=EXTERNAL", "--environment_config=h:1"]
    )
    assert type(runner._default_environment).__name__ == "ExternalEnvironment"
    assert runner._default_environment.url == "h:1"
    # FnApiRunner has no worker handler for PROCESS (Beam fails deep in the run with a
    # KeyError): refused before anything runs, with what to use instead.
    with pytest.raises(ProcessError, match="use EXTERNAL"):
        process._beam_options(process.DEFAULT_RUNNER, ["--environment_type=PROCESS"])
    with pytest.raises(ProcessError, match="worker_pool_main"):
        process._beam_options(process.DEFAULT_RUNNER, ["--environment_type=EXTERNAL"])
    # ... and by `process` before it takes the lock or claims a batch.
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(ProcessError, match="use EXTERNAL"):
        process_once(settings, beam_args=["--environment_type=PROCESS"])
    assert not settings.landing.exists()
    assert not Path(settings.lake).exists()
    # The setting adds the pool unless the arguments name an environment themselves.
    settings = load_settings(beam_worker_pool="localhost:50000")
    assert process._worker_args(settings, ["--x=1"]) == [
        "--x=1",
        "--environment_type=EXTERNAL",
        "--environment_config=localhost:50000",
    ]
    own = ["--environment_type=EXTERNAL", "--environment_config=other:1"]
    assert process._worker_args(settings, own) == own
    assert process._worker_args(load_settings(), ["--x=1"]) == ["--x=1"]


@pytest.mark.usefixtures("clean_env")
def test_workers_load_the_packaged_contracts_where_they_have_the_package(tmp_path: Path) -> None:
    """The driver's install path of the packaged contracts is not sent to the workers: a
    worker image installs the package elsewhere. A configured folder is sent as it is."""
    assert process._worker_contracts_dir(load_settings()) is None
    custom = tmp_path / "contracts"
    assert process._worker_contracts_dir(load_settings(contracts_dir=custom)) == str(custom)
    ctx = BatchContext(
        pipeline_id="main",
        batch_no=1,
        lake_uri=str(tmp_path / "lake"),
        contracts_dir=None,
        devices=pl.DataFrame(),
    )
    assert ctx.registry() is load_registry()  # the packaged ones, as this process has them
