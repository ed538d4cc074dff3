"""The batch records: JSON round trips, files written before versions, unknown versions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch.records import (
    RECORD_VERSION,
    Done,
    GateVerdict,
    Manifest,
    Plan,
    RecordVersionError,
    StatKind,
    TableEntry,
    TableStat,
)
from contracts import EnergylakeError

_FILE = {
    "path": "branch_id=b1/part-00001-p.parquet",
    "size": 1234,
    "partition_values": {"branch_id": "b1"},
    "num_records": 7,
    "modification_time": 1,
    "stats": "{}",
}
_GATE: dict[str, Any] = {
    "passed": False,
    "held_devices": ["m-1"],
    "rows": 7,
    "summary": "HELD: freshness",
    "blocking_failures": ["freshness"],
    "warnings": ["spread"],
    "reasons": {"freshness": "late", "spread": "wide"},
    "assertions": [{"assertion": "freshness", "success": False, "column": None}],
    "contract": "meter_readings@1.0.0",
    "seconds": 0.0123,
}

# plan.json byte for byte as ``pipelines.process._write_plan`` wrote it before the records
# were typed and versioned (json.dumps(indent=1, sort_keys=True) + newline; no "version").
_LEGACY_PLAN = (
    json.dumps(
        {
            "tables": {
                "tenants/t0/meter_readings": {
                    "dataset": "meter_readings",
                    "files": [_FILE],
                    "held_files": [],
                },
                "tenants/t0/quarantine": {"dataset": "quarantine", "files": []},
            },
            "stats": [
                ["damaged", "", "", "", "seg-1", 12],
                ["day", "t0", "meter_readings", "b1", "2026-03-02", 7],
                ["quarantined", "t0", "quarantine", "b1", "BAD_JSON", 2],
                ["written", "t0", "meter_readings", "b1", "", 7],
            ],
            "gate": {"tenants/t0/meter_readings": _GATE},
        },
        indent=1,
        sort_keys=True,
    )
    + "\n"
).encode()


def test_a_plan_written_before_versions_reads_and_keeps_its_content() -> None:
    plan = Plan.from_json(_LEGACY_PLAN)
    assert plan.tables["tenants/t0/meter_readings"] == TableEntry("meter_readings", [_FILE], [])
    assert plan.tables["tenants/t0/quarantine"].held_files is None  # not split
    assert plan.stats[0] == TableStat(StatKind.DAMAGED, "", "", "", "seg-1", 12)
    assert {s.kind for s in plan.stats} == {
        StatKind.DAMAGED,
        StatKind.DAY,
        StatKind.QUARANTINED,
        StatKind.WRITTEN,
    }
    gate = plan.gate["tenants/t0/meter_readings"]
    assert (gate.passed, gate.held_devices, gate.blocking_failures) == (
        False,
        ["m-1"],
        ["freshness"],
    )
    # Written again, it is the old file plus the record version, nothing else.
    again = json.loads(plan.to_json())
    assert again.pop("version") == RECORD_VERSION
    assert again == json.loads(_LEGACY_PLAN)


def test_every_record_round_trips() -> None:
    plan = Plan(
        tables={"tenants/t0/meter_readings": TableEntry("meter_readings", [_FILE])},
        stats=[TableStat(StatKind.WRITTEN, "t0", "meter_readings", "b1", "", 7)],
        gate={"tenants/t0/meter_readings": GateVerdict.from_dict(_GATE)},
    )
    manifest = Manifest(3, "main", ["20260302-a.seg"], {"tenants/t0/x": 4, "y": None}, "now")
    done = Done(3, ["20260302-a.seg"], True, rows={"tenants/t0/x": 5}, held={"x": ["r"]})
    assert Plan.from_json(plan.to_json()) == plan
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Done.from_json(done.to_json()) == done
    assert GateVerdict.from_dict(_GATE).to_dict() == _GATE
    for raw in (plan.to_json(), manifest.to_json(), done.to_json()):
        assert json.loads(raw)["version"] == RECORD_VERSION


def test_stats_sort_as_their_rows_did() -> None:
    rows = [
        ["written", "t0", "a", "b", "", 1],
        ["day", "t1", "a", "b", "2026-01-01", 2],
        ["held", "t0", "a", "b", "", 3],
        ["duplicates", "t0", "a", "", "", 4],
    ]
    assert [s.to_row() for s in sorted(TableStat.from_row(r) for r in rows)] == sorted(rows)


def test_an_unknown_stat_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="shipped"):
        TableStat.from_row(["shipped", "t0", "a", "b", "", 1])


@pytest.mark.parametrize("record", [Plan, Manifest, Done])
def test_a_record_of_an_unknown_version_is_a_clear_error(record: Any) -> None:
    raw = json.dumps({"version": RECORD_VERSION + 1, "batch_no": 1}).encode()
    with pytest.raises(RecordVersionError, match="upgrade energylake") as err:
        record.from_json(raw)
    assert isinstance(err.value, EnergylakeError)
    assert f"version {RECORD_VERSION + 1}" in str(err.value)
