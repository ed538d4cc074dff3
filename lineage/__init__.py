"""OpenLineage for every run: the emitter, our facets, the transports, the store and its queries.

Imports only ``contracts`` and ``durable`` (and the openlineage client); what a batch read and
wrote is mapped to lineage datasets by the batch protocol (``batch.lineage``). See docs/LINEAGE.md.
"""

from lineage.config import LineageConfig, SettingsLike
from lineage.emitter import (
    JobSpec,
    LineageEmitter,
    RunHandle,
    RunRef,
    SegmentInput,
    TableDataset,
    batch_run_id,
    jobs,
)
from lineage.facets import Assertion, PartitionRows
from lineage.partitions import partition_rows

__all__ = [
    "Assertion",
    "JobSpec",
    "LineageConfig",
    "LineageEmitter",
    "PartitionRows",
    "RunHandle",
    "RunRef",
    "SegmentInput",
    "SettingsLike",
    "TableDataset",
    "batch_run_id",
    "jobs",
    "partition_rows",
]
