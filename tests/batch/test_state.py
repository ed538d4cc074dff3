"""The batch state's layout in the lake (on disk and on S3): one module knows it."""

from __future__ import annotations

import json

from batch.records import Done, Manifest, Plan, StatKind, TableEntry, TableStat
from batch.state import BatchState
from lake.storage import Store


def test_the_state_layout(store: Store) -> None:
    state = BatchState(store, "main")
    assert state.last_done() == 0
    assert state.manifest(1) is None
    assert state.plan(1) is None
    assert state.done(1) is None

    first = Manifest(1, "main", ["a.seg"], {"tenants/t0/x": None}, "t")
    assert state.claim(first) == first
    # A second claim of batch 1 finds the first one.
    assert state.claim(Manifest(1, "main", ["b.seg"], {}, "u")) == first
    plan = Plan(
        tables={"tenants/t0/x": TableEntry("x", [])},
        stats=[TableStat(StatKind.LATE, "t0", "x", "b1", "", 2)],
    )
    state.put_plan(1, plan)
    state.finish(Done(1, ["a.seg"], False, late=2))

    batch = "_state/main/batches/0000000001"
    assert json.loads(store.get_bytes(f"{batch}/manifest.json") or b"")["segments"] == ["a.seg"]
    assert json.loads(store.get_bytes(f"{batch}/plan.json") or b"")["stats"] == [
        ["late", "t0", "x", "b1", "", 2]
    ]
    assert json.loads(store.get_bytes(f"{batch}/done.json") or b"")["late"] == 2
    assert json.loads(store.get_bytes("_state/main/last_done.json") or b"") == {"batch_no": 1}
    assert state.plan_rel(1) == f"{batch}/plan.json"
    assert state.audited_rel(1) == f"{batch}/audited.json"
    assert state.decision_rel(1, "t0", "x") == "_state/main/decisions/0000000001.t0.x.json"
    assert (state.last_done(), state.plan(1), state.done(1)) == (
        1,
        plan,
        Done(1, ["a.seg"], False, late=2),
    )


def test_decision_counts_are_read_typed(local_store: Store) -> None:
    state = BatchState(local_store, "main")
    rows = [["released", "t0", "x", "b1", "", 3], ["decided", "t0", "x", "b1", "", 3]]
    local_store.put_bytes(state.decision_rel(1, "t0", "x"), json.dumps({"stats": rows}).encode())
    assert [s.to_row() for s in state.decision_stats()] == rows
