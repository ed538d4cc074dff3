"""What a pipeline batch read and wrote, as lineage datasets, from its manifest and plan.

Plain data in (the manifest and plan JSON the pipeline keeps, the versions its commits got),
datasets out: this module knows nothing of Beam or of how the lake is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs

from contracts import ContractRegistry
from lineage.emitter import SegmentInput, TableDataset
from lineage.facets import PartitionRows
from lineage.partitions import partition_rows

__all__ = ["batch_outputs", "segment_inputs", "snapshot_inputs", "tenant_of"]


def tenant_of(rel: str) -> str | None:
    """``tenants/<tenant>/<dataset>`` -> tenant (None for other layouts)."""
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "tenants" else None


def segment_inputs(manifest: Mapping[str, Any], landing_uri: str) -> list[SegmentInput]:
    return [SegmentInput(landing_uri, str(name)) for name in manifest.get("segments", [])]


def snapshot_inputs(
    manifest: Mapping[str, Any],
    plan: Mapping[str, Any],
    lake_uri: str,
    registry: ContractRegistry,
) -> list[TableDataset]:
    """The tables the batch wrote, at the pinned version deduplication read (when they existed)."""
    snapshot: Mapping[str, Any] = manifest.get("snapshot") or {}
    out = []
    for rel, entry in sorted(plan.get("tables", {}).items()):
        version = snapshot.get(rel)
        if version is None:
            continue
        out.append(
            TableDataset(
                lake_uri, rel, int(version), registry.get(entry["dataset"]), tenant_of(rel)
            )
        )
    return out


def batch_outputs(
    plan: Mapping[str, Any],
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
    for kind, tenant, dataset, branch, key, count in plan.get("stats", []):
        if kind == "day":
            days.setdefault(f"tenants/{tenant}/{dataset}", []).append(
                PartitionRows(str(branch), str(key), int(count))
            )
    out = []
    for rel, entry in sorted(plan.get("tables", {}).items()):
        contract = registry.get(entry["dataset"])
        files: list[dict[str, Any]] = list(entry.get("files", []))
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
