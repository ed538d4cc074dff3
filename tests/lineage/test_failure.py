"""A batch that fails for real emits FAIL with an errorMessage; its retry continues the same
run (same run id), and the batch still commits exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lake.layout import table_rel, tenants
from lake.reference import load_device_registry
from lake.storage import Store
from lineage import batch_run_id
from pipelines.process import process_once
from simulator.config import SimConfig
from tests.lineage.conftest import EventValidator, read_events
from tests.pipeline.conftest import FAULTS, land


@pytest.mark.slow
def test_fail_then_retry_keeps_the_run_id(tmp_path: Path, validator: EventValidator) -> None:
    settings, _, _ = land(tmp_path, SimConfig(clients=1, branches=2, days=1, seed=3, faults=FAULTS))
    store = Store.from_uri(settings.lake)
    tenant = next(t for t in tenants(store) if not t.startswith("_"))
    # Files where the meter table's partition directories must go: the lake path cannot be
    # written (even by root), so the Beam write stage fails after the batch has been claimed.
    table = Path(settings.lake) / table_rel(tenant, "meter_readings")
    table.mkdir(parents=True, exist_ok=True)
    branches = set(load_device_registry(store).column("branch_id").to_pylist())
    blockers = [table / f"branch_id={b}" for b in sorted(branches)]
    for blocker in blockers:
        blocker.write_text("not a directory")
    with pytest.raises(Exception, match=r"[Nn]ot a directory|NotADirectory"):
        process_once(settings)
    events = read_events(tmp_path / "lineage")
    run_id = batch_run_id("energylake", "main", 1)
    assert [(e["eventType"], e["run"]["runId"]) for e in events] == [
        ("START", run_id),
        ("FAIL", run_id),
    ]
    error = events[-1]["run"]["facets"]["errorMessage"]
    assert "Not a directory" in error["message"] or "NotADirectory" in error["message"]
    assert error["programmingLanguage"] == "PYTHON"
    for blocker in blockers:
        blocker.unlink()
    report = process_once(settings)  # the retry resumes batch 1
    assert report is not None
    assert report.batch_no == 1
    assert report.resumed
    events = read_events(tmp_path / "lineage")
    assert [e["eventType"] for e in events] == ["START", "FAIL", "START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_id}
    for event in events:
        validator.validate(event)
    assert "errorMessage" in validator.checked
    outputs = {o["name"] for o in events[-1]["outputs"]}
    assert table_rel(tenant, "meter_readings") in outputs
