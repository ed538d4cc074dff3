"""A simulated fleet landed as segments, its reference data loaded, then processed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import BatchReport, process_once
from pipelines.settings import Settings, load_settings
from simulator.config import FaultRates, SimConfig
from simulator.landing import simulate_to_landing

# Every fault on, counter resets and stuck sensors often enough to appear in one day.
FAULTS = FaultRates().with_overrides({"counter_reset": 0.8, "stuck_sensor": 0.8})
CONFIG = SimConfig(clients=2, branches=3, days=1, seed=7, faults=FAULTS)


@dataclass
class Processed:
    settings: Settings
    store: Store
    manifest: dict[str, Any]
    sim_dir: Path
    segments: list[Path]
    report: BatchReport


def land(
    tmp: Path, config: SimConfig = CONFIG, lake_uri: str | None = None
) -> tuple[Settings, dict[str, Any], list[Path]]:
    settings = load_settings(data_dir=tmp, lake_uri=lake_uri)
    result = simulate_to_landing(config, settings.sim_dir, settings.landing)
    load_reference(Store.from_uri(settings.lake), result.reference_dir, _registry())
    segments = sorted((settings.landing / "closed").glob("*.seg"))
    return settings, result.manifest, segments


def _registry() -> Any:
    from contracts import load_registry

    return load_registry()


@pytest.fixture(scope="package")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Processed:
    tmp = tmp_path_factory.mktemp("processed")
    settings, manifest, segments = land(tmp)
    copies = {p.name: p.read_bytes() for p in segments}
    report = process_once(settings)
    assert report is not None
    # Keep the segments' bytes for tests that re-read what was processed.
    keep = tmp / "segments-copy"
    keep.mkdir()
    for name, data in copies.items():
        (keep / name).write_bytes(data)
    return Processed(
        settings=settings,
        store=Store.from_uri(settings.lake),
        manifest=manifest,
        sim_dir=settings.sim_dir,
        segments=sorted(keep.glob("*.seg")),
        report=report,
    )
