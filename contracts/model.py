"""The typed view of a contract that the rest of energylake works with.

The YAML is ODCS v3; the platform's own rules live in ``customProperties``. This
module turns a lint-clean contract into frozen dataclasses, and a contract into
its Arrow schema (the physical types are Arrow's names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from contracts.errors import ConfigError

__all__ = [
    "PHYSICAL_TYPES",
    "READING_SYSTEM_FIELDS",
    "Contract",
    "Erasure",
    "Field",
    "Protection",
    "QualityRule",
    "Retention",
    "arrow_type",
]

# physicalType -> (Arrow type, the logical types it may carry)
PHYSICAL_TYPES: dict[str, tuple[pa.DataType, frozenset[str]]] = {
    "string": (pa.string(), frozenset({"string"})),
    "int32": (pa.int32(), frozenset({"integer"})),
    "int64": (pa.int64(), frozenset({"integer"})),
    "double": (pa.float64(), frozenset({"number"})),
    "float": (pa.float32(), frozenset({"number"})),
    "bool": (pa.bool_(), frozenset({"boolean"})),
    "date32": (pa.date32(), frozenset({"date"})),
    "timestamp[us, UTC]": (pa.timestamp("us", tz="UTC"), frozenset({"timestamp"})),
    "list<string>": (pa.list_(pa.string()), frozenset({"array"})),
    "binary": (pa.binary(), frozenset({"string"})),
}

# The columns every readings dataset carries that are not a device's values: who sent it,
# where and when, and what the pipeline adds (decoders map payloads to the rest).
READING_SYSTEM_FIELDS = frozenset(
    {
        "client_id",
        "branch_id",
        "device_id",
        "seq",
        "ts",
        "boot",
        "received_at",
        "event_month",
        "quality_flags",
    }
)

ProtectionMethod = Literal["drop", "mask", "pseudonymise", "generalise"]


def arrow_type(physical_type: str) -> pa.DataType:
    """The Arrow type of an ODCS ``physicalType`` used in our contracts."""
    return PHYSICAL_TYPES[physical_type][0]


@dataclass(frozen=True, slots=True)
class Protection:
    """How a field is protected from the purposes that may not see it in clear."""

    method: ProtectionMethod
    keep_last: int = 0
    step: float | None = None
    grain: str | None = None
    domain: str | None = None

    def describe(self) -> str:
        if self.method == "mask":
            return f"mask (keep last {self.keep_last})"
        if self.method == "generalise":
            return f"generalise (step {self.step})" if self.step else f"generalise ({self.grain})"
        if self.method == "pseudonymise":
            return "pseudonymise (HMAC-SHA256, tenant key)"
        return self.method


@dataclass(frozen=True, slots=True)
class Field:
    """One property of a dataset, with everything governance needs to know of it."""

    name: str
    description: str
    logical_type: str
    physical_type: str
    required: bool
    classification: str
    purposes: frozenset[str]
    protection: Protection | None = None
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    allowed_values: tuple[Any, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    primary_key_position: int | None = None
    partition_position: int | None = None
    counter: bool = False
    rated_by: str | None = None
    # Values a device sends for "not available / fault" (GenComm register sentinels, in the
    # field's unit): stored as NULL with the SENTINEL flag, never as the number.
    sentinels: tuple[float, ...] = ()
    # The kind of data subject (vocabulary ``subjects``) whose id this field holds: the
    # people an objection or an erasure names.
    subject: str | None = None
    # What this field identifies a data subject by (vocabulary ``identifiers``: email,
    # mobile, name): a subject request searches it for that identifier, by equality.
    identifies: str | None = None
    # Free text that may name anybody (notes, raw payload excerpts): a subject request
    # searches it for every identifier of the person, as a substring in any case.
    free_text: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.physical_type)

    def arrow_field(self) -> pa.Field:
        meta = {
            "classification": self.classification,
            "purposes": ",".join(sorted(self.purposes)),
        }
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.arrow_type, nullable=not self.required, metadata=meta)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing a data subject does to a row that names them (``customProperties
    erasure``): delete the row, or keep it and clear the listed fields (set them to null)."""

    rows: Literal["delete", "keep"]
    clear: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Retention:
    """Days hot, days in the archive tier, then the final action, counted from ``basis``."""

    hot_days: int
    archive_days: int
    then: Literal["delete"]
    basis: str

    @property
    def total_days(self) -> int:
        return self.hot_days + self.archive_days


@dataclass(frozen=True, slots=True)
class QualityRule:
    """A quality rule of the contract: an ODCS library metric or an energylake custom rule."""

    name: str
    severity: Literal["error", "warning"]
    description: str
    dimension: str | None
    field: str | None
    metric: str | None = None
    arguments: dict[str, Any] = dc_field(default_factory=dict)
    operator: dict[str, Any] = dc_field(default_factory=dict)
    engine: str | None = None
    implementation: dict[str, Any] = dc_field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        """An ``error`` rule holds the batch back; a ``warning`` is recorded."""
        return self.severity == "error"


@dataclass(frozen=True, slots=True)
class Contract:
    """A dataset's contract: schema, classification and purposes, retention, quality."""

    id: str
    version: str
    dataset: str
    path: Path
    purpose: str
    domain: str
    fields: tuple[Field, ...]
    retention: Retention
    quality: tuple[QualityRule, ...]
    extras: dict[str, Any]

    @property
    def ref(self) -> str:
        """``id@version``: what a quarantine row or a lineage facet records."""
        return f"{self.id}@{self.version}"

    @property
    def device_kind(self) -> str | None:
        """The device kind (the device registry's ``kind``) whose readings this dataset holds;
        None for a dataset that is not a readings dataset (``customProperties.deviceKind``)."""
        kind = self.extras.get("deviceKind")
        return None if kind is None else str(kind)

    @property
    def profiles(self) -> dict[str, frozenset[str]]:
        """Device profiles (``customProperties.profiles``): for each, the required fields a
        device of that profile, or a message of that kind, may leave out (a meter without
        an export counter, a message carrying only counters)."""
        raw = self.extras.get("profiles")
        if not isinstance(raw, dict):
            return {}
        return {
            str(name): frozenset(str(f) for f in (spec or {}).get("mayOmit") or ())
            for name, spec in raw.items()
            if isinstance(spec, dict)
        }

    @property
    def may_omit(self) -> frozenset[str]:
        """Required fields some profile lets a reading leave out: nullable in the table."""
        return frozenset(f for omitted in self.profiles.values() for f in omitted)

    @property
    def platform_wide(self) -> bool:
        """One table for the whole platform (``platform/<dataset>``), not one per tenant:
        ``customProperties.scope: platform``, and the clients table."""
        return self.extras.get("scope") == "platform" or self.dataset == "clients"

    def subject_field(self, kind: str) -> Field | None:
        """The field holding the id of data subjects of ``kind``, if the dataset names them."""
        for candidate in self.fields:
            if candidate.subject == kind:
                return candidate
        return None

    @property
    def erasure(self) -> Erasure | None:
        """The dataset's erasure rule (None: it names no data subject)."""
        raw = self.extras.get("erasure")
        if not isinstance(raw, dict):
            return None
        rows: Literal["delete", "keep"] = "delete" if raw.get("rows") == "delete" else "keep"
        return Erasure(rows=rows, clear=tuple(str(c) for c in raw.get("clear") or ()))

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{self.ref} has no field {name!r}")

    @property
    def primary_key(self) -> list[str]:
        keyed = [f for f in self.fields if f.primary_key_position is not None]
        return [f.name for f in sorted(keyed, key=lambda f: f.primary_key_position or 0)]

    @property
    def partition_columns(self) -> list[str]:
        parts = [f for f in self.fields if f.partition_position is not None]
        return [f.name for f in sorted(parts, key=lambda f: f.partition_position or 0)]

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the dataset, with the contract ref in the schema metadata."""
        omit = self.may_omit
        return pa.schema(
            [
                f.arrow_field().with_nullable(True) if f.name in omit else f.arrow_field()
                for f in self.fields
            ],
            metadata={"energylake.contract": self.ref},
        )


SENTINEL_SPEC = re.compile(r"(u16|s16|u32|s32)(?:/([1-9][0-9]*))?")
_SENTINEL_RAW = {
    # GenComm: the top eight codes of each register type are "not available", "over/under
    # range", "transducer fault", "bad data", "high/low digital", "reserved".
    "u16": range(0xFFF8, 0x10000),
    "s16": range(0x7FF8, 0x8000),
    "u32": range(0xFFFFFFF8, 0x100000000),
    "s32": range(0x7FFFFFF8, 0x80000000),
}


def sentinel_values(spec: str) -> tuple[float, ...]:
    """The values a register of type ``spec`` (``u16``, ``s16``, ``u32``, ``s32``, optionally
    ``/divisor`` for its scale to the field's unit) sends for "not available"."""
    match = SENTINEL_SPEC.fullmatch(spec)
    if match is None:
        raise ConfigError(
            f"sentinel {spec!r} is not <u16|s16|u32|s32>[/divisor]; fix the field's "
            "customProperties sentinel in its contract",
            setting="sentinel",
            value=spec,
        )
    divisor = int(match.group(2) or 1)
    return tuple(raw / divisor for raw in _SENTINEL_RAW[match.group(1)])
