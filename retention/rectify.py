"""Correcting a data subject's value: ``energylake subject rectify --set mobile=...``.

Every row that names the person gets the new value in each field that holds that kind of
identifier (``identifies``), the new value checked against the field's contract pattern
first. Then ``lake.purge.purge_table`` removes the old value from the table's history:
the rewritten files, and the log commits whose predicate or statistics held it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deltalake import CommitProperties

from contracts import ContractRegistry
from contracts.errors import ConfigError
from lake.delta import open_table
from lake.purge import purge_table
from lake.storage import Store
from retention.erase import chunks, key_predicate
from retention.find import Findings

__all__ = ["RectifyReport", "rectify_subject"]


@dataclass(slots=True)
class RectifyReport:
    tables: dict[str, int] = field(default_factory=dict)  # rel -> rows corrected


def rectify_subject(
    store: Store, registry: ContractRegistry, findings: Findings, kind: str, value: str
) -> RectifyReport:
    """Set every ``kind`` field (email, mobile, name) of the person's rows to ``value``."""
    report = RectifyReport()
    plans = []
    for hit in findings.tables:
        if not hit.named:
            continue
        fields = [f for f in registry.get(hit.dataset).fields if f.identifies == kind]
        for f in fields:
            if f.pattern and not re.fullmatch(f.pattern, value):
                raise ConfigError(
                    f"{hit.dataset}.{f.name} must match {f.pattern}: not {value!r}",
                    setting="--set",
                )
            if f.max_length and len(value) > f.max_length:
                raise ConfigError(
                    f"{hit.dataset}.{f.name} holds at most {f.max_length} characters",
                    setting="--set",
                )
        if fields:
            plans.append((hit, fields))
    props = CommitProperties(custom_metadata={"energylake.operation": "rectification"})
    for hit, fields in plans:
        table = open_table(store, hit.rel)
        rows = 0
        for chunk in chunks(hit.named):
            metrics = table.update(
                new_values={f.name: value for f in fields},
                predicate=key_predicate(hit.key, chunk),
                commit_properties=props,
            )
            rows += int(metrics.get("num_updated_rows", 0))
        purge_table(store, hit.rel)
        report.tables[hit.rel] = rows
    return report
