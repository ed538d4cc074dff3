"""Governed access: an analyst's DuckDB session that sees only its tenants' rows, each
column shaped for the session's one purpose, and that leaves an access record for every
session and every statement before any result leaves.

**The boundary.** Two sides. The platform's side reads the lake (DuckDB's ``delta_scan`` on
a connection of its own, ``lake.duck.reader``, with the store's credentials), keeps only
the rows of the principal's tenants and branches (and the session's time window), and
shapes every column by the contract's plan for the purpose (``contracts.policy``: clear,
pseudonymised with the tenant's key, masked, generalised, or dropped: a dropped column is
never even read). The analyst's side is a DuckDB connection that holds nothing but these
shaped Arrow tables, one view per dataset, and cannot reach anything else: external access
off (no file, no URL, no ``COPY``, ``ATTACH`` of a file or ``EXPORT``), extensions neither
installed nor loaded, replacement scans of Python objects off, no temp directory, and the
configuration locked. It never holds a lake path, a credential or the delta extension
(which reads ``_delta_log`` outside DuckDB's file checks). Because protection is applied
before the analyst's SQL runs, a predicate, a join, an error message or a timing sees only
shaped values: ``WHERE technician_phone = '+91…'`` compares with the masked value and
matches nothing raw; the platform's read depends only on the session (tenants, branches,
window) and on bounds over columns the purpose sees in clear (``analytics.pushdown``), so
nothing about a protected value is learned from how the lake was pruned.

**The record.** Opening a session, each statement (ok, denied or error) and closing
write to the access log (``audit.log``, fail-closed: a record that cannot be made durable
stops the result) with the principal, tenants, purpose, datasets with their table
versions and contract, the action on every column, rows returned, duration, and the SQL
with its literals redacted plus its hash (``analytics.sqltext``).
"""

from __future__ import annotations

import operator
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analytics.errors import AccessDeniedError, QueryError
from analytics.grants import AccessRecorder, Grant, GrantBook, os_user
from analytics.objections import ObjectionRegister, drop_objected
from analytics.pushdown import Read, parser, plan_reads
from analytics.sqltext import identifiers, redact, sql_sha256
from contracts import Contract, ContractRegistry, UnknownPurposeError
from contracts.policy import Action, PurposePlan, TenantKey, apply_plan, plan_for
from lake.delta import open_table, table_exists
from lake.duck import Condition, read_delta, reader, sql_condition
from lake.keys import KeyStore
from lake.layout import (
    RETENTION_BEFORE_KEY,
    RETENTION_TXN,
    archive_rel,
    clients_rel,
    retention_source_txn,
    table_rel,
)
from lake.storage import Store

__all__ = [
    "LOCKED_CONFIG",
    "AccessRecorder",
    "Session",
    "View",
    "connect",
]

# The analyst's connection (measured on duckdb 1.5.5: docs/ACCESS.md lists what each stops).
LOCKED_CONFIG: Mapping[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "python_enable_replacements": False,
    "temp_directory": "",
    "lock_configuration": True,
}
_TENANT_COLUMN = "client_id"
_BRANCH_COLUMN = "branch_id"
_TIME_COLUMN = "ts"


@dataclass(frozen=True, slots=True)
class View:
    """A dataset as the session offers it: the contract's plan for the purpose."""

    dataset: str
    contract: Contract
    plan: PurposePlan

    @property
    def columns(self) -> list[dict[str, str]]:
        return [
            {"dataset": self.dataset, "column": p.field, "action": str(p.action)}
            for p in self.plan.fields
        ]


@dataclass(slots=True)
class _Loaded:
    rows: int
    read: Read  # what was read of the lake (columns, ts range, keys)
    versions: dict[str, int | None] = field(default_factory=dict)  # table rel -> version
    objected: int = 0  # rows left out: their data subject objected to the purpose


def _deny(
    audit: AccessRecorder, base: dict[str, Any], reason: str, message: str
) -> AccessDeniedError:
    audit.append("access_denied", {**base, "outcome": "denied", "reason": reason})
    return AccessDeniedError(
        message, principal=str(base["principal"]), purpose=str(base["purpose"]), reason=reason
    )


def connect(
    store: Store,
    registry: ContractRegistry,
    keys: KeyStore,
    audit: AccessRecorder,
    *,
    principal: str,
    purpose: str,
    tenant: str | None = None,
    token: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    versions: Mapping[str, int | None] | None = None,
) -> Session:
    """Open a governed session for ``principal`` and its one ``purpose`` (required: there
    is no default purpose). ``tenant`` narrows it to one of the principal's tenants;
    ``token`` is a service's; ``since``/``until`` bound the readings' ``ts`` (the window
    the lake is read for). ``versions`` pins the tables (table path -> version, None or
    absent: the table did not exist): the session reads the lake as it was when those
    versions were read (time travel; a report's verification). AccessDeniedError (after an
    access record) when the grants do not allow it."""
    base: dict[str, Any] = {
        "principal": principal,
        "purpose": purpose,
        "tenant_asked": tenant,
        "os_user": os_user(),
    }
    if purpose not in registry.vocabulary.purposes:
        audit.append("access_denied", {**base, "outcome": "denied", "reason": "unknown_purpose"})
        raise UnknownPurposeError(purpose, registry.vocabulary.purpose_ids)
    book = GrantBook(store, registry)
    grant = book.load().get(principal)
    if grant is None:
        raise _deny(audit, base, "no_grant", f"{principal!r} has no grant to read the lake")
    if grant.token is not None and (token is None or not grant.token.matches(token)):
        raise _deny(
            audit,
            base,
            "bad_token",
            f"{principal!r} is a service: give its token (--token-file)"
            if token is None
            else f"the token given for {principal!r} is not its token",
        )
    if purpose not in grant.purposes:
        raise _deny(
            audit,
            base,
            "purpose_not_granted",
            f"{principal!r} may not read for {purpose!r};"
            f" granted: {', '.join(sorted(grant.purposes))}",
        )
    granted = book.known_tenants() if grant.all_tenants else sorted(grant.tenants)
    if tenant is not None and tenant not in granted:
        raise _deny(
            audit, base, "tenant_not_granted", f"{principal!r} may not read tenant {tenant!r}"
        )
    tenants = [tenant] if tenant is not None else granted
    if since is not None and until is not None and since >= until:
        raise _deny(audit, base, "empty_window", "--from must be before --to")
    register = ObjectionRegister(store, registry, keys)
    now = datetime.now(UTC)
    objected = {t: register.active(t, purpose, now) for t in tenants}
    return Session(
        store,
        registry,
        keys,
        audit,
        grant,
        purpose,
        tenants,
        since,
        until,
        os_user=base["os_user"],
        objected=objected,
        versions=versions,
    )


class Session:
    """One principal, one purpose, a locked DuckDB connection over shaped views.

    ``sql(statement)`` runs a statement and returns its result as an Arrow table, after
    the access record is written. Views are made ready when a statement first names them
    (a session that reads one table does not read the others)."""

    def __init__(
        self,
        store: Store,
        registry: ContractRegistry,
        keys: KeyStore,
        audit: AccessRecorder,
        grant: Grant,
        purpose: str,
        tenants: list[str],
        since: datetime | None,
        until: datetime | None,
        *,
        os_user: str,
        objected: dict[str, dict[str, frozenset[str]]] | None = None,
        versions: Mapping[str, int | None] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.principal = grant.principal
        self.purpose = purpose
        self.tenants = list(tenants)
        self.branches = None if grant.branches is None else sorted(grant.branches)
        self.since, self.until = since, until
        self._store, self._keys, self._audit = store, keys, audit
        self._os_user = os_user
        self._kind = grant.kind
        self._objected = objected or {}  # tenant -> subject kind -> objected pseudonyms
        self.pinned = None if versions is None else dict(versions)  # time travel (connect)
        self.views = self._views(registry)
        self._loaded: dict[str, _Loaded] = {}
        self._con = duckdb.connect(config=dict(LOCKED_CONFIG))
        # the lake reader: a connection of its own, never the analyst's (which can reach
        # nothing but the shaped views); opened on the first read
        self._reader: Any = None
        self._parser = parser()
        self._closed = False
        self._record("session_open", {"outcome": "ok", "datasets": self._offered()})

    # -- what the session offers -----------------------------------------------------------

    def _views(self, registry: ContractRegistry) -> dict[str, View]:
        views: dict[str, View] = {}
        for contract in registry:
            plan = plan_for(contract, self.purpose, registry.vocabulary)
            if not plan.clear:
                continue  # the contract lists this purpose for none of its fields
            names = contract.field_names
            if self.branches is not None and _BRANCH_COLUMN not in names:
                continue  # a branch-bound principal sees nothing that has no branch
            if _TENANT_COLUMN not in names:
                continue  # rows that cannot be tied to a tenant are not offered
            views[contract.dataset] = View(contract.dataset, contract, plan)
        return views

    def _offered(self) -> list[dict[str, str]]:
        return [{"dataset": v.dataset, "contract": v.contract.ref} for v in self.views.values()]

    def schema(self, dataset: str) -> pa.Schema:
        """The shaped schema of a view (what a statement sees), without reading the lake."""
        view = self.views[dataset]
        return apply_plan(
            view.plan, view.contract.arrow_schema().empty_table(), _NO_KEY, view.contract
        ).schema

    # -- statements ---------------------------------------------------------------------------

    def sql(self, statement: str) -> pa.Table:
        """Run ``statement`` (one or more SQL statements; the last one's result) on the
        shaped views; its result, once the access record is durable."""
        if self._closed:
            raise QueryError("the session is closed; open a new one")
        started = time.perf_counter()
        used = sorted(identifiers(statement) & set(self.views))
        reads = plan_reads(
            statement,
            {n: frozenset(self.views[n].plan.visible) for n in used},
            {n: frozenset(self.views[n].plan.clear) for n in used},
            self._parser,
        )
        fields: dict[str, Any] = {
            "sql_redacted": redact(statement),
            "sql_sha256": sql_sha256(statement),
        }
        try:
            for name in used:
                self._ready(name, reads.get(name, Read()))
            try:
                cursor = self._con.execute(statement)
            except duckdb.BinderException:
                # A column the parse did not see named (syntax pushdown does not know):
                # every column of the views, the same rows, once more.
                narrowed = [n for n in used if reads.get(n, Read()).columns is not None]
                if not narrowed:
                    raise
                for name in narrowed:
                    self._ready(name, replace(reads[name], columns=None))
                cursor = self._con.execute(statement)
            result = cursor.to_arrow_table() if self._con.description is not None else _EMPTY
        except Exception as exc:  # recorded whatever it is (the statement's, the lake read's)
            fields.update(self._used(used))
            self._record(
                "query",
                {
                    **fields,
                    "outcome": "error",
                    "error": type(exc).__name__,
                    "error_redacted": redact(str(exc)),
                    "rows": 0,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            if not isinstance(exc, duckdb.Error):
                raise
            raise QueryError(str(exc)) from None
        fields.update(self._used(used))
        self._record(
            "query",
            {
                **fields,
                "outcome": "ok",
                "rows": result.num_rows,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._con.close()
        if self._reader is not None:
            self._reader.close()
        self._parser.close()
        self._record("session_close", {"outcome": "ok"})

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sources(self, dataset: str) -> list[tuple[str, int | None, Contract]]:
        """The lake tables a view was read from: (table path, version, contract); the view
        is made ready first."""
        self._ready(dataset, Read())
        view = self.views[dataset]
        return [(rel, v, view.contract) for rel, v in self._loaded[dataset].versions.items()]

    def read_versions(self) -> dict[str, int | None]:
        """Every table the session's statements have read, at the version read (None: the
        table did not exist): what ``connect(versions=...)`` takes to read them again."""
        out: dict[str, int | None] = {}
        for loaded in self._loaded.values():
            out.update(loaded.versions)
        return dict(sorted(out.items()))

    def record(self, event: str, fields: Mapping[str, Any]) -> None:
        """Write an access record of this session (durable when this returns)."""
        self._record(event, fields)

    # -- the platform's side ------------------------------------------------------------------

    def _used(self, used: list[str]) -> dict[str, Any]:
        datasets = []
        for name in used:
            loaded = self._loaded.get(name)
            view = self.views[name]
            for rel, version in (loaded.versions if loaded else {}).items():
                datasets.append(
                    {
                        "dataset": name,
                        "table": rel,
                        "version": version,
                        "contract": view.contract.ref,
                        "objected_rows_left_out": loaded.objected if loaded else 0,
                        "read": loaded.read.describe() if loaded else None,
                    }
                )
        return {
            "datasets": datasets,
            "columns": [c for name in used for c in self.views[name].columns],
        }

    def _ready(self, name: str, read: Read) -> None:
        """Make the view hold at least what ``read`` asks for (read again when the rows or
        columns it holds do not cover it)."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            if loaded.read.covers(read):
                return
            read = loaded.read.union(read)  # what it held and what it needs now
        view = self.views[name]
        table, versions, objected = self._read(view, read)
        self._con.register(name, table)
        self._loaded[name] = _Loaded(table.num_rows, read, versions, objected)

    def _read(self, view: View, read: Read) -> tuple[pa.Table, dict[str, int | None], int]:
        """The view's rows: the principal's tenants and branches (and the window), less
        the rows of data subjects who objected to the purpose; only the columns the plan
        shows, each tenant's rows shaped with that tenant's key."""
        contract = view.contract
        wanted = [
            p.field
            for p in view.plan.fields
            if p.action is not Action.DROPPED and (read.columns is None or p.field in read.columns)
        ]
        subjects = {
            f.name
            for kinds in self._objected.values()
            for k in kinds
            if (f := contract.subject_field(k)) is not None
        }
        parts: list[pa.Table] = []
        versions: dict[str, int | None] = {}
        objected = 0
        rels: list[tuple[str, str | None]] = (
            [(clients_rel(), None)]
            if view.dataset == "clients"
            else [(table_rel(t, view.dataset), t) for t in self.tenants]
        )
        for rel, tenant, hot in _tiers(rels, view.dataset):
            exists, pinned = self._version(rel)
            if not exists or not table_exists(self._store, rel):
                if hot:  # an archive that does not exist (yet) is not a source
                    versions[rel] = None
                continue
            delta = open_table(self._store, rel, pinned)
            version = versions[rel] = int(delta.version())
            table_schema = pa.schema(delta.schema().to_arrow())
            present = set(table_schema.names)
            columns = [c for c in wanted if c in present]
            columns += sorted(c for c in subjects - set(columns) if c in present)
            if tenant is None and _TENANT_COLUMN not in columns:
                columns.append(_TENANT_COLUMN)  # a platform-wide table: rows split by tenant
            bounds = self._bounds(contract, tenant, read)
            if hot and tenant is not None:
                # the hot tier is opened before its archive (the order of _tiers): rows a
                # pass has archived but not yet deleted from hot are read from the archive
                archive = self._version(archive_rel(tenant, view.dataset))
                pending = _pending_cutoff(self._store, rel, delta, view.dataset, archive)
                if pending is not None:
                    bounds.append((contract.retention.basis, ">=", pending))
            # each bound runs in the scan's WHERE (which also prunes partitions and files)
            # when it renders exactly for its column's type; the rest filter the rows read
            where: list[Condition] = []
            left: list[tuple[str, str, Any]] = []
            for column, op, value in bounds:
                field = table_schema.field(column) if column in present else None
                text = None if field is None else sql_condition(column, op, value, field.type)
                if text is None:
                    left.append((column, op, value))
                else:
                    where.append(text)
            reading = columns + sorted({c for c, _, _ in left} & present - set(columns))
            rows = read_delta(
                self._lake(),
                self._store,
                rel,
                version,
                pa.schema([table_schema.field(c) for c in reading]),
                where=where,
            )
            if left:
                rows = rows.filter(_expression(left)).select(columns)
            for client in _tenants_of(rows, tenant):
                part = rows
                if tenant is None:  # the platform-wide clients table: one key per client
                    part = rows.filter(pc.field(_TENANT_COLUMN) == client)
                key = self._keys.get(client)
                part, removed = drop_objected(part, contract, key, self._objected.get(client, {}))
                objected += removed
                parts.append(apply_plan(view.plan, part, key, contract))
        if not parts:
            empty = (
                contract.arrow_schema()
                .empty_table()
                .select([c for c in wanted if c in contract.field_names])
            )
            return apply_plan(view.plan, empty, _NO_KEY, contract), versions, objected
        return pa.concat_tables(parts, promote_options="permissive"), versions, objected

    def _lake(self) -> Any:
        """The session's lake reader (``lake.duck``: delta and, on S3, httpfs loaded)."""
        if self._reader is None:
            self._reader = reader(self._store)
        return self._reader

    def _version(self, rel: str) -> tuple[bool, int | None]:
        """How to read ``rel``: (False, None) pinned as absent (the table did not exist when
        the versions were recorded); (True, None) its latest version; (True, v) version v."""
        if self.pinned is None:
            return True, None
        version = self.pinned.get(rel)
        return version is not None, version

    def _window(self, read: Read) -> tuple[datetime | None, datetime | None]:
        """The session's window narrowed by the statement's (``analytics.pushdown``)."""
        since = max((t for t in (self.since, read.since) if t is not None), default=None)
        until = min((t for t in (self.until, read.until) if t is not None), default=None)
        return since, until

    def _bounds(
        self, contract: Contract, tenant: str | None, read: Read
    ) -> list[tuple[str, str, Any]]:
        """The grant's rows (tenants, branches, window), then the statement's bounds, as
        (column, operator, value) conditions that all hold for a row the view shows."""
        names = contract.field_names
        allowed = [tenant] if tenant is not None else self.tenants
        bounds: list[tuple[str, str, Any]] = [(_TENANT_COLUMN, "in", allowed)]
        if self.branches is not None:
            bounds.append((_BRANCH_COLUMN, "in", self.branches))
        if _TIME_COLUMN in names:
            since, until = self._window(read)
            if since is not None:
                bounds.append((_TIME_COLUMN, ">=", since))
            if until is not None:
                bounds.append((_TIME_COLUMN, "<", until))
        for column, values in read.keys:
            if column in names:
                bounds.append((column, "in", sorted(values)))
        return bounds

    def _record(self, event: str, fields: Mapping[str, Any]) -> None:
        self._audit.append(
            event,
            {
                "session": self.id,
                "principal": self.principal,
                "principal_kind": self._kind,
                "os_user": self._os_user,
                "purpose": self.purpose,
                "tenants": self.tenants,
                "branches": self.branches,
                "window": [
                    None if self.since is None else self.since.isoformat(),
                    None if self.until is None else self.until.isoformat(),
                ],
                **fields,
            },
        )


def _pending_cutoff(
    store: Store,
    hot_rel: str,
    hot: Any,
    dataset: str,
    archive_version: tuple[bool, int | None] = (True, None),
) -> datetime | None:
    """The cut-off of a retention pass the archive holds and ``hot`` (opened first) has
    not deleted yet (a crash between the two commits); None: no such pass.
    ``archive_version``: how to read the archive (``Session._version``)."""
    tenant = hot_rel.split("/")[1]
    rel = archive_rel(tenant, dataset)
    present, version = archive_version
    if not present or not table_exists(store, rel):
        return None
    archive = open_table(store, rel, version)
    app_id = retention_source_txn(hot_rel)
    done = archive.transaction_version(app_id)
    deleted = hot.transaction_version(RETENTION_TXN)
    if done is None or (deleted is not None and deleted >= done):
        return None
    for entry in archive.history(limit=200):
        if entry.get("energylake.app_id") == app_id and entry.get("energylake.app_version") == str(
            done
        ):
            return datetime.fromisoformat(str(entry[RETENTION_BEFORE_KEY]))
    raise QueryError(
        f"{rel}: a retention pass over {hot_rel} is archived but not finished and its "
        "commit is no longer in the log; run `energylake retention apply --apply`"
    )


def _tiers(rels: list[tuple[str, str | None]], dataset: str) -> list[tuple[str, str | None, bool]]:
    """Each tenant's hot table, then its archive table (``lake.layout.archive_rel``): a view
    is hot UNION ALL archive, under the same grant, purpose and bounds. (rel, tenant, hot)."""
    out: list[tuple[str, str | None, bool]] = []
    for rel, tenant in rels:
        out.append((rel, tenant, True))
        if tenant is not None:
            out.append((archive_rel(tenant, dataset), tenant, False))
    return out


def _tenants_of(rows: pa.Table, tenant: str | None) -> list[str]:
    if tenant is not None:
        return [tenant] if rows.num_rows else []
    return sorted({str(v) for v in pc.unique(rows.column(_TENANT_COLUMN)).to_pylist() if v})


_EMPTY = pa.table({})
# Shapes tables with no row (nothing to pseudonymise): a random key, never a tenant's.
_NO_KEY = TenantKey("none", secrets.token_bytes(32))


def _expression(bounds: list[tuple[str, str, Any]]) -> pc.Expression:
    """``Session._bounds`` conditions (``in``, ``>=``, ``<``) as one pyarrow filter."""
    compare = {">=": operator.ge, "<": operator.lt}
    terms: list[pc.Expression] = []
    for column, op, value in bounds:
        field = pc.field(column)
        if op == "in":  # (pyarrow cannot type an empty value set)
            terms.append(field.isin(value) if value else pc.scalar(False))
        else:
            terms.append(compare[op](field, pa.scalar(value)))
    expression = terms[0]
    for term in terms[1:]:
        expression = expression & term
    return expression
