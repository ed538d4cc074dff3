"""Erasing a data subject: ``energylake subject erase`` (and ``rectify``'s history clean-up).

Place by place, from ``retention.find``'s findings:

* **tables** -- the rows that name the person are deleted or have their personal fields
  cleared, as the contract's ``erasure`` says; rows that mention them in free text have
  each mention overwritten. Rows are picked by primary key (the commit's predicate holds
  keys, never an e-mail or a name), and then ``lake.purge.purge_table`` removes the bytes:
  removed files, old orphans, the log commits that held the keys and old statistics;
* **raw segments** (the lake's raw archive, the landing log's closed segments) -- each
  mention in a record is overwritten by as many ``*``, and the frame's CRC recomputed:
  offsets stay valid, so quarantine rows and lineage still point at their records;
* **extracts and reference source files** (found through lineage) -- Parquet and CSV/JSON
  lines are rewritten without the person's rows (a reference source by its contract's
  rule); other files have each mention overwritten;
* **Data Docs, logs** -- each mention overwritten in place;
* **the objection register** -- the person's objections (pseudonyms) are removed from
  every revision.

Every rewrite is atomic (a temp file renamed over, or one S3 put). Before the first change,
a pending record is written (``erasure/pending/<digest>.json``, 0600: the tables to purge
and the identifiers as widened, which a rerun needs once the rows that widened them are
gone); a rerun after a crash finds what is left, purges what was pending, finishes, and
removes the record once the proof (which skips that one folder) has passed. What is kept,
as the law asks: that an erasure happened, when, and what it covered, under the keyed
subject digest (audit record, lineage run, receipt). The receipt lists each place and the check that
proved it empty; a final byte scan of the data folder (and of the bucket) is its verdict.
"""

from __future__ import annotations

import io
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import Contract, ContractRegistry
from durable.files import atomic_write
from lake.delta import open_table, read_table
from lake.purge import purge_table
from lake.storage import Store
from landing.format import BODY_FIXED, FILE_HEADER_BYTES, FRAME_HEAD
from retention.find import (
    FileHit,
    Findings,
    Places,
    SegmentHit,
    TableHit,
    file_occurrences,
    find_subject,
    segment_records,
)
from retention.scan import ScanReport, scan_folder, scan_store
from retention.subject import Matcher, Subject

__all__ = [
    "ErasureReceipt",
    "PlaceResult",
    "chunks",
    "erase_subject",
    "key_predicate",
    "redact_segment",
    "resume",
    "sql_literal",
    "versioned_bucket",
]


@dataclass(slots=True)
class PlaceResult:
    """One place an erasure acted on, and the check that proved it empty."""

    place: str
    path: str
    action: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    check: str = ""
    empty: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "place": self.place,
            "path": self.path,
            "action": self.action,
            "before": self.before,
            "after": self.after,
            "check": self.check,
            "empty": self.empty,
        }


@dataclass(slots=True)
class ErasureReceipt:
    subject: str  # the keyed digest, never an identifier
    started_at: str
    applied: bool
    places: list[PlaceResult] = field(default_factory=list)
    scanned_files: int = 0
    scanned_bytes: int = 0
    residues: list[dict[str, str]] = field(default_factory=list)  # scan hits left
    young_orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kept: str = (
        "the fact of this erasure (audit record, lineage run, this receipt) under the keyed "
        "subject digest; no identifier of the person"
    )

    @property
    def verified(self) -> bool:
        return self.applied and not self.residues and all(p.empty for p in self.places)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "started_at": self.started_at,
            "applied": self.applied,
            "verified": self.verified,
            "places": [p.to_json() for p in self.places],
            "scan": {
                "files": self.scanned_files,
                "bytes": self.scanned_bytes,
                "residues": self.residues,
            },
            "young_orphans": self.young_orphans,
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
        }


def sql_literal(value: Any) -> str:
    """A value as a SQL literal for a Delta predicate (strings quoted, quotes doubled)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def key_predicate(key: list[str], rows: list[tuple[Any, ...]]) -> str:
    if len(key) == 1:
        return f"{key[0]} IN ({', '.join(sql_literal(r[0]) for r in rows)})"
    return " OR ".join(
        "(" + " AND ".join(f"{k} = {sql_literal(v)}" for k, v in zip(key, r, strict=True)) + ")"
        for r in rows
    )


def chunks(rows: list[tuple[Any, ...]], size: int = 500) -> list[list[tuple[Any, ...]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


_ERASE_COMMIT = {"energylake.operation": "erasure"}


def _erase_table(
    store: Store, contract: Contract, hit: TableHit, needles: Matcher
) -> dict[str, int]:
    """Delete or clear the rows naming the subject; overwrite mentions in free text."""
    from deltalake import CommitProperties

    table = open_table(store, hit.rel)
    props = CommitProperties(custom_metadata=_ERASE_COMMIT)
    done = {"rows_deleted": 0, "rows_cleared": 0, "rows_redacted": 0}
    rule = contract.erasure
    if hit.named:
        if rule is None or rule.rows == "delete":
            for chunk in chunks(hit.named):
                m = table.delete(key_predicate(hit.key, chunk), commit_properties=props)
                done["rows_deleted"] += int(m.get("num_deleted_rows", 0))
        else:
            nulls = dict.fromkeys(rule.clear, "NULL")
            for chunk in chunks(hit.named):
                m = table.update(
                    updates=nulls,
                    predicate=key_predicate(hit.key, chunk),
                    commit_properties=props,
                )
                done["rows_cleared"] += int(m.get("num_updated_rows", 0))
    if hit.mentioned:
        texts = [f.name for f in contract.fields if f.free_text]
        rows = read_table(store, hit.rel, columns=[*hit.key, *texts]).to_pylist()
        wanted = set(hit.mentioned)
        for row in rows:
            key = tuple(row[k] for k in hit.key)
            if key not in wanted:
                continue
            new: dict[str, Any] = {}
            for name in texts:
                value = row.get(name)
                if isinstance(value, str):
                    redacted, count = needles.redact_text(value)
                    if count:
                        new[name] = redacted
            if new:
                table.update(
                    new_values=new,
                    predicate=key_predicate(hit.key, [key]),
                    commit_properties=props,
                )
                done["rows_redacted"] += 1
    return done


def redact_segment(data: bytes, needles: Matcher) -> tuple[bytes, int]:
    """A landing segment with every mention in its records overwritten (same length, CRCs
    recomputed); the count of records changed. A damaged tail is kept as it is."""
    out = bytearray(data)
    changed, pos = 0, FILE_HEADER_BYTES
    while pos + FRAME_HEAD.size <= len(data):
        length, check, _crc = FRAME_HEAD.unpack_from(data, pos)
        end = pos + FRAME_HEAD.size + length
        if length ^ 0xFFFFFFFF != check or end > len(data):
            break
        start = pos + FRAME_HEAD.size
        region = data[start + BODY_FIXED.size : end]
        redacted, count = needles.redact(region)
        if count:
            out[start + BODY_FIXED.size : end] = redacted
            FRAME_HEAD.pack_into(out, pos, length, check, zlib.crc32(out[start:end]))
            changed += 1
        pos = end
    return bytes(out), changed


def _rewrite_rows(data: bytes, path: Path, contract: Contract | None, needles: Matcher) -> bytes:
    """A Parquet/CSV/JSON-lines file without the person (rows of a dataset's file by its
    contract's rule; see ``_without``); any other file with each mention starred."""
    suffix = path.suffix.lower()
    if data[:4] == b"PAR1":
        table = _without(pq.read_table(io.BytesIO(data)), contract, needles)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()
    if suffix in (".csv", ".jsonl", ".ndjson"):
        lines = data.splitlines(keepends=True)
        head = lines[:1] if suffix == ".csv" else []
        body = lines[1:] if suffix == ".csv" else lines
        keep = [ln for ln in body if not needles.found(ln)]
        return b"".join([*head, *keep])
    return needles.redact(data)[0]


def _matches(column: pa.ChunkedArray, needles: Matcher) -> pa.Array:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pa.array([False] * len(column))
    return pa.array([isinstance(v, str) and needles.found_text(v) for v in column.to_pylist()])


def _without(table: pa.Table, contract: Contract | None, needles: Matcher) -> pa.Table:
    """A copy's rows without the person. With the dataset's contract: the rows whose
    subject or identifier columns hold them (clear or pseudonym) are deleted or cleared as
    its erasure rule says, and every other mention is starred. Without one: every row that
    holds them anywhere is deleted."""
    naming = (
        {f.name for f in contract.fields if f.subject or f.identifies}
        if contract is not None
        else set(table.column_names)
    )
    named = pa.array([False] * table.num_rows)
    for name in table.column_names:
        if name in naming:
            named = pc.or_(named, _matches(table.column(name), needles))
    rule = contract.erasure if contract is not None else None
    if rule is None or rule.rows == "delete":
        table = table.filter(pc.invert(named))
    else:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        mask = pl.Series(named.to_pylist())
        present = [c for c in rule.clear if c in frame.columns]
        cleared = frame.with_columns(
            [pl.when(mask).then(None).otherwise(pl.col(c)).alias(c) for c in present]
        )
        table = cleared.to_arrow().cast(table.schema)
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = [v if v is None else needles.redact_text(v)[0] for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, column.type)])
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _rewrite_objections(store: Store, rel: str, pseudonyms: set[str]) -> int:
    raw = store.get_bytes(rel)
    if raw is None:
        return 0
    data = json.loads(raw)
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return 0
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("subject") in pseudonyms)]
    if len(kept) == len(entries):
        return 0
    data["entries"] = kept
    store.put_bytes(rel, json.dumps(data, sort_keys=True).encode())
    return len(entries) - len(kept)


def _pending_path(places: Places, digest: str) -> Path:
    return places.data_dir / "erasure" / "pending" / f"{digest}.json"


def resume(places: Places, start: Subject, digest_key: bytes) -> tuple[Subject, str]:
    """The subject of a request and its digest (of the identifier the request names, so a
    rerun has the same one). After an interrupted erasure, the subject as that run had
    widened it: its pending record keeps the identifiers (file 0600) until the erasure is
    proven, because the rows that widened them may be gone already."""
    digest = start.digest(digest_key)
    path = _pending_path(places, digest)
    if not path.is_file():
        return start, digest
    saved = Subject.from_json(json.loads(path.read_text()).get("subject", {}))
    return saved.merge(start), digest


def erase_subject(
    store: Store,
    registry: ContractRegistry,
    places: Places,
    start: Subject,
    *,
    digest: str,
    apply: bool,
    scan_roots: tuple[Path, ...] = (),
    scan_lake: bool = False,
    reader_grace_s: float = 0.0,
    step: Callable[[str], None] | None = None,
    findings: Findings | None = None,
) -> tuple[Findings, ErasureReceipt]:
    """Find, then (with ``apply``) erase and prove. ``scan_roots``: folders whose every byte
    the proof reads (the data folder); ``scan_lake``: also every object of the lake store
    (an S3 lake). ``step(name)`` is called between steps (progress; crash tests)."""
    began = time.monotonic()
    if findings is None:
        findings = find_subject(store, registry, places, start)
    subject = findings.subject
    receipt = ErasureReceipt(
        subject=digest, started_at=datetime.now(UTC).isoformat(), applied=apply
    )
    needles = subject.matcher()
    everything = subject.matcher(findings.pseudonyms)
    pending = _pending_path(places, digest)
    earlier: list[str] = []
    if pending.is_file():
        earlier = list(json.loads(pending.read_text()).get("tables", []))
    if not apply:
        for place in findings.places():
            receipt.places.append(
                PlaceResult(str(place["place"]), str(place.get("path") or place.get("table")),
                            "would erase", before=place)
            )  # fmt: skip
        receipt.seconds = time.monotonic() - began
        return findings, receipt
    tick = step or (lambda _name: None)
    to_purge = sorted({*earlier, *(h.rel for h in findings.tables)})
    pending.parent.mkdir(parents=True, exist_ok=True)
    record = {"tables": to_purge, "subject": subject.to_json()}
    atomic_write(pending, json.dumps(record).encode(), mode=0o600)
    tick("pending")
    by_rel = {h.rel: h for h in findings.tables}
    contracts = {c.dataset: c for c in registry}
    results: dict[str, PlaceResult] = {}
    for rel in to_purge:  # first every table's rows, then (after the grace) every purge
        hit = by_rel.get(rel)
        result = results[rel] = PlaceResult("table", rel, "purge")
        if hit is not None:
            result.before = hit.to_json()
            result.action = _table_action(contracts[hit.dataset])
            result.after.update(_erase_table(store, contracts[hit.dataset], hit, needles))
            tick(f"table:{rel}")
    if by_rel and reader_grace_s > 0:
        time.sleep(reader_grace_s)
    for rel in to_purge:
        result = results[rel]
        report = purge_table(store, rel)
        receipt.young_orphans.extend(f"{rel}/{p}" for p in report.young_orphans)
        result.after.update(
            version=report.version_after,
            removed_files=len(report.removed_files),
            orphan_files=len(report.orphan_files),
        )
        tick(f"purge:{rel}")
        receipt.places.append(result)
    for seg in findings.segments:
        receipt.places.append(_erase_segment(store, seg, needles))
        tick(f"segment:{seg.path}")
    for hit_file in findings.files:
        receipt.places.append(_erase_file(store, registry, hit_file, findings, everything))
        tick(f"file:{hit_file.path}")
    # checks: find again (every place), and each table folder's bytes
    again = find_subject(store, registry, places, _copy(subject))
    still = {p.get("table") or p.get("path") for p in again.places()}
    for result in receipt.places:
        if result.place == "table":
            residue = scan_store(store, everything, prefix=result.path)
            result.empty = result.path not in still and residue.clean
            result.check = (
                f"re-find: {'none' if result.path not in still else 'rows left'}; "
                f"bytes of {residue.files} files: {len(residue.hits)} hits"
            )
        else:
            result.empty = result.path not in still
            result.check = "re-find: " + ("none" if result.empty else "still present")
    skip = (pending.parent,)  # the pending record itself: removed once this proof passes
    scans: list[ScanReport] = [scan_folder(root, everything, skip=skip) for root in scan_roots]
    if scan_lake:
        scans.append(scan_store(store, everything))
        if versioned_bucket(store):  # a delete or an overwrite there keeps the old bytes
            receipt.residues.append(
                {"path": store.url(""), "form": "bucket versioning: noncurrent versions"}
            )
    for scan in scans:
        receipt.scanned_files += scan.files
        receipt.scanned_bytes += scan.size_bytes
        receipt.residues.extend({"path": h.path, "form": h.form} for h in scan.hits)
    if receipt.verified:
        pending.unlink(missing_ok=True)
    receipt.seconds = time.monotonic() - began
    return findings, receipt


def versioned_bucket(store: Store) -> bool:
    """Whether the S3 bucket keeps old versions of objects (they would hold erased bytes)."""
    status = store.boto3_client().get_bucket_versioning(Bucket=store.bucket).get("Status")
    return status in ("Enabled", "Suspended")


def _copy(subject: Subject) -> Subject:
    return Subject(
        ids={k: set(v) for k, v in subject.ids.items()},
        values={k: set(v) for k, v in subject.values.items()},
        stored=set(subject.stored),
    )


def _table_action(contract: Contract) -> str:
    rule = contract.erasure
    if rule is None or rule.rows == "delete":
        return "rows deleted, mentions starred, purged"
    return f"fields cleared ({', '.join(rule.clear)}), mentions starred, purged"


def _erase_segment(store: Store, seg: SegmentHit, needles: Matcher) -> PlaceResult:
    result = PlaceResult(f"{seg.where} segment", seg.path, "mentions starred, CRCs recomputed")
    result.before = {"records": seg.records}
    if seg.where == "raw":
        data = store.get_bytes(seg.path) or b""
        new, changed = redact_segment(data, needles)
        if changed:
            store.put_bytes(seg.path, new)
    else:
        path = Path(seg.path)
        new, changed = redact_segment(path.read_bytes(), needles)
        if changed:
            atomic_write(path, new)
    result.after = {"records_changed": changed, "records_left": segment_records(new, needles)}
    return result


def _erase_file(
    store: Store, registry: ContractRegistry, hit: FileHit, findings: Findings, needles: Matcher
) -> PlaceResult:
    result = PlaceResult(hit.kind, hit.path, "", before=hit.to_json())
    if hit.kind == "objections":
        removed = _rewrite_objections(store, hit.path, findings.pseudonyms)
        result.action = "objections removed"
        result.after = {"entries_removed": removed}
        return result
    path = Path(hit.path)
    data = path.read_bytes()
    if hit.kind in ("extract", "reference source"):
        contract = registry.get(hit.dataset) if hit.dataset in registry.datasets else None
        new = _rewrite_rows(data, path, contract, needles)
        result.action = "rows removed (or cleared by the contract's rule)"
    else:
        new, _count = needles.redact(data)
        result.action = "mentions starred"
    if new != data:
        atomic_write(path, new)
    result.after = {"occurrences_left": file_occurrences(new, needles)}
    return result
