"""Where a data subject appears: ``energylake subject find``.

Driven by the contracts and by lineage, not by a list of places:

* **tables** -- every table of every contract that has a field naming people (``subject``,
  ``identifies``) or free text (``freeText``): hot and archive tables of every tenant, and
  the unassigned quarantine. A row *names* the subject when one of its subject or
  identifier fields holds one of theirs; it *mentions* them when a free-text field holds
  one of their identifiers as a substring. The rows that name them widen the identifiers
  (their e-mail on their contact row), until nothing new is found;
* **raw segments** -- the lake's raw archive and the landing log's closed segments whose
  record bytes hold an identifier;
* **files found through lineage** -- extracts (outputs of ``extract.*`` runs) and the
  reference source files loads read (inputs of ``reference.load`` runs) that still exist
  and hold an identifier or one of the person's pseudonyms;
* **text areas** -- Data Docs and logs under the data folder; and the objection register
  (``_access/objections``), where the person is a pseudonym.

Nothing here changes anything, and nothing it returns is written anywhere but the
caller's screen: audit records and receipts carry counts and the keyed subject digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc

from contracts import Contract, ContractRegistry
from contracts.errors import ConfigError
from lake.delta import latest_version, read_table, table_exists
from lake.keys import KeyStore
from lake.layout import UNASSIGNED_TENANT, archive_rel, platform_rel, table_rel, tenants
from lake.storage import Store
from landing.format import BODY_FIXED, FILE_HEADER_BYTES, FRAME_HEAD
from retention.subject import ID_OPTIONS, Matcher, Subject

__all__ = [
    "FileHit",
    "Findings",
    "Places",
    "SegmentHit",
    "TableHit",
    "file_occurrences",
    "find_subject",
    "lineage_files",
    "searchable",
    "segment_records",
    "start_subject",
    "subject_tables",
]

_MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Places:
    """Where a request looks, besides the lake's tables and raw archive."""

    data_dir: Path
    landing_dir: Path
    lineage_dir: Path
    keys_dir: Path
    text_dirs: tuple[Path, ...] = ()  # Data Docs, logs: redacted in place


@dataclass(slots=True)
class TableHit:
    dataset: str
    tenant: str | None
    rel: str
    version: int
    key: list[str]  # the primary key columns
    named: list[tuple[Any, ...]] = field(default_factory=list)  # keys of rows naming them
    mentioned: list[tuple[Any, ...]] = field(default_factory=list)  # keys of rows mentioning
    fields: set[str] = field(default_factory=set)  # the fields that matched

    def to_json(self) -> dict[str, Any]:
        return {
            "place": "table",
            "dataset": self.dataset,
            "tenant": self.tenant,
            "table": self.rel,
            "version": self.version,
            "rows_naming": len(self.named),
            "rows_mentioning": len(self.mentioned),
            "fields": sorted(self.fields),
        }


@dataclass(slots=True)
class SegmentHit:
    where: str  # "raw" (the lake's archive) or "landing"
    path: str  # lake-relative (raw) or a local path (landing)
    records: int

    def to_json(self) -> dict[str, Any]:
        return {"place": f"{self.where} segment", "path": self.path, "records": self.records}


@dataclass(slots=True)
class FileHit:
    kind: str  # extract, reference source, text, objections
    path: str  # local path, or lake-relative for objections
    occurrences: int
    pseudonyms: bool = False  # found as a pseudonym
    run_id: str | None = None  # the lineage run that wrote or read it
    dataset: str | None = None  # the dataset whose rows the file holds (from lineage)

    def to_json(self) -> dict[str, Any]:
        return {
            "place": self.kind,
            "path": self.path,
            "occurrences": self.occurrences,
            "as_pseudonym": self.pseudonyms,
            "lineage_run": self.run_id,
            "dataset": self.dataset,
        }


@dataclass(slots=True)
class Findings:
    subject: Subject
    pseudonyms: set[str]
    tables: list[TableHit] = field(default_factory=list)
    segments: list[SegmentHit] = field(default_factory=list)
    files: list[FileHit] = field(default_factory=list)

    def places(self) -> list[dict[str, Any]]:
        return [
            *(t.to_json() for t in self.tables),
            *(s.to_json() for s in self.segments),
            *(f.to_json() for f in self.files),
        ]

    @property
    def empty(self) -> bool:
        return not (self.tables or self.segments or self.files)


def searchable(contract: Contract) -> bool:
    """Whether the contract's rows can name or mention a person."""
    return any(f.subject or f.identifies or f.free_text for f in contract.fields)


def subject_tables(store: Store, contract: Contract) -> Iterator[tuple[str | None, str]]:
    """Every existing table of the contract, hot and archive: ``(tenant, rel)``."""
    candidates: list[tuple[str | None, str]] = []
    if contract.platform_wide:
        candidates.append((None, platform_rel(contract.dataset)))
    else:
        for tenant in tenants(store):
            candidates.append((tenant, table_rel(tenant, contract.dataset)))
            candidates.append((tenant, archive_rel(tenant, contract.dataset)))
        if contract.dataset == "quarantine":
            candidates.append((UNASSIGNED_TENANT, table_rel(UNASSIGNED_TENANT, "quarantine")))
    for owner, rel in candidates:
        if table_exists(store, rel):
            yield owner, rel


def _search_table(
    store: Store, contract: Contract, tenant: str | None, rel: str, subject: Subject
) -> TableHit | None:
    key = contract.primary_key
    naming = [f for f in contract.fields if f.subject or f.identifies]
    texts = [f for f in contract.fields if f.free_text]
    columns = list(dict.fromkeys([*key, *(f.name for f in naming), *(f.name for f in texts)]))
    version = latest_version(store, rel)
    if version is None:
        return None
    table = read_table(store, rel, columns=columns, version=version)
    if table.num_rows == 0:
        return None
    hit = TableHit(contract.dataset, tenant, rel, version, key)
    named = pa.array([False] * table.num_rows)
    for f in naming:
        kind = f.identifies or f.subject
        assert kind is not None
        column = table.column(f.name)
        values = [v for v in pc.unique(column).to_pylist() if isinstance(v, str)]
        mine = [v for v in values if subject.matches(kind, v)]
        if mine:
            hit.fields.add(f.name)
            named = pc.or_(named, pc.fill_null(pc.is_in(column, pa.array(mine)), False))
    mentioned = pa.array([False] * table.num_rows)
    matcher = subject.matcher()
    for f in texts:
        values = pc.cast(table.column(f.name), pa.string()).to_pylist()
        found = pa.array([isinstance(v, str) and matcher.found_text(v) for v in values])
        if pc.any(found).as_py():
            hit.fields.add(f.name)
            mentioned = pc.or_(mentioned, found)
    keys = table.select(key)
    hit.named = [tuple(r.values()) for r in keys.filter(named).to_pylist()]
    hit.mentioned = [
        tuple(r.values()) for r in keys.filter(pc.and_(mentioned, pc.invert(named))).to_pylist()
    ]
    if not (hit.named or hit.mentioned):
        return None
    return hit


def _widen(store: Store, hit: TableHit, contract: Contract, subject: Subject) -> bool:
    """Add the identifiers of the rows that name the subject; True if any was new."""
    naming = [f for f in contract.fields if f.subject or f.identifies]
    table = read_table(store, hit.rel, columns=[*hit.key, *(f.name for f in naming)])
    wanted = set(hit.named)
    new = False
    for row in table.to_pylist():
        if tuple(row[k] for k in hit.key) not in wanted:
            continue
        for f in naming:
            value = row.get(f.name)
            kind = f.identifies or f.subject
            if isinstance(value, str) and kind is not None:
                new = subject.add(kind, value) or new
    return new


def segment_records(data: bytes, matcher: Matcher) -> int:
    """How many records of a landing segment's bytes hold an identifier."""
    if not matcher.found(data):
        return 0
    count, pos = 0, FILE_HEADER_BYTES
    while pos + FRAME_HEAD.size <= len(data):
        length, check, _crc = FRAME_HEAD.unpack_from(data, pos)
        if length ^ 0xFFFFFFFF != check or pos + FRAME_HEAD.size + length > len(data):
            break
        body = data[pos + FRAME_HEAD.size + BODY_FIXED.size : pos + FRAME_HEAD.size + length]
        if matcher.found(body):
            count += 1
        pos += FRAME_HEAD.size + length
    return count


def lineage_files(lineage_dir: Path) -> Iterator[tuple[str, Path, str, str]]:
    """``(kind, path, run id, dataset)`` of every local file an extract wrote or a reference
    load read."""
    events = lineage_dir / "events"
    if not events.is_dir():
        return
    seen: set[Path] = set()
    for day in sorted(events.glob("*.jsonl")):
        for line in day.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("eventType") != "COMPLETE":
                continue
            job = str((event.get("job") or {}).get("name", ""))
            run = str((event.get("run") or {}).get("runId", ""))
            if job.startswith("extract."):
                kind, datasets = "extract", event.get("outputs") or []
            elif job == "reference.load":
                kind, datasets = "reference source", event.get("inputs") or []
            else:
                continue
            for ds in datasets:
                path = _local(str(ds.get("namespace", "")), str(ds.get("name", "")))
                if path is not None and path not in seen and path.is_file():
                    seen.add(path)
                    dataset = job.removeprefix("extract.") if kind == "extract" else path.stem
                    yield kind, path, run, dataset


def _local(namespace: str, name: str) -> Path | None:
    parsed = urlparse(namespace)
    if parsed.scheme != "file" or not name or "/" in name:
        return None
    return Path(unquote(parsed.path)) / name


def file_occurrences(data: bytes, matcher: Matcher) -> int:
    """Occurrences of the identifiers in a file's bytes -- decoded when it is Parquet."""
    count = matcher.count(data)
    if data[:4] == b"PAR1":
        from retention.scan import parquet_text  # decoded values: compressed pages hide bytes

        count = max(count, matcher.count(parquet_text(data).encode()))
    return count


def find_subject(
    store: Store,
    registry: ContractRegistry,
    places: Places,
    start: Subject,
) -> Findings:
    """Every place the subject appears (see the module doc)."""
    subject = start
    contracts = [c for c in registry if searchable(c)]
    hits: list[TableHit] = []
    for _round in range(_MAX_ROUNDS):
        hits = []
        new = False
        for contract in contracts:
            for tenant, rel in subject_tables(store, contract):
                hit = _search_table(store, contract, tenant, rel, subject)
                if hit is None:
                    continue
                hits.append(hit)
                if hit.named:
                    new = _widen(store, hit, contract, subject) or new
        if not new:
            break
    keys = KeyStore(places.keys_dir)
    pseudonyms: set[str] = set()
    # under every tenant's key, not only where rows were found: a rerun after a crash may
    # find the rows gone and a pseudonymised copy still there
    for tenant in tenants(store):
        key = keys.existing(tenant)  # no key: nothing of the tenant was ever pseudonymised
        if key is not None:
            pseudonyms |= subject.pseudonyms(registry, key)
    findings = Findings(subject, pseudonyms, tables=hits)
    needles = subject.matcher()
    for rel in store.list("raw"):
        data = store.get_bytes(rel)
        records = segment_records(data or b"", needles)
        if records:
            findings.segments.append(SegmentHit("raw", rel, records))
    closed = places.landing_dir / "closed"
    for path in sorted(closed.glob("*")) if closed.is_dir() else []:
        records = segment_records(path.read_bytes(), needles)
        if records:
            findings.segments.append(SegmentHit("landing", str(path), records))
    with_pseudonyms = subject.matcher(pseudonyms)
    for kind, path, run, dataset in lineage_files(places.lineage_dir):
        data = path.read_bytes()
        _file_hit(findings, kind, path, data, needles, with_pseudonyms, run, dataset)
    for folder in places.text_dirs:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            data = path.read_bytes()
            _file_hit(findings, "text", path, data, needles, with_pseudonyms, None, None)
    for rel in store.list("_access/objections"):
        data = store.get_bytes(rel) or b""
        count = sum(data.lower().count(p.lower().encode()) for p in pseudonyms)
        if count:
            findings.files.append(FileHit("objections", rel, count, pseudonyms=True))
    return findings


def _file_hit(
    findings: Findings,
    kind: str,
    path: Path,
    data: bytes,
    needles: Matcher,
    with_pseudonyms: Matcher,
    run: str | None,
    dataset: str | None,
) -> None:
    clear = file_occurrences(data, needles)
    total = file_occurrences(data, with_pseudonyms)
    if total:
        findings.files.append(
            FileHit(kind, str(path), total, total > clear, run_id=run, dataset=dataset)
        )


def start_subject(options: dict[str, str | None], kinds: list[str]) -> Subject:
    """The subject of a request's options (exactly one must be given)."""
    given = [(k, v) for k, v in options.items() if v]
    named = ", ".join(f"--{k}" if k in ID_OPTIONS else f"--{k}-id" for k in options)
    if len(given) != 1:
        raise ConfigError(f"name the person by exactly one of {named}", setting=named)
    kind, value = given[0]
    assert value is not None
    if kind not in ID_OPTIONS and kind not in kinds:
        raise ConfigError(f"unknown kind of identifier {kind!r}: one of {named}", setting=kind)
    return Subject.start(kind, value)
