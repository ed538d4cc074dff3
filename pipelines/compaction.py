"""Compaction of the lake: the runner's lake operation (it needs the settings for the lake, the
contracts and the lineage emitter), over the tables ``analytics.queries.lake_tables`` lists."""

from __future__ import annotations

from typing import Any

from analytics.queries import lake_tables
from contracts import load_registry
from lake.delta import CompactReport, compact, files_per_partition
from lake.layout import table_rel
from lake.storage import Store
from pipelines.settings import Settings

__all__ = ["compact_all"]


def compact_all(settings: Settings, *, min_files: int = 2) -> list[tuple[str, CompactReport]]:
    """Compact every partition with at least ``min_files`` files, table by table."""
    store = settings.lake_store()
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else load_registry()
    reports = []
    for tenant, dataset in lake_tables(store, registry):
        rel = table_rel(tenant, dataset)
        parts = registry.get(dataset).partition_columns
        over = [
            dict(zip(parts, key, strict=True))
            for key, n in files_per_partition(store, rel).items()
            if n >= min_files
        ]
        if over:
            reports.append((rel, compact(store, rel, min_files=min_files, partitions=over)))
    _emit_compaction(settings, store, registry, reports)
    return reports


def _emit_compaction(
    settings: Settings, store: Store, registry: Any, reports: list[tuple[str, CompactReport]]
) -> None:
    """The compaction's lineage run (logged and skipped if it cannot be emitted)."""
    from lineage import LineageEmitter
    from lineage.runs import CompactedTable, emit_compaction, uri_of

    tables = [
        CompactedTable(
            rel, registry.get(rel.rsplit("/", 1)[-1]), r.versions, r.files_added, r.files_removed
        )
        for rel, r in reports
    ]
    emit_compaction(LineageEmitter.from_settings(settings), uri_of(store.url()), tables)
