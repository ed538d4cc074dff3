"""The gate's results are an effect of the batch that the runner commits: Beam writes the
quality_results files, the runner commits them after the tables, each with the batch's app
transaction, so a batch that crashes before or between its commits, run again, leaves
exactly one quality_results commit per table and no second commit of any table."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import load_registry
from lake.delta import app_txn_version, open_table, table_exists
from lake.layout import table_rel, tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines import process
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from simulator.landing import LandingSink
from simulator.run import simulate
from tests.pipeline.conftest import CONFIG


class _CrashError(Exception):
    pass


def _landed(tmp: Path) -> tuple[Settings, Store]:
    settings = load_settings(data_dir=tmp, quality_gate=True)
    sink = LandingSink(settings.landing)
    result = simulate(CONFIG, settings.sim_dir, registry=load_registry(), sink=sink)
    sink.finish()
    store = Store.from_uri(settings.lake)
    load_reference(store, result.reference_dir, load_registry())
    return settings, store


def _quality_tables(store: Store) -> list[str]:
    return [
        rel for t in tenants(store) if table_exists(store, rel := table_rel(t, "quality_results"))
    ]


def _commits(store: Store, rel: str, key: str) -> list[str]:
    return [str(e[key]) for e in open_table(store, rel).history() if key in e]


def _crash() -> None:
    raise _CrashError


def _exactly_once(store: Store) -> None:
    quality = _quality_tables(store)
    assert quality, "the gate recorded no results"
    for rel in quality:
        # one results commit per dataset the tenant's batch judged, each exactly once
        keys = _commits(store, rel, "energylake.app_id")
        assert keys, rel
        assert len(keys) == len(set(keys)), f"{rel}: a results commit was repeated: {keys}"
        assert app_txn_version(store, rel, "main.quality.meter_readings") == 1
    for t in tenants(store):
        rel = table_rel(t, "meter_readings")
        if table_exists(store, rel):
            assert _commits(store, rel, "energylake.batch") == ["main:1"], rel


@pytest.mark.slow  # ~2.7 s: one whole batch (make test runs it)
def test_results_are_committed_by_the_runner_after_the_tables(tmp_path: Path) -> None:
    settings, store = _landed(tmp_path)
    with pytest.raises(_CrashError):
        process_once(settings, before_commit=_crash)
    # Beam ran and wrote the results' files, but nothing of the batch is committed yet.
    for rel in _quality_tables(store):
        assert app_txn_version(store, rel, "main.quality.meter_readings") is None, rel
        assert _commits(store, rel, "energylake.app_id") == [], rel
    report = process_once(settings)
    assert report is not None
    assert report.resumed
    _exactly_once(store)


@pytest.mark.slow  # ~3.2 s: two whole batches, one crashed (make test runs it)
def test_a_crash_between_the_table_and_the_results_commits_replays_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = _landed(tmp_path)
    committed = process.commit_results_files

    def crash_after_one(*args: object, **kwargs: object) -> list[str]:
        # the first results file commits, then the process dies
        store_, written = args[0], args[1]
        assert isinstance(written, list)
        committed(store_, written[:1], **kwargs)  # type: ignore[arg-type]
        raise _CrashError

    monkeypatch.setattr(process, "commit_results_files", crash_after_one)
    with pytest.raises(_CrashError):
        process_once(settings)
    assert process_once.__module__ == "pipelines.process"
    monkeypatch.undo()
    report = process_once(settings)
    assert report is not None
    assert report.resumed
    assert report.committed == []  # every table had its commit already
    _exactly_once(store)
