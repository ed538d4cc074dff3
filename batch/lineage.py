"""What a pipeline batch read and wrote, as lineage datasets, from its manifest and plan.

The batch's typed records in (``batch.records``; the versions its commits got), lineage
datasets out: this module knows nothing of Beam or of how the lake is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs

from batch.records import Manifest, Plan, StatKind
from contracts import ContractRegistry
from lineage.emitter import SegmentInput, TableDataset
from lineage.facets import PartitionRows
from lineage.partitions import partition_rows

__all__ = ["batch_outputs", "segment_inputs", "snapshot_inputs", "tenant_of"]


def tenant_of(rel: str) -> str | None:
    """``tenants/<tenant>/<dataset>`` -> tenant (None for other layouts)."""
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "tenants" else None


def segment_inputs(manifest: Manifest, landing_uri: str) -> list[SegmentInput]:
    return [SegmentInput(landing_uri, name) for name in manifest.segments]


def snapshot_inputs(
    manifest: Manifest | None,
    plan: Plan,
    lake_uri: str,
    registry: ContractRegistry,
) -> list[TableDataset]:
    """The tables the batch wrote, at the pinned version deduplication read (when they existed)."""
    snapshot = manifest.snapshot if manifest is not None else {}
    out = []
    for rel, entry in sorted(plan.tables.items()):
        version = snapshot.get(rel)
        if version is None:
            continue
        out.append(
            TableDataset(lake_uri, rel, int(version), registry.get(entry.dataset), tenant_of(rel))
        )
    return out


def batch_outputs(
    plan: Plan,
    versions: Mapping[str, int | None],
    lake_uri: str,
    registry: ContractRegistry,
    *,
    filesystem: pafs.FileSystem,
    base_path: str,
) -> list[TableDataset]:
    """Every table of the plan with its new version, row/byte/file counts and partitions.

    Rows per (branch, day) come from the plan's ``day`` stats, counted while the rows were
    written; a table without them (the quarantine, plans of older versions) has its files'
    statistics (or time column) read instead.
    """
    days: dict[str, list[PartitionRows]] = {}
    for s in plan.stats:
        if s.kind is StatKind.DAY:
            days.setdefault(f"tenants/{s.tenant}/{s.dataset}", []).append(
                PartitionRows(s.branch, s.key, s.n)
            )
    out = []
    for rel, entry in sorted(plan.tables.items()):
        contract = registry.get(entry.dataset)
        files: list[dict[str, Any]] = list(entry.files)
        out.append(
            TableDataset(
                lake_uri=lake_uri,
                rel=rel,
                version=versions.get(rel),
                contract=contract,
                tenant=tenant_of(rel),
                rows=sum(int(f.get("num_records", 0)) for f in files),
                size_bytes=sum(int(f.get("size", 0)) for f in files),
                files=len(files),
                partitions=sorted(days[rel], key=lambda p: (p.branch_id, p.date))
                if rel in days
                else partition_rows(
                    files,
                    filesystem=filesystem,
                    table_path=f"{base_path}/{rel}",
                    columns=contract.field_names,
                ),
            )
        )
    return out
