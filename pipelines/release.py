"""Held batches: publish them after a fix or a decision (``energylake quality release``), or
record that they stay out (``energylake quality discard``).

When the quality gate fails a blocking rule on a table's rows, ``process`` writes the rows'
files but commits the table with no files (the batch's app transaction is recorded, so a
replay publishes nothing) and the plan keeps the files. A release:

1. reads the held files back, and drops any row whose ``(device_id, seq, ts)`` the table
   holds by now (a redelivery may have been published by a later batch): exactly once
   still (the event time too: a device that restarted its numbering sends a seq again,
   later);
2. writes what is left as new files with names derived from the batch (a retried release
   rewrites the same names);
3. commits them in ONE commit with the app transaction ``(<pipeline>-release-<n>, 1)``,
   so a second release of the same batch commits nothing, through the lake's guarded
   commit (``lake.guard``): a batch that commits some of the same readings between step 1
   and the commit cannot make them appear twice;
4. records the decision in ``quality_results`` and a lineage run (``quality.release``)
   whose output is the table's new version. Who decided is written to the audit log
   (``audit/pipeline/``) and the quality_results row (a personal field under its
   contract), never into Delta commit metadata, lineage facets or file names.

Dry run by default: ``apply=False`` reports what would be published.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import load_registry
from gateway.audit import AuditLog
from lake.delta import DataFile, latest_version, read_table, write_data_file
from lake.guard import READING_KEY, commit_guarded
from lake.layout import state_rel
from lake.storage import Store
from lineage import LineageEmitter, jobs
from lineage.emitter import TableDataset
from lineage.runs import uri_of
from pipelines.settings import Settings
from transforms.quality_results import held_batches, record_decision

__all__ = ["ReleaseError", "Released", "held_tables", "release_batch"]


class ReleaseError(ValueError):
    """The batch cannot be released: unknown, unfinished, or nothing of it is held."""


@dataclass
class Released:
    rel: str
    rows_held: int
    rows_published: int = 0
    already_in_table: int = 0
    files: int = 0
    version: int | None = None
    decided: bool = False  # a decision was recorded now
    skipped: str = ""  # why nothing happened to this table
    devices: list[str] | None = None  # whose rows were held; None: the whole table


@dataclass
class ReleaseReport:
    batch_id: str
    decision: str
    applied: bool
    tables: list[Released] = field(default_factory=list)


def _batch_no(batch: str, pipeline_id: str) -> int:
    text = batch.split(":", 1)[1] if ":" in batch else batch
    if ":" in batch and batch.split(":", 1)[0] != pipeline_id:
        raise ReleaseError(f"batch {batch!r} belongs to pipeline {batch.split(':', 1)[0]!r}")
    if not text.isdigit() or int(text) < 1:
        raise ReleaseError(f"batch {batch!r}: expected N or {pipeline_id}:N")
    return int(text)


def held_tables(store: Store, pipeline_id: str, n: int) -> dict[str, dict[str, Any]]:
    """The batch's held tables: rel -> {dataset, files (the held ones), devices, gate}.

    ``devices``: the devices whose rows are held (None: the whole table was held)."""
    raw = store.get_bytes(state_rel(pipeline_id, "batches", f"{n:010d}", "plan.json"))
    done = store.get_bytes(state_rel(pipeline_id, "batches", f"{n:010d}", "done.json"))
    if raw is None or done is None:
        raise ReleaseError(f"batch {pipeline_id}:{n} is unknown or not finished")
    plan = json.loads(raw)
    out = {}
    for rel, gate in plan.get("gate", {}).items():
        if gate["passed"] or rel not in plan["tables"]:
            continue
        entry = plan["tables"][rel]
        files = entry.get("held_files", entry["files"])  # a plan from before partial holds
        out[rel] = {**entry, "files": files, "devices": gate.get("held_devices"), "gate": gate}
    return out


def _read_files(store: Store, rel: str, files: list[dict[str, Any]]) -> pa.Table:
    fs, base = store.filesystem()
    tables = []
    for f in files:
        table = pq.read_table(f"{base}/{rel}/{f['path']}", filesystem=fs)
        for key, value in sorted(f["partition_values"].items()):
            table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive")


def _release_name(n: int, rel: str, partition: dict[str, str]) -> str:
    key = rel + "|" + "|".join(f"{k}={v}" for k, v in sorted(partition.items()))
    return f"part-r{n:010d}-{hashlib.sha256(key.encode()).hexdigest()[:16]}-000.zstd.parquet"


def release_batch(
    settings: Settings,
    batch: str,
    *,
    decided_by: str,
    reason: str,
    decision: str = "release",
    tables: list[str] | None = None,
    apply: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> ReleaseReport:
    """Publish (``release``) or keep out (``discard``) a held batch's tables; a dry run
    unless ``apply``. ``before_commit`` runs between the duplicate check and the commit:
    where another writer can interleave (tests use it to commit a batch there)."""
    if decision not in ("release", "discard"):
        raise ReleaseError(f"decision must be release or discard, not {decision!r}")
    if not reason.strip() or not decided_by.strip():
        raise ReleaseError("a decision needs who (--by) and why (--reason)")
    store = settings.lake_store()
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    n = _batch_no(batch, settings.pipeline_id)
    batch_id = f"{settings.pipeline_id}:{n}"
    held = held_tables(store, settings.pipeline_id, n)
    if tables:
        unknown = sorted(set(tables) - set(held))
        if unknown:
            raise ReleaseError(f"not held in {batch_id}: {', '.join(unknown)}")
        held = {rel: held[rel] for rel in tables}
    if not held:
        raise ReleaseError(f"batch {batch_id} holds nothing: every table passed the gate")
    undecided = held_batches(store).filter(pl.col("batch_id") == batch_id)
    open_keys = {(t, d) for t, d in undecided.select("client_id", "dataset").iter_rows()}
    report = ReleaseReport(batch_id, decision, apply)
    emitter = LineageEmitter.from_settings(settings) if apply else None
    audit = AuditLog(settings.data_dir / "audit" / "pipeline", component="quality")
    for rel, entry in sorted(held.items()):
        tenant, dataset = rel.split("/")[1], entry["dataset"]
        contract = registry.get(dataset)
        rows = _read_files(store, rel, entry["files"]) if entry["files"] else None
        item = Released(rel, rows.num_rows if rows is not None else 0, devices=entry["devices"])
        report.tables.append(item)
        if (tenant, dataset) not in open_keys:
            item.skipped = "already decided"
            continue
        publish = rows
        checked = latest_version(store, rel)
        if rows is not None and decision == "release" and checked is not None:
            devices = pc.unique(rows.column("device_id")).to_pylist()
            have = read_table(
                store,
                rel,
                columns=list(READING_KEY),
                filter=pc.field("device_id").isin(devices),
                version=checked,
            )
            if have.num_rows:
                left = pl.from_arrow(rows)
                assert isinstance(left, pl.DataFrame)
                seen = pl.from_arrow(have)
                assert isinstance(seen, pl.DataFrame)
                kept = left.join(seen, on=list(READING_KEY), how="anti")
                item.already_in_table = left.height - kept.height
                publish = kept.to_arrow()
        if decision == "release":
            item.rows_published = publish.num_rows if publish is not None else 0
        if not apply:
            continue
        version: int | None = None
        if decision == "release" and publish is not None and publish.num_rows:
            files = _write(store, rel, contract, publish, n)
            item.files = len(files)
            run = emitter.run(jobs.generic("quality.release", "RELEASE")) if emitter else None
            if run is not None:
                run.run_info.update({"batch_id": batch_id, "table": rel})
                run.start()
            if before_commit is not None:
                before_commit()
            guarded = commit_guarded(
                store,
                rel,
                contract,
                files,
                app_id=f"{settings.pipeline_id}-release-{n}",
                version=1,
                metadata={"energylake.batch": batch_id, "energylake.operation": "release"},
                checked_version=checked,
            )
            files = guarded.files
            item.files = len(files)
            item.already_in_table += guarded.dropped.height
            item.rows_published -= guarded.dropped.height
            version = _version_of(store, rel, batch_id)
            item.version = version
            if run is not None:
                run.complete(
                    [
                        TableDataset(
                            uri_of(store.url()),
                            rel,
                            version,
                            contract,
                            tenant,
                            rows=item.rows_published,
                            size_bytes=sum(f.size for f in files),
                            files=len(files),
                        )
                    ]
                )
        audit.record(
            f"quality_{decision}",
            client_id=tenant,
            detail=f"{batch_id} {dataset}: {reason}"[:2000],
            actor=decided_by,
        )
        item.decided = record_decision(
            store,
            tenant=tenant,
            dataset=dataset,
            batch_id=batch_id,
            decision=decision,  # type: ignore[arg-type]
            decided_by=decided_by,
            reason=reason,
            contract_ref=entry["gate"]["contract"],
        )
    audit.close()
    return report


def _write(store: Store, rel: str, contract: Any, rows: pa.Table, n: int) -> list[DataFile]:
    schema = contract.arrow_schema()
    parts = contract.partition_columns
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    out = []
    for values, part in frame.group_by(parts, maintain_order=True):
        partition = {k: str(v) for k, v in zip(parts, values, strict=True)}
        table = part.sort("device_id", "ts", "seq").to_arrow().select(schema.names).cast(schema)
        out.append(write_data_file(store, rel, table, partition, _release_name(n, rel, partition)))
    return out


def _version_of(store: Store, rel: str, batch_id: str) -> int | None:
    from lake.delta import open_table

    for entry in open_table(store, rel).history(50):
        if (
            entry.get("energylake.operation") == "release"
            and entry.get("energylake.batch") == batch_id
        ):
            return int(entry["version"])
    return None
