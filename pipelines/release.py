"""Held batches: publish them after a fix or a decision (``energylake quality release``), or
record that they stay out (``energylake quality discard``).

When the quality gate fails a blocking rule, ``process`` moves the rows of the devices the
rule names (or of the whole table) into held files under the table's ``_held/`` folder,
records them in the plan (``held_files``) and commits the rest. A release:

1. reads the held files back and deduplicates them against what the table holds by now,
   with the batch's rules (``transforms.series.dedupe_against``: copies of one
   (device_id, boot epoch, seq)): a copy with the same content (a later batch published
   a redelivery) is a duplicate and left out; one with other content is a SEQ_CONFLICT,
   kept out of the table and written to the tenant's quarantine (source ``held``, the
   held file as its segment, the reading as its payload); a reading after a restart of
   the device's numbering is kept;
2. writes what is left as new files with names derived from the batch (a retried release
   rewrites the same names);
3. records its counts (``_state/<pipeline>/decisions/``: released, duplicates,
   quarantined, discarded per branch) before it commits, so the batch's ledger still adds
   up (``ingest_stats``);
4. commits the quarantine rows (app transaction ``(<pipeline>-release-<n>-<dataset>, 1)``)
   and the readings in ONE commit with the app transaction ``(<pipeline>-release-<n>,
   1)``, so a second release of the same batch commits nothing, through the lake's
   guarded commit (``lake.guard``): a batch that commits some of the same readings
   between step 1 and the commit cannot make them appear twice (the record is amended);
5. records the decision in ``quality_results`` and a lineage run (``quality.release``)
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
from typing import Any, ClassVar

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from audit.log import AuditLog
from batch.state import BatchState
from contracts import load_registry
from contracts.errors import EXIT_CONFIG, EnergylakeError
from lake.delta import DataFile, commit_files, ensure_table, latest_version, write_data_file
from lake.guard import commit_guarded
from lake.layout import table_rel
from lake.storage import Store
from lineage import LineageEmitter, jobs
from lineage.emitter import TableDataset
from lineage.runs import uri_of
from pipelines.settings import Settings
from transforms.beam import QUARANTINE, read_committed
from transforms.frames import empty_quarantine
from transforms.quality_results import held_batches, record_decision
from transforms.series import committed_columns, dedupe_against

__all__ = [
    "ReleaseError",
    "Released",
    "held_tables",
    "release_batch",
]


class ReleaseError(EnergylakeError, ValueError):
    """The batch cannot be released: unknown, unfinished, or nothing of it is held.

    The operator named a batch or a decision that does not fit (exit code 2); also a
    ``ValueError``, as it was before the hierarchy.
    """

    exit_code: ClassVar[int] = EXIT_CONFIG


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
    conflicts: int = 0  # held readings whose seq the table holds with other content
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
    state = BatchState(store, pipeline_id)
    plan = state.plan(n)
    if plan is None or state.done(n) is None:
        raise ReleaseError(f"batch {pipeline_id}:{n} is unknown or not finished")
    out = {}
    for rel, gate in plan.gate.items():
        if gate.passed or rel not in plan.tables:
            continue
        entry = plan.tables[rel]
        # a plan from before partial holds held the table whole
        files = entry.files if entry.held_files is None else entry.held_files
        out[rel] = {
            **entry.to_dict(),
            "files": files,
            "devices": gate.held_devices,
            "gate": gate.to_dict(),
        }
    return out


def _read_files(store: Store, rel: str, files: list[dict[str, Any]]) -> pa.Table:
    """The held rows, with ``_held_file`` and ``_held_row`` (where each one waits)."""
    fs, base = store.filesystem()
    tables = []
    for f in files:
        table = pq.read_table(f"{base}/{rel}/{f['path']}", filesystem=fs)
        for key, value in sorted(f["partition_values"].items()):
            table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
        table = table.append_column("_held_file", pa.array([f["path"]] * table.num_rows))
        table = table.append_column("_held_row", pa.array(range(table.num_rows), pa.int64()))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive")


def _conflict_rows(
    conflicts: pl.DataFrame, registry: Any, tenant: str, rel: str, batch_id: str, ref: str
) -> pl.DataFrame:
    """Quarantine rows (contract ``quarantine``) for held readings in SEQ_CONFLICT."""
    out = empty_quarantine(registry).drop("_tenant")
    if conflicts.is_empty():
        return out
    fields = [c for c in conflicts.columns if not c.startswith("_") and c not in _REASON]
    payloads = [
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)
        for row in conflicts.select(fields).iter_rows(named=True)
    ]
    places = [
        f"{batch_id}|{rel}|{f}|{r}"
        for f, r in zip(conflicts["_held_file"], conflicts["_held_row"], strict=True)
    ]
    frame = conflicts.select(
        pl.Series("quarantine_id", [hashlib.sha256(p.encode()).hexdigest() for p in places]),
        pl.lit(tenant).alias("client_id"),
        "branch_id",
        "device_id",
        "seq",
        "received_at",
        "reason_code",
        pl.col("detail").str.slice(0, 2000),
        pl.lit(ref).alias("contract"),
        pl.lit("gate").alias("pipeline_step"),
        pl.lit("held").alias("source"),
        pl.lit(rel).alias("topic"),
        pl.col("device_id").alias("identity"),
        pl.col("_held_file").alias("segment"),
        pl.col("_held_row").alias("offset_bytes"),
        pl.Series("payload_size_bytes", [len(p) for p in payloads], pl.Int64),
        pl.Series("payload_sha256", [hashlib.sha256(p).hexdigest() for p in payloads]),
        pl.Series("payload_excerpt", [p[:1024].decode(errors="replace") for p in payloads]),
        pl.lit(batch_id).alias("batch_id"),
    )
    return pl.concat([out, frame], how="diagonal_relaxed").select(
        [pl.col(c).cast(t) for c, t in out.schema.items()]
    )


_REASON = ("detail", "reason_code")


def _release_name(n: int, rel: str, partition: dict[str, str | None]) -> str:
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
    audit = AuditLog(
        settings.data_dir / "audit" / "pipeline",
        component="quality",
        anchor_dir=settings.audit_anchor_dir,
    )
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
        conflicts = pl.DataFrame()
        checked = latest_version(store, rel)
        if rows is not None and decision == "release" and checked is not None:
            held_rows = pl.from_arrow(rows)
            assert isinstance(held_rows, pl.DataFrame)
            history = read_committed(store, rel, checked, committed_columns(contract), held_rows)
            found = dedupe_against(contract, held_rows, history)
            item.already_in_table = found.duplicates
            item.conflicts = found.conflicts.height
            conflicts = found.conflicts
            publish = found.kept.to_arrow()
        if decision == "release":
            item.rows_published = publish.num_rows if publish is not None else 0
        if not apply:
            continue
        ledger = _Ledger(store, settings.pipeline_id, n, tenant, dataset)
        if not ledger.load():  # a retried decision keeps the counts of its first attempt
            ledger.count(rows, publish if decision == "release" else None, conflicts)
            ledger.save()
        if not conflicts.is_empty():
            q_contract = registry.get(QUARANTINE)
            q_rel = table_rel(tenant, QUARANTINE)
            q_rows = _conflict_rows(conflicts, registry, tenant, rel, batch_id, contract.ref)
            ensure_table(store, q_rel, q_contract)  # a tenant's first quarantined record
            commit_files(
                store,
                q_rel,
                q_contract,
                _write(store, q_rel, q_contract, q_rows.to_arrow(), n, dataset),
                app_id=f"{settings.pipeline_id}-release-{n}-{dataset}",
                version=1,
                metadata={"energylake.batch": batch_id, "energylake.operation": "release"},
            )
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
            if guarded.dropped.height:  # another writer published them first
                ledger.amend(guarded.dropped)
                ledger.save()
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


def _write(
    store: Store, rel: str, contract: Any, rows: pa.Table, n: int, key: str = ""
) -> list[DataFile]:
    """``rows`` as files of ``rel`` named after the batch, the table, ``key`` (what else
    writes to the same table in the same release) and the partition."""
    schema = contract.arrow_schema()
    parts = contract.partition_columns
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    order = [c for c in ("device_id", "ts", "seq", "received_at") if c in frame.columns]
    out = []
    for values, part in frame.group_by(parts, maintain_order=True):
        partition = {k: None if v is None else str(v) for k, v in zip(parts, values, strict=True)}
        table = part.sort(order).to_arrow().select(schema.names).cast(schema)
        name = _release_name(n, f"{rel}|{key}" if key else rel, partition)
        out.append(write_data_file(store, rel, table, partition, name))
    return out


class _Ledger:
    """What a decision did to a held table's rows, per branch, as ``ingest_stats`` rows:
    ``released`` (published now; ``day`` per event day too), ``duplicates`` (the table
    held them), ``quarantined`` (SEQ_CONFLICT), ``discarded``, and ``decided`` (all of
    them: the held rows that wait no longer)."""

    def __init__(self, store: Store, pipeline_id: str, n: int, tenant: str, dataset: str):
        self.store, self.tenant, self.dataset = store, tenant, dataset
        self.rel = BatchState(store, pipeline_id).decision_rel(n, tenant, dataset)
        self.stats: dict[tuple[str, str, str], int] = {}

    def _add(self, kind: str, rows: pl.DataFrame, key: str = "", sign: int = 1) -> None:
        for branch, count in rows.group_by("branch_id").len().rows():
            k = (kind, branch or "", key)
            self.stats[k] = self.stats.get(k, 0) + sign * count
        if kind == "released" and "ts" in rows.columns:
            by_day = rows.group_by("branch_id", pl.col("ts").dt.date().alias("_day")).len()
            for branch, day, count in by_day.rows():
                k = ("day", branch or "", str(day))
                self.stats[k] = self.stats.get(k, 0) + sign * count

    def count(
        self, held: pa.Table | None, published: pa.Table | None, conflicts: pl.DataFrame | None
    ) -> None:
        if held is None:
            return
        rows = pl.from_arrow(held)
        assert isinstance(rows, pl.DataFrame)
        self._add("decided", rows)
        if published is None:
            self._add("discarded", rows)
            return
        out = pl.from_arrow(published)
        assert isinstance(out, pl.DataFrame)
        self._add("released", out)
        if conflicts is not None and not conflicts.is_empty():
            self._add("quarantined", conflicts, "SEQ_CONFLICT")
        left = rows.join(
            out.select("_held_file", "_held_row"), on=["_held_file", "_held_row"], how="anti"
        )
        if conflicts is not None and not conflicts.is_empty():
            left = left.join(
                conflicts.select("_held_file", "_held_row"),
                on=["_held_file", "_held_row"],
                how="anti",
            )
        self._add("duplicates", left)

    def amend(self, dropped: pl.DataFrame) -> None:
        """Rows the guarded commit left out: another writer published them first."""
        self._add("released", dropped, sign=-1)
        self._add("duplicates", dropped)

    def load(self) -> bool:
        raw = self.store.get_bytes(self.rel)
        if raw is None:
            return False
        for kind, _t, _d, branch, key, n in json.loads(raw)["stats"]:
            self.stats[(kind, branch, key)] = int(n)
        return True

    def save(self) -> None:
        rows = [
            [kind, self.tenant, self.dataset, branch, key, n]
            for (kind, branch, key), n in sorted(self.stats.items())
            if n
        ]
        self.store.put_bytes(self.rel, (json.dumps({"stats": rows}, indent=1) + "\n").encode())


def _version_of(store: Store, rel: str, batch_id: str) -> int | None:
    from lake.delta import open_table

    for entry in open_table(store, rel).history(50):
        if (
            entry.get("energylake.operation") == "release"
            and entry.get("energylake.batch") == batch_id
        ):
            return int(entry["version"])
    return None
