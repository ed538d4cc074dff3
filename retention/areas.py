"""Everything the platform keeps, with an owner and a retention: the storage areas.

Tables have their retention in their contracts (``retention.apply`` acts on it). The
rest -- the raw segment archive, pipeline state, lineage events, Data Docs, logs,
extracts, receipts, keys of deleted tenants, ... -- get a setting each (``*_days`` in
``pipelines/settings.py``), declared here with the component that writes them and what
enforces the retention. ``area_of(path)`` names the area of any file under the data folder
or the lake (the first area whose pattern matches, in the declared order); a file that
none covers is a defect (``uncovered``; ``energylake retention areas --check``; tested on
the demo's data folder). ``expire_areas`` deletes the files past their retention in the
areas that are plain files (a dry run unless ``apply``).

Patterns are ``fnmatch`` patterns (``*`` crosses ``/``) relative to the data folder
(``root="data"``) or the lake's root (``root="lake"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal, Protocol

from contracts import ContractRegistry
from lake.storage import Store

__all__ = [
    "Area",
    "AreaConfig",
    "AreaReport",
    "area_of",
    "declared_areas",
    "describe",
    "expire_areas",
    "uncovered",
]

Root = Literal["data", "lake"]
_DAY_PATH = re.compile(r"(\d{4})[/-](\d{2})[/-](\d{2})")


class AreaConfig(Protocol):
    """The settings the areas are built from (``pipelines.settings.Settings`` has them)."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def raw_archive_days(self) -> int: ...
    @property
    def batch_state_days(self) -> int: ...
    @property
    def lineage_days(self) -> int: ...
    @property
    def data_docs_days(self) -> int: ...
    @property
    def log_days(self) -> int: ...
    @property
    def extract_days(self) -> int: ...
    @property
    def report_days(self) -> int: ...
    @property
    def receipt_days(self) -> int: ...
    @property
    def access_history_days(self) -> int: ...
    @property
    def deleted_tenant_key_days(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    root: Root
    patterns: tuple[str, ...]
    owner: str  # the component that writes it (and answers for it)
    retention: str  # how long, in words
    source: str  # where that comes from: a contract, a setting, a rule
    enforced_by: str
    days: int | None = None  # for areas expire_areas acts on

    def matches(self, rel: str) -> bool:
        return any(fnmatchcase(rel, p) for p in self.patterns)


def declared_areas(config: AreaConfig, registry: ContractRegistry) -> list[Area]:
    """The areas, most specific first (``area_of`` takes the first match)."""
    c = config
    areas = [
        Area("held batches", "lake", ("tenants/*/_held/*", "tenants/*/*/_held/*"),
             "quality gate (pipelines.batch_commit)",
             "until released or discarded (energylake quality release|discard)",
             "rule: a held batch is published or discarded by an operator",
             "the operator's decision; their rows then follow the table's contract"),
        Area("retention state", "lake", ("_state/retention/*",), "retention.apply",
             "until the purge it marks has finished", "rule", "retention apply"),
        Area("pipeline state", "lake", ("_state/*",), "pipelines.process",
             f"{c.batch_state_days} days for finished batches (the last ones always kept)",
             "setting batch_state_days", "retention apply (areas)", c.batch_state_days),
        Area("raw segment archive", "lake", ("raw/*",), "pipelines.process (archives each "
             "segment after its batch commits)",
             f"{c.raw_archive_days} days (raw payloads: kept as long as the quarantine's "
             "excerpts, then deleted)", "setting raw_archive_days", "retention apply (areas)",
             c.raw_archive_days),
        Area("access registers", "lake", ("_access/*",), "analytics.grants, analytics.objections",
             f"the latest revision while in force; superseded revisions "
             f"{c.access_history_days} days", "setting access_history_days",
             "retention apply (areas)", c.access_history_days),
    ]  # fmt: skip
    for contract in registry:
        r = contract.retention
        words = f"{r.hot_days} days hot" + (
            f", {r.archive_days} in the archive" if r.archive_days else ""
        )
        patterns = (
            (f"platform/{contract.dataset}/*",)
            if contract.platform_wide
            else (f"tenants/*/{contract.dataset}/*", f"archive/*/{contract.dataset}/*")
        )
        areas.append(
            Area(f"table {contract.dataset}", "lake", patterns, f"contract {contract.ref}",
                 f"{words}, then deleted and purged (basis {r.basis})",
                 f"contract {contract.dataset} (customProperties.retention)",
                 "retention apply")
        )  # fmt: skip
    areas += [
        Area("landing log", "data", ("landing/*",), "gateway (writes), pipelines.process "
             "(archives)", "until its batch commits, then moved to the raw archive",
             "rule: the pipeline's exactly-once protocol", "pipelines.process"),
        Area("lineage events", "data", ("lineage/*",), "lineage (every run)",
             f"{c.lineage_days} days (at least as long as extracts and receipts point at it)",
             "setting lineage_days", "retention apply (areas)", c.lineage_days),
        Area("audit log", "data", ("audit/*",), "audit (gateway, pipeline, access, subjects, "
             "retention)", "at least one year (DPDP Rules 2025 r.8)",
             "audit.retention.MIN_RETENTION_DAYS (365; prune refuses less)",
             "energylake audit prune (docs/AUDIT.md)"),
        Area("Data Docs", "data", ("quality/*",), "quality gate (Great Expectations)",
             f"validation results {c.data_docs_days} days; the site is rebuilt from them",
             "setting data_docs_days", "retention apply (areas)", c.data_docs_days),
        Area("logs", "data", ("logs/*",), "energylake run and its children",
             f"{c.log_days} days after their last write", "setting log_days",
             "retention apply (areas)", c.log_days),
        Area("reports", "data", ("reports/*",), "energylake report (sustainability team)",
             f"{c.report_days} days", "setting report_days", "retention apply (areas)",
             c.report_days),
        Area("extracts", "data", ("extracts/*",), "energylake extract (analysts)",
             f"{c.extract_days} days (found through their lineage runs wherever they are)",
             "setting extract_days", "retention apply (areas)", c.extract_days),
        Area("erasure records", "data", ("erasure/*",), "energylake subject erase",
             f"receipts {c.receipt_days} days (the fact of an erasure); pending records "
             "until the erasure is proven", "setting receipt_days",
             "retention apply (areas); subject erase", c.receipt_days),
        Area("keys", "data", ("keys/*",), "lake.keys (tenant keys), cli.subject (platform)",
             f"a tenant's key while it has data; a deleted tenant's key "
             f"{c.deleted_tenant_key_days} days more (then destroyed: crypto-shredding)",
             "setting deleted_tenant_key_days", "retention apply (areas)",
             c.deleted_tenant_key_days),
        Area("gateway files", "data", ("gateway/*",), "gateway provisioning and the broker",
             f"configuration while provisioned; the broker log {c.log_days} days",
             "setting log_days", "retention apply (areas)", c.log_days),
        Area("Modbus poller state", "data", ("modbus/*",), "energylake modbus poll",
             "kept: each device's next seq (a restart must never reuse one; a retired "
             "device's stays, a few bytes) and the poller's status file (replaced)",
             "rule: a seq is never reused", "not expired (one small file per device)"),
        Area("broker persistence", "data", ("mosquitto-data/*",), "Mosquitto",
             "until each message is delivered (the broker's own)", "rule: MQTT QoS 1",
             "Mosquitto"),
        Area("simulator output", "data", ("sim/*",), "energylake simulate / demo",
             "until the next demo (it resets the folder); test data only",
             "rule: demo data", "energylake demo"),
        Area("demo marker", "data", (".energylake-demo",), "energylake demo",
             "until the next demo", "rule: demo data", "energylake demo"),
    ]  # fmt: skip
    return areas


def area_of(areas: list[Area], root: Root, rel: str) -> Area | None:
    for area in areas:
        if area.root == root and area.matches(rel):
            return area
    return None


def _files(folder: Path) -> Iterator[str]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(folder))


def uncovered(
    config: AreaConfig, registry: ContractRegistry, store: Store | None = None
) -> list[str]:
    """Every file under the data folder (and in the lake, when given) that no area covers."""
    areas = declared_areas(config, registry)
    lake_dir = Path(store.url("")) if store is not None and not store.is_s3 else None
    out = []
    for rel in _files(config.data_dir):
        path = config.data_dir / rel
        if lake_dir is not None and path.is_relative_to(lake_dir):
            continue  # the lake's own files: checked below, by their lake paths
        if area_of(areas, "data", rel) is None:
            out.append(rel)
    if store is not None:
        out += [f"lake:{rel}" for rel in store.list("") if area_of(areas, "lake", rel) is None]
    return out


# ---------------------------------------------------------------------------- expiry


@dataclass(slots=True)
class AreaReport:
    applied: bool
    deleted: dict[str, int] = field(default_factory=dict)  # area -> files deleted (or due)
    bytes: dict[str, int] = field(default_factory=dict)

    def add(self, area: str, size: int) -> None:
        self.deleted[area] = self.deleted.get(area, 0) + 1
        self.bytes[area] = self.bytes.get(area, 0) + size


def _day(rel: str) -> date | None:
    found = _DAY_PATH.search(rel)
    if found is None:
        return None
    try:
        return date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None


def expire_areas(
    config: AreaConfig,
    store: Store,
    now: datetime,
    *,
    apply: bool,
    lineage_files: Sequence[Path] = (),
) -> AreaReport:
    """Delete (with ``apply``; else count) the files past their area's retention:
    raw segments by their day folder, lineage events and their index by their day, Data
    Docs validation results, logs, extracts (the ``extracts/`` folder and
    ``lineage_files``: extracts found through lineage, wherever they are) and receipts
    by their age, finished pipeline batches (the last 100 always kept), superseded access
    register revisions, and the keys of tenants with no table left."""
    report = AreaReport(applied=apply)
    data = config.data_dir
    stamp = now.timestamp()

    def old(days: int) -> date:
        return (now - timedelta(days=days)).date()

    def drop_lake(area: str, rel: str) -> None:
        report.add(area, store.size(rel) or 0)
        if apply:
            store.delete(rel)

    def drop_file(area: str, path: Path) -> None:
        report.add(area, path.stat().st_size)
        if apply:
            path.unlink(missing_ok=True)

    def aged(path: Path, days: int) -> bool:
        return path.stat().st_mtime < stamp - days * 86400

    for rel in store.list("raw"):
        day = _day(rel)
        if day is not None and day < old(max(config.raw_archive_days, 2)):
            drop_lake("raw segment archive", rel)
    _expire_batches(store, old(config.batch_state_days), drop_lake)
    _expire_revisions(store, stamp - config.access_history_days * 86400, drop_lake)
    lineage = data / "lineage"
    for path in sorted(lineage.rglob("*")) if lineage.is_dir() else []:
        day = _day(path.name)
        if path.is_file() and day is not None and day < old(config.lineage_days):
            drop_file("lineage events", path)
    for folder, days, area in (
        (data / "quality" / "validations", config.data_docs_days, "Data Docs"),
        (data / "logs", config.log_days, "logs"),
        (data / "extracts", config.extract_days, "extracts"),
        (data / "reports", config.report_days, "reports"),
        (data / "erasure" / "receipts", config.receipt_days, "erasure records"),
    ):
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and aged(path, days):
                drop_file(area, path)
    for path in lineage_files:
        inside = path.is_relative_to(data / "extracts")  # counted with its folder
        if path.is_file() and not inside and aged(path, config.extract_days):
            drop_file("extracts", path)
    keys = data / "keys"
    live = set(store.children("tenants"))
    for path in sorted(keys.glob("*.key")) if keys.is_dir() else []:
        if path.stem not in live and aged(path, config.deleted_tenant_key_days):
            drop_file("keys", path)
    return report


_Drop = Callable[[str, str], None]


def _expire_batches(store: Store, before: date, drop: _Drop) -> None:
    """Finished batches of each pipeline older than ``before``, but the last 100."""
    for pipeline in store.children("_state"):
        if pipeline == "retention":
            continue
        batches = sorted(store.children(f"_state/{pipeline}/batches"))
        for batch in batches[:-100]:
            rel = f"_state/{pipeline}/batches/{batch}"
            done = store.get_bytes(f"{rel}/done.json")
            if done is None:
                continue  # not finished: the pipeline's
            modified = store.modified_at(f"{rel}/done.json") or 0.0
            if datetime.fromtimestamp(modified, UTC).date() < before:
                for file in store.list(rel):
                    drop("pipeline state", file)


def _expire_revisions(store: Store, before_s: float, drop: _Drop) -> None:
    """Superseded revisions of the access registers older than ``before_s``."""
    for register in store.children("_access"):
        revisions = sorted(
            (int(name[:-5]), rel)
            for rel in store.list(f"_access/{register}")
            if (name := rel.rsplit("/", 1)[-1]).endswith(".json") and name[:-5].isdigit()
        )
        for _number, rel in revisions[:-1]:
            if (store.modified_at(rel) or 0.0) < before_s:
                drop("access registers", rel)


def describe(areas: list[Area]) -> list[dict[str, str]]:
    return [
        {
            "area": a.name,
            "where": ", ".join(f"{a.root}:{p}" for p in a.patterns),
            "owner": a.owner,
            "retention": a.retention,
            "source": a.source,
            "enforced_by": a.enforced_by,
        }
        for a in areas
    ]
