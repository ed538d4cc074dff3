"""The plan of a batch from what the transform's steps emit, and its writing: the last
step of the batch's Beam pipeline (a plain function; Beam is not imported here).

The steps emit tagged items: ``("file", (rel, dataset, data_file_json))`` for each data
file written, ``("stat", (kind, tenant, dataset, branch, key, n))`` for each count and
``("gate", (rel, verdict))`` for each table the quality gate judged and
``("quality", description)`` for each quality_results file the gate's step wrote.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from batch.records import DataFileJson, GateVerdict, Plan, QualityFile, TableEntry, TableStat
from lake.storage import S3Encryption, Store

__all__ = ["collect_plan", "write_plan"]


def collect_plan(items: list[tuple[str, Any]]) -> Plan:
    """The plan of the tagged ``items`` (files sorted by path, stats sorted)."""
    files: dict[str, list[DataFileJson]] = defaultdict(list)
    datasets: dict[str, str] = {}
    stats: list[TableStat] = []
    gates: dict[str, GateVerdict] = {}
    quality: list[QualityFile] = []
    for kind, item in items:
        if kind == "file":
            rel, dataset, data_file = item
            files[rel].append(json.loads(data_file))
            datasets[rel] = dataset
        elif kind == "gate":
            rel, verdict = item
            gates[rel] = GateVerdict.from_dict(verdict)
        elif kind == "quality":
            quality.append(QualityFile.from_dict(item))
        else:
            stats.append(TableStat.from_row(item))
    return Plan(
        tables={
            rel: TableEntry(datasets[rel], sorted(fs, key=lambda f: str(f["path"])))
            for rel, fs in sorted(files.items())
        },
        stats=sorted(stats),
        gate=dict(sorted(gates.items())),
        quality=sorted(quality),
    )


def write_plan(
    items: list[tuple[str, Any]], lake_uri: str, encryption: S3Encryption | None, plan_rel: str
) -> int:
    """Write the plan of ``items`` at ``plan_rel`` in the lake; the number of items."""
    plan = collect_plan(items)
    Store.from_uri(lake_uri, encryption=encryption).put_bytes(plan_rel, plan.to_json())
    return len(items)
