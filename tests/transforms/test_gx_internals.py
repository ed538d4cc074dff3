"""Great Expectations beyond its documented API (transforms/gx_internals.py): the gate's
engine does not hash each batch for a fingerprint it never reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from contracts import load_registry
from transforms import quality
from transforms.gx_internals import fingerprinted
from transforms.quality_rules import rule_specs


def test_the_gates_rows_validation_does_not_fingerprint_the_batch() -> None:
    contract = load_registry().get("meter_readings")
    specs = [s for s in rule_specs(contract) if s.kind == "row"]
    engine = quality._engine()  # the one engine every gate of this process runs on
    suite = engine.suite(contract, "row", specs)
    n = 1_000
    rows = pl.DataFrame(
        {
            "_missing_required": [0] * n,
            "_out_of_range": [0] * n,
            "device_id": [f"MTR-{i % 10:04d}" for i in range(n)],
            "seq": list(range(n)),
            "ts": [datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)],
        }
    )
    result, _ = engine.run(suite, rows, [], boolean_only=True)
    assert result.success
    # GE did record the batch's markers (when it loaded it), only not the fingerprint.
    assert "ge_load_time" in result.meta["batch_markers"]
    assert not fingerprinted(result), result.meta["batch_markers"]
