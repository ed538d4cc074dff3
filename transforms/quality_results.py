"""The ``quality_results`` table: every gate result and every decision on a held batch.

A Delta table per tenant (``tenants/<tenant>/quality_results``, contract
``contracts/quality_results.odcs.yaml``), partitioned by dataset. Writes go through the
lake's own path (``write_data_file`` + ``commit_files``) with an app transaction, so a
replayed batch adds nothing:

- results of batch *n* for a dataset: app id ``<pipeline>.quality.<dataset>``, version *n*.
  In a batch the gate's step writes the file (:func:`write_results_files`) and the batch's
  plan carries its description; the runner commits it with the batch's tables
  (:func:`commit_results_files`), so Beam computes and the runner commits;
- a decision on batch *n* of a dataset: app id ``<pipeline>.decision.<dataset>.<n>``,
  version 1 -- a batch is decided once (a second decision returns False).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from contracts import Contract, ContractRegistry, load_registry
from lake.delta import (
    DataFile,
    app_txn_version,
    commit_files,
    data_file_name,
    ensure_table,
    read_table,
    table_exists,
    write_data_file,
)
from lake.layout import table_rel, tenants
from lake.storage import Store
from transforms.quality import GateResult

__all__ = [
    "QUALITY_DATASET",
    "Decision",
    "held_batches",
    "read_results",
    "record_decision",
    "write_results",
]

QUALITY_DATASET = "quality_results"
Decision = Literal["release", "discard"]


def _contract(registry: ContractRegistry | None) -> Contract:
    return (registry or load_registry()).get(QUALITY_DATASET)


def _result_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _rows(result: GateResult, held: bool, ts: datetime) -> list[dict[str, Any]]:
    batch = result.batch
    return [
        {
            "result_id": _result_id(
                batch.batch_id, result.tenant, result.dataset, "result", r.rule
            ),
            "record_kind": "result",
            "batch_id": batch.batch_id,
            "pipeline_id": batch.pipeline_id,
            "batch_no": batch.batch_no,
            "client_id": result.tenant,
            "dataset": result.dataset,
            "contract": result.contract_ref,
            "rule": r.rule,
            "expectation": r.expectation,
            "column_name": r.column,
            "severity": r.severity,
            "success": r.success,
            "observed": r.observed[:2000],
            "unexpected_count": r.unexpected_count,
            "unexpected_pct": r.unexpected_pct,
            "reason": r.reason[:2000],
            "held": held,
            "decision": None,
            "decided_by": None,
            "decided_at": None,
            "ts": ts,
        }
        for r in result.results
    ]


def _commit(
    store: Store,
    contract: Contract,
    tenant: str,
    dataset: str,
    rows: list[dict[str, Any]],
    *,
    app_id: str,
    version: int,
    name_key: str,
) -> bool:
    written = _write(store, contract, tenant, dataset, rows, app_id, version, name_key)
    return written is not None and _commit_written(store, contract, written)


def _write(
    store: Store,
    contract: Contract,
    tenant: str,
    dataset: str,
    rows: list[dict[str, Any]],
    app_id: str,
    version: int,
    name_key: str,
) -> dict[str, Any] | None:
    """Write the rows' file (uncommitted); its description, or None: already committed."""
    rel = table_rel(tenant, QUALITY_DATASET)
    ensure_table(store, rel, contract)
    done = app_txn_version(store, rel, app_id)
    if done is not None and done >= version:
        return None  # replayed: never rewrite a committed file
    schema = contract.arrow_schema()
    table = pa.Table.from_pylist(rows, schema=schema)
    partition = {"dataset": dataset}
    data_file = write_data_file(store, rel, table, partition, data_file_name(name_key, partition))
    return {
        "table": rel,
        "dataset": dataset,
        "app_id": app_id,
        "version": version,
        "name_key": name_key,
        "file": data_file.to_dict(),
    }


def _commit_written(store: Store, contract: Contract, written: dict[str, Any]) -> bool:
    rel = str(written["table"])
    ensure_table(store, rel, contract)
    return commit_files(
        store,
        rel,
        contract,
        [DataFile.from_dict(written["file"])],
        app_id=str(written["app_id"]),
        version=int(written["version"]),
        metadata={"energylake.quality": str(written["name_key"])},
    )


def write_results_files(
    store: Store,
    results: Sequence[GateResult],
    *,
    held: bool | None = None,
    registry: ContractRegistry | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Write gate results' files, one per tenant and dataset, uncommitted; their
    descriptions (table, dataset, app_id, version, name_key, file) for
    :func:`commit_results_files`. Results a replayed batch already committed are skipped.

    ``held``: whether the batch was held out of the published tables; by default a result
    that did not pass is recorded as held.
    """
    contract = _contract(registry)
    ts = now or datetime.now(UTC)
    grouped: dict[tuple[str, str], list[GateResult]] = defaultdict(list)
    for result in results:
        grouped[(result.tenant, result.dataset)].append(result)
    out: list[dict[str, Any]] = []
    for (tenant, dataset), group in sorted(grouped.items()):
        batches = {r.batch.batch_id for r in group}
        if len(batches) != 1:
            raise ValueError(f"{tenant}/{dataset}: results of several batches {sorted(batches)}")
        batch = group[0].batch
        rows = [
            row for r in group for row in _rows(r, (not r.passed) if held is None else held, ts)
        ]
        written = _write(
            store,
            contract,
            tenant,
            dataset,
            rows,
            app_id=f"{batch.pipeline_id}.quality.{dataset}",
            version=batch.batch_no,
            name_key=f"{batch.batch_id}-results",
        )
        if written is not None:
            out.append(written)
    return out


def commit_results_files(
    store: Store,
    written: Sequence[dict[str, Any]],
    *,
    registry: ContractRegistry | None = None,
) -> list[str]:
    """Commit the files :func:`write_results_files` wrote, each with its app transaction
    (a replay commits only those a crash left out); returns the tables committed."""
    contract = _contract(registry)
    return [str(w["table"]) for w in written if _commit_written(store, contract, w)]


def write_results(
    store: Store,
    results: Sequence[GateResult],
    *,
    held: bool | None = None,
    registry: ContractRegistry | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Record gate results (one commit per tenant and dataset); returns the tables committed.

    ``held``: whether the batch was held out of the published tables; by default a result
    that did not pass is recorded as held. A replayed batch commits nothing.
    """
    written = write_results_files(store, results, held=held, registry=registry, now=now)
    return commit_results_files(store, written, registry=registry)


def record_decision(
    store: Store,
    *,
    tenant: str,
    dataset: str,
    batch_id: str,
    decision: Decision,
    decided_by: str,
    reason: str,
    contract_ref: str,
    registry: ContractRegistry | None = None,
    now: datetime | None = None,
) -> bool:
    """Record who released (or discarded) a held batch of a dataset, and why.

    Returns False when the batch already has a decision (nothing is written). Publishing the
    held rows is the batch protocol's job; call this once they are published.
    """
    if decision not in ("release", "discard"):
        raise ValueError(f"decision must be 'release' or 'discard', not {decision!r}")
    if not decided_by.strip() or not reason.strip():
        raise ValueError("a decision needs who took it (decided_by) and why (reason)")
    contract = _contract(registry)
    pipeline_id, _, number = batch_id.rpartition(":")
    if not pipeline_id or not number.isdigit():
        raise ValueError(f"batch id {batch_id!r} is not <pipeline>:<number>")
    ts = now or datetime.now(UTC)
    row = {
        "result_id": _result_id(batch_id, tenant, dataset, "decision"),
        "record_kind": "decision",
        "batch_id": batch_id,
        "pipeline_id": pipeline_id,
        "batch_no": int(number),
        "client_id": tenant,
        "dataset": dataset,
        "contract": contract_ref,
        "rule": None,
        "expectation": None,
        "column_name": None,
        "severity": None,
        "success": None,
        "observed": None,
        "unexpected_count": None,
        "unexpected_pct": None,
        "reason": reason[:2000],
        "held": decision == "discard",
        "decision": decision,
        "decided_by": decided_by[:200],
        "decided_at": ts,
        "ts": ts,
    }
    return _commit(
        store,
        contract,
        tenant,
        dataset,
        [row],
        app_id=f"{pipeline_id}.decision.{dataset}.{number}",
        version=1,
        # a concurrent, different decision writes another file; only one commits
        # (never derived from who decided: nothing personal goes into a file name)
        name_key=f"{batch_id}-decision-{_result_id(decision, reason, ts.isoformat())[:12]}",
    )


def read_results(
    store: Store, *, tenant: str | None = None, dataset: str | None = None
) -> pl.DataFrame:
    """Every row of the quality_results tables (one tenant's, or all), newest batch first."""
    contract = _contract(None)
    frames = []
    for name in [tenant] if tenant else tenants(store):
        rel = table_rel(name, QUALITY_DATASET)
        if table_exists(store, rel):
            frame = pl.from_arrow(read_table(store, rel))
            assert isinstance(frame, pl.DataFrame)
            frames.append(frame.select(contract.field_names))
    if not frames:
        return pl.DataFrame(
            schema=pl.from_arrow(contract.arrow_schema().empty_table()).schema  # type: ignore[union-attr]
        )
    out = pl.concat(frames)
    if dataset:
        out = out.filter(pl.col("dataset") == dataset)
    return out.sort(
        ["batch_no", "client_id", "dataset", "rule"], descending=[True, False, False, False]
    )


def held_batches(store: Store, *, tenant: str | None = None) -> pl.DataFrame:
    """(batch_id, client_id, dataset, contract, failed rules) held and not yet decided."""
    rows = read_results(store, tenant=tenant)
    keys = ["batch_id", "client_id", "dataset"]
    decided = rows.filter(pl.col("record_kind") == "decision").select(keys).unique()
    held = rows.filter((pl.col("record_kind") == "result") & pl.col("held"))
    return (
        held.join(decided, on=keys, how="anti")
        .group_by([*keys, "contract", "batch_no"])
        .agg(
            pl.col("rule")
            .filter(~pl.col("success") & (pl.col("severity") == "error"))
            .sort()
            .alias("failed_rules")
        )
        .sort(["batch_no", "client_id", "dataset"])
        .drop("batch_no")
    )
