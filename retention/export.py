"""A data subject's portability package: ``energylake subject export``.

For each dataset whose rows name the person: ``<dataset>.json`` (the rows, every field
in clear: this is the person's own data) and ``<dataset>.parquet``; and ``manifest.json``
with what GDPR Art. 15 and DPDP s.11 ask for, taken from the contracts: the purposes each
field serves, the categories (classifications) of data, the recipients (the principals
granted those purposes on the tenant, given by the caller from the access layer), how long
it is kept (the contract's retention), and its source (the contract's description and the
table). The other places the person appears (raw segments, quarantine excerpts, extracts)
are listed with counts: they hold copies of the same data or mentions of the person.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import ContractRegistry
from durable.files import atomic_write
from lake.delta import read_table
from lake.storage import Store
from retention.find import Findings

__all__ = ["ExportReport", "export_subject"]

Recipients = Callable[[str | None, frozenset[str]], list[str]]


@dataclass(slots=True)
class ExportReport:
    folder: Path
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    rows: dict[str, int] = field(default_factory=dict)  # dataset -> rows


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _write(folder: Path, name: str, data: bytes, report: ExportReport) -> None:
    atomic_write(folder / name, data, mode=0o600)
    report.files[name] = hashlib.sha256(data).hexdigest()


def export_subject(
    store: Store,
    registry: ContractRegistry,
    findings: Findings,
    folder: Path,
    *,
    digest: str,
    recipients: Recipients,
) -> ExportReport:
    """Write the package into ``folder`` (created, 0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    report = ExportReport(folder)
    manifest: dict[str, Any] = {
        "subject": digest,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "datasets": {},
        "other_places": [],
    }
    tables: dict[str, list[pa.Table]] = {}
    sources: dict[str, list[dict[str, Any]]] = {}
    for hit in findings.tables:
        if not hit.named:
            continue
        contract = registry.get(hit.dataset)
        rows = read_table(store, hit.rel, version=hit.version)
        keys = pa.array([k[0] for k in hit.named]) if len(hit.key) == 1 else None
        if keys is not None:
            rows = rows.filter(pc.is_in(rows.column(hit.key[0]), keys))
        else:
            wanted = set(hit.named)
            mask = [tuple(r[k] for k in hit.key) in wanted for r in rows.to_pylist()]
            rows = rows.filter(pa.array(mask))
        rows = rows.select([n for n in contract.field_names if n in rows.column_names])
        tables.setdefault(hit.dataset, []).append(rows)
        sources.setdefault(hit.dataset, []).append(
            {"tenant": hit.tenant, "table": hit.rel, "version": hit.version, "rows": rows.num_rows}
        )
    for dataset, parts in sorted(tables.items()):
        contract = registry.get(dataset)
        table = pa.concat_tables(parts, promote_options="permissive")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        _write(folder, f"{dataset}.parquet", sink.getvalue().to_pybytes(), report)
        body = json.dumps(table.to_pylist(), default=_json_default, indent=2, ensure_ascii=False)
        _write(folder, f"{dataset}.json", body.encode(), report)
        report.rows[dataset] = table.num_rows
        purposes = frozenset(p for f in contract.fields for p in f.purposes)
        tenants = sorted({s["tenant"] for s in sources[dataset] if s["tenant"]})
        manifest["datasets"][dataset] = {
            "contract": contract.ref,
            "rows": table.num_rows,
            "files": [f"{dataset}.json", f"{dataset}.parquet"],
            "purposes": {f.name: sorted(f.purposes) for f in contract.fields},
            "categories": {
                f.name: {"classification": f.classification, "description": f.description}
                for f in contract.fields
            },
            "recipients": sorted({r for t in tenants or [None] for r in recipients(t, purposes)}),
            "retention": {
                "hot_days": contract.retention.hot_days,
                "archive_days": contract.retention.archive_days,
                "then": contract.retention.then,
                "counted_from": contract.retention.basis,
            },
            "source": {"description": contract.purpose, "tables": sources[dataset]},
        }
    for place in findings.places():
        if place["place"] != "table" or place["rows_naming"] == 0:
            manifest["other_places"].append(place)
    body = json.dumps(manifest, indent=2, default=_json_default, ensure_ascii=False)
    _write(folder, "manifest.json", body.encode(), report)
    return report
