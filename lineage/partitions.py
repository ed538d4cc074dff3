"""Rows per (branch_id, UTC day) that a run wrote, from the files it committed.

A file whose statistics put its first and last event on the same UTC day counts whole
(no read); otherwise its time column is read and counted per day.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lineage.facets import PartitionRows

__all__ = ["TIME_COLUMNS", "partition_rows"]

TIME_COLUMNS = ("ts", "received_at")
"""The day of a row: its event time, else (quarantine) when it was received."""


def _stats_day(stats: Mapping[str, Any], column: str) -> str | None:
    low = stats.get("minValues", {}).get(column)
    high = stats.get("maxValues", {}).get(column)
    if isinstance(low, str) and isinstance(high, str) and low[:10] == high[:10]:
        return low[:10]
    return None


def _read_days(filesystem: pafs.FileSystem, path: str, column: str) -> Counter[str]:
    table = pq.read_table(path, columns=[column], filesystem=filesystem)
    values = table.column(column)
    if not pa.types.is_timestamp(values.type):
        return Counter()
    days = pc.strftime(values.cast(pa.timestamp("us", tz="UTC")), format="%Y-%m-%d")
    return Counter({str(k): int(v) for k, v in Counter(days.to_pylist()).items() if k})


def partition_rows(
    files: Iterable[Mapping[str, Any]],
    *,
    filesystem: pafs.FileSystem,
    table_path: str,
    columns: Iterable[str],
) -> list[PartitionRows]:
    """``files``: Delta add-file records (path, partition_values, num_records, stats)."""
    names = list(columns)
    column = next((c for c in TIME_COLUMNS if c in names), None)
    counts: Counter[tuple[str, str]] = Counter()
    for entry in files:
        branch = str((entry.get("partition_values") or {}).get("branch_id") or "")
        rows = int(entry.get("num_records") or 0)
        if column is None or rows == 0:
            continue
        raw = entry.get("stats") or "{}"
        stats = json.loads(raw) if isinstance(raw, str) else dict(raw)
        day = _stats_day(stats, column)
        if day is not None:
            counts[(branch, day)] += rows
            continue
        for found, n in _read_days(filesystem, f"{table_path}/{entry['path']}", column).items():
            counts[(branch, found)] += n
    return [PartitionRows(b, d, n) for (b, d), n in sorted(counts.items())]
