"""Where a pipeline's batch state lives in the lake: the one module that knows the layout.

    _state/<pipeline>/
      last_done.json                      {"batch_no": n}: the last finished batch
      batches/<n:010d>/manifest.json      claimed segments and pinned table versions
      batches/<n:010d>/plan.json          files, counts and gate verdicts of the transform
      batches/<n:010d>/done.json          the finished batch's report
      batches/<n:010d>/audited.json       the batch's security quarantines are audited
      decisions/<n:010d>.<tenant>.<dataset>.json   counts of a decision on held rows

Writes of a whole record go through ``Store.put_bytes`` (atomic on every store); the
manifest is claimed with ``put_if_absent``, so two claims of batch ``n`` agree.
"""

from __future__ import annotations

import json

from batch.records import Done, Manifest, Plan, TableStat, dumps
from lake.layout import state_rel
from lake.storage import Store

__all__ = ["BatchState"]

_MANIFEST = "manifest.json"
_PLAN = "plan.json"
_DONE = "done.json"
_AUDITED = "audited.json"
_LAST_DONE = "last_done.json"
_DECISIONS = "decisions"


class BatchState:
    """One pipeline's batch records in a lake."""

    def __init__(self, store: Store, pipeline_id: str) -> None:
        self.store = store
        self.pipeline_id = pipeline_id

    # --- paths (relative to the lake) -----------------------------------------------------

    def _batch_rel(self, n: int, name: str) -> str:
        return state_rel(self.pipeline_id, "batches", f"{n:010d}", name)

    def plan_rel(self, n: int) -> str:
        """Where batch ``n``'s plan is (Beam's last step writes it there)."""
        return self._batch_rel(n, _PLAN)

    def audited_rel(self, n: int) -> str:
        """The marker that batch ``n``'s security quarantines are audited."""
        return self._batch_rel(n, _AUDITED)

    def decision_rel(self, n: int, tenant: str, dataset: str) -> str:
        """Where a decision on batch ``n``'s held ``tenant``/``dataset`` rows keeps its counts."""
        return state_rel(self.pipeline_id, _DECISIONS, f"{n:010d}.{tenant}.{dataset}.json")

    # --- records --------------------------------------------------------------------------

    def last_done(self) -> int:
        """The last finished batch (0: none)."""
        raw = self.store.get_bytes(state_rel(self.pipeline_id, _LAST_DONE))
        return int(json.loads(raw)["batch_no"]) if raw else 0

    def manifest(self, n: int) -> Manifest | None:
        raw = self.store.get_bytes(self._batch_rel(n, _MANIFEST))
        return Manifest.from_json(raw) if raw else None

    def claim(self, manifest: Manifest) -> Manifest:
        """Write ``manifest`` unless its batch is claimed; returns the claim that holds."""
        n = manifest.batch_no
        if self.store.put_if_absent(self._batch_rel(n, _MANIFEST), manifest.to_json()):
            return manifest
        existing = self.manifest(n)
        assert existing is not None
        return existing

    def plan(self, n: int) -> Plan | None:
        raw = self.store.get_bytes(self.plan_rel(n))
        return Plan.from_json(raw) if raw else None

    def put_plan(self, n: int, plan: Plan) -> None:
        self.store.put_bytes(self.plan_rel(n), plan.to_json())

    def done(self, n: int) -> Done | None:
        raw = self.store.get_bytes(self._batch_rel(n, _DONE))
        return Done.from_json(raw) if raw else None

    def finish(self, done: Done) -> None:
        """Record batch ``done.batch_no`` as finished: its report, then the pointer."""
        self.store.put_bytes(self._batch_rel(done.batch_no, _DONE), done.to_json())
        self.store.put_bytes(
            state_rel(self.pipeline_id, _LAST_DONE), dumps({"batch_no": done.batch_no})
        )

    def decision_stats(self) -> list[TableStat]:
        """The counts of every decision on held rows."""
        out: list[TableStat] = []
        for rel in self.store.list(state_rel(self.pipeline_id, _DECISIONS)):
            raw = self.store.get_bytes(rel)
            if raw:
                out.extend(TableStat.from_row(s) for s in json.loads(raw)["stats"])
        return out
