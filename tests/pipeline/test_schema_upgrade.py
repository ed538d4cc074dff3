"""A lake written under the contracts before this version's optional columns (``boot`` on
the readings tables; ``claimed_device_id`` and ``claimed_device_sha256`` on the quarantine)
is upgraded in place by the next batch: the columns are added (a commit of metadata only),
older rows read them as null, and deduplication against those rows still works."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from analytics.queries import read_frame
from contracts import load_registry
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import ingest_stats, process_once
from pipelines.settings import load_settings
from simulator.config import FaultRates, SimConfig
from simulator.landing import simulate_to_landing

READINGS = load_registry().readings_datasets

NEW = {"boot", "claimed_device_id", "claimed_device_sha256"}
CONFIG = SimConfig(clients=1, branches=1, days=1, seed=3, faults=FaultRates())


def _old_contracts(to: Path) -> Path:
    """The packaged contracts without this version's optional columns."""
    src = Path(load_registry().get("quarantine").path).parent
    to.mkdir()
    for path in src.iterdir():
        if path.suffix != ".yaml" or not path.name.endswith(".odcs.yaml"):
            shutil.copy(path, to / path.name)
            continue
        data = yaml.safe_load(path.read_text())
        props = data["schema"][0]["properties"]
        data["schema"][0]["properties"] = [p for p in props if p["name"] not in NEW]
        for rule in data["schema"][0].get("quality", []):
            names = (rule.get("arguments") or {}).get("properties")
            if names:
                rule["arguments"]["properties"] = [n for n in names if n != "ts"] or names
        data["version"] = "1.0.0-old"
        (to / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return to


@pytest.mark.slow
def test_an_older_lake_gains_the_new_columns_and_keeps_deduplicating(tmp_path: Path) -> None:
    # (no gate under the old contracts: its suites are per process, by dataset name)
    old = load_settings(
        data_dir=tmp_path / "data",
        contracts_dir=_old_contracts(tmp_path / "c"),
        quality_gate=False,
    )
    result = simulate_to_landing(CONFIG, old.sim_dir, old.landing)
    store = Store.from_uri(old.lake)
    load_reference(store, result.reference_dir, load_registry())
    # The first half of the day under the old contracts; then the second half, and the
    # first half again (every reading of it a redelivery), under the new ones.
    segments = sorted((old.landing / "closed").glob("*.seg"))
    half = len(segments) // 2
    again = tmp_path / "again"
    again.mkdir()
    for seg in segments[:half]:
        shutil.copy(seg, again / seg.name)
    assert process_once(old, max_segments=half) is not None
    tenant = CONFIG_TENANT(store)
    first = {d: read_frame(store, tenant, d, ["device_id", "seq"]) for d in READINGS}
    assert first["meter_readings"].height > 0

    new = load_settings(data_dir=tmp_path / "data")
    for seg in again.iterdir():
        seg.rename(new.landing / "closed" / f"again-{seg.name}")
    assert process_once(new) is not None
    duplicates = sum(n for kind, *_, n in ingest_stats(new) if kind == "duplicates")
    assert duplicates >= sum(f.height for f in first.values())  # each one landed again
    for dataset in READINGS:
        frame = read_frame(store, tenant, dataset, ["device_id", "seq", "boot"])
        if frame.is_empty() and first[dataset].is_empty():
            continue  # (a fleet this small has no device of every kind)
        assert frame["boot"].null_count() == frame.height  # the simulator sends none
        assert frame.height > first[dataset].height  # the second half went in
        once = frame.group_by("device_id", "seq").len()
        assert once["len"].max() == 1  # the first half once
    q = read_frame(store, tenant, "quarantine", ["device_id", "claimed_device_id"])
    assert q.height > 0
    assert pl.Series(q["claimed_device_id"]).null_count() < q.height  # the second batch's


def CONFIG_TENANT(store: Store) -> str:  # noqa: N802
    from lake.layout import tenants

    (tenant,) = tenants(store)
    return tenant
