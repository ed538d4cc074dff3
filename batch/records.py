"""The batch protocol's records, as dataclasses with versioned JSON.

Every record is written with ``"version": RECORD_VERSION``. A file without a version was
written before the records were versioned; it has the same shape as version 1 and is read
as such, so the batches on disk survive an upgrade. A file of a version this code does not
know is refused with :class:`RecordVersionError` (a newer energylake wrote it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from contracts import EnergylakeError

__all__ = [
    "RECORD_VERSION",
    "DataFileJson",
    "Done",
    "GateVerdict",
    "Manifest",
    "Plan",
    "QualityFile",
    "RecordVersionError",
    "StatKind",
    "TableEntry",
    "TableStat",
    "dumps",
]

RECORD_VERSION = 1
_KNOWN_VERSIONS = frozenset({RECORD_VERSION})
# A Delta data file as ``lake.delta.DataFile.to_dict`` writes it (path, size, partition
# values, statistics): kept as written, so a plan round-trips byte for byte.
DataFileJson = dict[str, Any]


class RecordVersionError(EnergylakeError):
    """A batch record of a version this energylake cannot read."""


class StatKind(StrEnum):
    """What a :class:`TableStat` counts."""

    WRITTEN = "written"  # rows written to the table's files (held ones included)
    HELD = "held"  # written, but held by the quality gate
    QUARANTINED = "quarantined"  # key = reason code
    DUPLICATES = "duplicates"
    LATE = "late"
    DAMAGED = "damaged"  # bytes; key = segment
    DAY = "day"  # published rows; key = event day
    RELEASED = "released"  # decisions on held rows (pipelines.release)
    DISCARDED = "discarded"
    DECIDED = "decided"


def dumps(data: dict[str, Any]) -> bytes:
    """A record's bytes on disk: sorted keys, one-space indent, a final newline."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _body(raw: bytes | str | dict[str, Any], what: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw) if isinstance(raw, bytes | str) else dict(raw)
    version = data.pop("version", RECORD_VERSION)  # none: written before versions, same shape
    if version not in _KNOWN_VERSIONS:
        raise RecordVersionError(
            f"{what} has record version {version!r}; this energylake reads version "
            f"{RECORD_VERSION}: upgrade energylake to read this lake's batch state"
        )
    return data


@dataclass(frozen=True, slots=True, order=True)
class TableStat:
    """One count of a batch (or a decision): on disk ``[kind, tenant, dataset, branch, key, n]``."""

    kind: StatKind
    tenant: str
    dataset: str
    branch: str
    key: str
    n: int

    def to_row(self) -> list[Any]:
        return [str(self.kind), self.tenant, self.dataset, self.branch, self.key, self.n]

    @classmethod
    def from_row(cls, row: list[Any] | tuple[Any, ...]) -> TableStat:
        kind, tenant, dataset, branch, key, n = row
        return cls(StatKind(kind), str(tenant), str(dataset), str(branch), str(key), int(n))

    def as_tuple(self) -> tuple[str, str, str, str, str, int]:
        return (str(self.kind), self.tenant, self.dataset, self.branch, self.key, self.n)


@dataclass(slots=True)
class GateVerdict:
    """The quality gate's verdict on one table of a batch (transforms' gate step)."""

    passed: bool
    summary: str
    blocking_failures: list[str]
    warnings: list[str]
    assertions: list[dict[str, Any]]
    seconds: float
    held_devices: list[str] | None = None  # None: the whole table (when not passed)
    rows: int = 0
    reasons: dict[str, str] = field(default_factory=dict)
    contract: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "held_devices": self.held_devices,
            "rows": self.rows,
            "summary": self.summary,
            "blocking_failures": list(self.blocking_failures),
            "warnings": list(self.warnings),
            "reasons": dict(self.reasons),
            "assertions": list(self.assertions),
            "contract": self.contract,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateVerdict:
        return cls(
            passed=bool(data["passed"]),
            summary=data.get("summary", ""),
            blocking_failures=list(data.get("blocking_failures", [])),
            warnings=list(data.get("warnings", [])),
            assertions=list(data.get("assertions", [])),
            seconds=float(data.get("seconds", 0.0)),
            held_devices=data.get("held_devices"),
            rows=int(data.get("rows", 0)),
            reasons=dict(data.get("reasons", {})),
            contract=data.get("contract"),
        )


@dataclass(slots=True)
class TableEntry:
    """One table of a plan: its files to commit, and the held ones once the gate split it
    (None: not split; a plan from before partial holds held a failed table whole)."""

    dataset: str
    files: list[DataFileJson]
    held_files: list[DataFileJson] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset, "files": list(self.files)}
        if self.held_files is not None:
            out["held_files"] = list(self.held_files)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEntry:
        held = data.get("held_files")
        return cls(str(data["dataset"]), list(data["files"]), None if held is None else list(held))


@dataclass(frozen=True, slots=True, order=True)
class QualityFile:
    """A ``quality_results`` file the gate's step wrote, for the runner to commit with its
    app transaction ``(app_id, version)`` (``transforms.quality_results``)."""

    table: str  # rel of the tenant's quality_results table
    dataset: str  # the dataset the results are about (the partition)
    app_id: str
    version: int
    name_key: str
    file: DataFileJson = field(compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "dataset": self.dataset,
            "app_id": self.app_id,
            "version": self.version,
            "name_key": self.name_key,
            "file": dict(self.file),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityFile:
        return cls(
            str(data["table"]),
            str(data["dataset"]),
            str(data["app_id"]),
            int(data["version"]),
            str(data["name_key"]),
            dict(data["file"]),
        )


@dataclass(slots=True)
class Plan:
    """What a batch's transform wrote: files per table, its counts and gate verdicts."""

    tables: dict[str, TableEntry] = field(default_factory=dict)
    stats: list[TableStat] = field(default_factory=list)
    gate: dict[str, GateVerdict] = field(default_factory=dict)
    # quality_results files to commit (none in a plan from before the runner committed them)
    quality: list[QualityFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": RECORD_VERSION,
            "tables": {rel: e.to_dict() for rel, e in sorted(self.tables.items())},
            "stats": [s.to_row() for s in sorted(self.stats)],
            "gate": {rel: g.to_dict() for rel, g in sorted(self.gate.items())},
        }
        if self.quality:
            out["quality"] = [q.to_dict() for q in sorted(self.quality)]
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> Plan:
        data = _body(raw, "plan.json")
        return cls(
            tables={rel: TableEntry.from_dict(e) for rel, e in data.get("tables", {}).items()},
            stats=[TableStat.from_row(s) for s in data.get("stats", [])],
            gate={rel: GateVerdict.from_dict(g) for rel, g in data.get("gate", {}).items()},
            quality=[QualityFile.from_dict(q) for q in data.get("quality", [])],
        )


@dataclass(slots=True)
class Manifest:
    """What a batch claimed: its segments and the pinned version of every table."""

    batch_no: int
    pipeline_id: str
    segments: list[str]
    snapshot: dict[str, int | None]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "batch_no": self.batch_no,
            "pipeline_id": self.pipeline_id,
            "segments": list(self.segments),
            "snapshot": dict(self.snapshot),
            "created_at": self.created_at,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> Manifest:
        data = _body(raw, "manifest.json")
        return cls(
            batch_no=int(data["batch_no"]),
            pipeline_id=str(data["pipeline_id"]),
            segments=[str(s) for s in data["segments"]],
            snapshot={k: (None if v is None else int(v)) for k, v in data["snapshot"].items()},
            created_at=str(data.get("created_at", "")),
        )


@dataclass(slots=True)
class Done:
    """A finished batch's report (``energylake process`` prints it; status shows the last)."""

    batch_no: int
    segments: list[str]
    resumed: bool
    rows: dict[str, int] = field(default_factory=dict)  # table rel -> rows published
    quarantined: dict[str, int] = field(default_factory=dict)  # reason -> rows
    duplicates: int = 0
    late: int = 0
    damaged_bytes: int = 0
    committed: list[str] = field(default_factory=list)  # tables that got a new version
    held: dict[str, list[str]] = field(default_factory=dict)  # table -> blocking rules failed
    warnings: dict[str, list[str]] = field(default_factory=dict)  # table -> warning rules
    gate_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def records_out(self) -> int:
        """Records the batch accounted for: published, quarantined, duplicates."""
        return sum(self.rows.values()) + sum(self.quarantined.values()) + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        """The report as ``energylake process`` prints it (no record version)."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_no": self.batch_no,
            "segments": list(self.segments),
            "resumed": self.resumed,
            "rows": dict(self.rows),
            "quarantined": dict(self.quarantined),
            "duplicates": self.duplicates,
            "late": self.late,
            "damaged_bytes": self.damaged_bytes,
            "committed": list(self.committed),
            "held": dict(self.held),
            "warnings": dict(self.warnings),
            "gate_seconds": round(self.gate_seconds, 3),
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> bytes:
        return dumps({"version": RECORD_VERSION, **self.to_dict()})

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> Done:
        data = _body(raw, "done.json")
        return cls(
            batch_no=int(data["batch_no"]),
            segments=list(data.get("segments", [])),
            resumed=bool(data.get("resumed", False)),
            rows={k: int(v) for k, v in data.get("rows", {}).items()},
            quarantined={k: int(v) for k, v in data.get("quarantined", {}).items()},
            duplicates=int(data.get("duplicates", 0)),
            late=int(data.get("late", 0)),
            damaged_bytes=int(data.get("damaged_bytes", 0)),
            committed=list(data.get("committed", [])),
            held={k: list(v) for k, v in data.get("held", {}).items()},
            warnings={k: list(v) for k, v in data.get("warnings", {}).items()},
            gate_seconds=float(data.get("gate_seconds", 0.0)),
            seconds=float(data.get("seconds", 0.0)),
        )
