"""Facets: builders for the standard ones from our contracts and stats, and our own two.

Our facets (JSON Schemas in ``lineage/schemas/``, keys prefixed ``energylake_``):

- ``energylake_contract`` (dataset facet, on every Delta table output): the contract id and
  version, the purposes and classifications of its fields, the tenant, and the
  ``(branch_id, date)`` partitions this run wrote with row counts (what ``where`` reads).
- ``energylake_run`` (run facet): pipeline id, batch number, segment count, and the quality
  gate's outcome for the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import attr
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    data_quality_assertions_dataset,
    schema_dataset,
)

from contracts import Contract

__all__ = [
    "CONTRACT_FACET",
    "RUN_FACET",
    "SCHEMA_BASE",
    "Assertion",
    "EnergylakeContractDatasetFacet",
    "EnergylakeRunFacet",
    "PartitionRows",
    "assertions_facet",
    "contract_facet",
    "facet_schema",
    "run_facet",
    "schema_facet",
]

PRODUCER = "https://github.com/energylake/energylake/tree/main/lineage"
SCHEMA_BASE = "https://energylake.example/spec/facets/1-0-0/"
CONTRACT_FACET = "energylake_contract"
RUN_FACET = "energylake_run"
QUALITY_OUTCOMES = ("passed", "warned", "held", "released", "not_checked")


@dataclass(frozen=True, slots=True)
class PartitionRows:
    """Rows a run wrote into one branch and UTC day of a table."""

    branch_id: str
    date: str  # YYYY-MM-DD (UTC day of the row's event time)
    rows: int


@dataclass(frozen=True, slots=True)
class Assertion:
    """One data-quality check on a batch's rows for a table (what the gate reports)."""

    assertion: str  # e.g. not_null, unique, range, completeness, freshness, distribution
    success: bool
    column: str | None = None
    severity: str | None = None  # error (blocking) | warn
    name: str | None = None
    description: str | None = None
    expected: str | None = None
    actual: str | None = None


@attr.define
class EnergylakeContractDatasetFacet(DatasetFacet):
    """Contract, purposes and partitions written (see lineage/schemas/)."""

    contractId: str  # noqa: N815
    contractVersion: str  # noqa: N815
    dataset: str
    purposes: list[str] = attr.field(factory=list)
    classifications: list[str] = attr.field(factory=list)
    tenant: str | None = attr.field(default=None)
    partitions: list[dict[str, Any]] = attr.field(factory=list)

    # The client's way to name a facet's schema (its own facets override it too; the
    # ``_schemaURL`` it fills has no public setter). docs/ARCHITECTURE.md, "Dependencies'
    # internals": tests/lineage fail when our facets stop naming our schemas.
    @staticmethod
    def _get_schema() -> str:
        return (
            f"{SCHEMA_BASE}EnergylakeContractDatasetFacet.json"
            "#/$defs/EnergylakeContractDatasetFacet"
        )


@attr.define
class EnergylakeRunFacet(RunFacet):
    """Pipeline id, batch number, segments, quality outcome (see lineage/schemas/)."""

    pipelineId: str | None = attr.field(default=None)  # noqa: N815
    batchNo: int | None = attr.field(default=None)  # noqa: N815
    segments: int | None = attr.field(default=None)
    quality: str | None = attr.field(default=None)
    details: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}EnergylakeRunFacet.json#/$defs/EnergylakeRunFacet"


def facet_schema(name: str) -> dict[str, Any]:
    """One of our facet JSON Schemas (``EnergylakeContractDatasetFacet`` or ``...RunFacet``)."""
    import json

    text = files("lineage").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def schema_facet(contract: Contract) -> schema_dataset.SchemaDatasetFacet:
    """The dataset's columns as the contract declares them."""
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=f.name,
                type=f.physical_type,
                description=f.description or None,
                ordinal_position=i + 1,
            )
            for i, f in enumerate(contract.fields)
        ]
    )


def contract_facet(
    contract: Contract,
    *,
    tenant: str | None = None,
    partitions: Sequence[PartitionRows] = (),
) -> EnergylakeContractDatasetFacet:
    return EnergylakeContractDatasetFacet(
        contractId=contract.id,
        contractVersion=contract.version,
        dataset=contract.dataset,
        purposes=sorted({p for f in contract.fields for p in f.purposes}),
        classifications=sorted({f.classification for f in contract.fields}),
        tenant=tenant,
        partitions=[
            {"branchId": p.branch_id, "date": p.date, "rows": p.rows}
            for p in sorted(partitions, key=lambda p: (p.branch_id, p.date))
        ],
        producer=PRODUCER,
    )


def run_facet(
    *,
    pipeline_id: str | None = None,
    batch_no: int | None = None,
    segments: int | None = None,
    quality: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> EnergylakeRunFacet:
    if quality is not None and quality not in QUALITY_OUTCOMES:
        raise ValueError(f"quality outcome {quality!r} is not one of {QUALITY_OUTCOMES}")
    return EnergylakeRunFacet(
        pipelineId=pipeline_id,
        batchNo=batch_no,
        segments=segments,
        quality=quality,
        details=dict(details or {}),
        producer=PRODUCER,
    )


def assertions_facet(
    assertions: Sequence[Assertion],
) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
        assertions=[
            data_quality_assertions_dataset.Assertion(
                assertion=a.assertion,
                success=a.success,
                column=a.column,
                severity=a.severity,
                name=a.name,
                description=a.description,
                expected=a.expected,
                actual=a.actual,
            )
            for a in assertions
        ]
    )
