"""Grants: who may read the lake, for which tenants, branches and purposes.

A grant is data, kept in the lake (``_access/grants/<revision>.json``, whole revisions
written once each: ``analytics.revisions``). A principal is
a person or a service; it has one or more tenants (or ``*``, every tenant: the
platform's own staff), the purposes it may use, optionally a set of branches (then it
sees only those branches' rows, and no dataset that has no branch), and, for a service,
a token stored as a salted scrypt hash (the token itself is written once, to a file the
operator names, mode 0600).

Every name is checked when a grant is made: a purpose must be in the vocabulary, a
tenant in the lake's clients table, a branch in that tenant's branches table.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow.compute as pc

from analytics.errors import GrantError
from analytics.revisions import Revision, Revisions
from contracts import ContractRegistry
from durable.files import fsync_dir, written_temp
from lake.delta import read_table, table_exists
from lake.layout import clients_rel, table_rel
from lake.layout import tenants as lake_tenants
from lake.storage import Store

__all__ = [
    "ALL_TENANTS",
    "GRANTS_PREFIX",
    "AccessRecorder",
    "Grant",
    "GrantBook",
    "Grants",
    "TokenHash",
    "check_principal",
    "os_user",
]

ALL_TENANTS = "*"
GRANTS_PREFIX = "_access/grants"
_PRINCIPAL = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AccessRecorder(Protocol):
    """Where access records go (``audit.log.AuditLog`` in fail-closed mode): ``append``
    returns only once the record is durable, and raises when it cannot be."""

    def append(self, event: str, fields: Mapping[str, Any]) -> object: ...


@dataclass(frozen=True, slots=True)
class TokenHash:
    """A service token's salted scrypt hash; the token is never stored."""

    salt: str
    digest: str
    n: int = _SCRYPT["n"]
    r: int = _SCRYPT["r"]
    p: int = _SCRYPT["p"]

    @classmethod
    def of(cls, token: str) -> TokenHash:
        salt = secrets.token_bytes(16)
        return cls(salt.hex(), _scrypt(token, salt, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]))

    def matches(self, token: str) -> bool:
        digest = _scrypt(token, bytes.fromhex(self.salt), self.n, self.r, self.p)
        return hmac.compare_digest(digest, self.digest)


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=32).hex()


@dataclass(frozen=True, slots=True)
class Grant:
    """What one principal may read."""

    principal: str
    tenants: frozenset[str]  # {ALL_TENANTS} for every tenant
    purposes: frozenset[str]
    branches: frozenset[str] | None = None  # None: every branch of its tenants
    token: TokenHash | None = None  # a service's; None: a person
    granted_at: str = ""
    granted_by: str = ""

    @property
    def kind(self) -> str:
        return "service" if self.token is not None else "person"

    @property
    def all_tenants(self) -> bool:
        return ALL_TENANTS in self.tenants

    def describe(self) -> dict[str, Any]:
        """The grant without its token hash (what an access record says of it)."""
        return {
            "kind": self.kind,
            "tenants": sorted(self.tenants),
            "purposes": sorted(self.purposes),
            "branches": None if self.branches is None else sorted(self.branches),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "kind": self.kind,
            "tenants": sorted(self.tenants),
            "purposes": sorted(self.purposes),
            "branches": None if self.branches is None else sorted(self.branches),
            "token": None
            if self.token is None
            else {
                "scheme": "scrypt",
                "salt": self.token.salt,
                "digest": self.token.digest,
                "n": self.token.n,
                "r": self.token.r,
                "p": self.token.p,
            },
            "granted_at": self.granted_at,
            "granted_by": self.granted_by,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Grant:
        token = raw.get("token")
        return cls(
            principal=str(raw["principal"]),
            tenants=frozenset(raw["tenants"]),
            purposes=frozenset(raw["purposes"]),
            branches=None if raw.get("branches") is None else frozenset(raw["branches"]),
            token=None
            if token is None
            else TokenHash(token["salt"], token["digest"], token["n"], token["r"], token["p"]),
            granted_at=str(raw.get("granted_at", "")),
            granted_by=str(raw.get("granted_by", "")),
        )


@dataclass(frozen=True, slots=True)
class Grants:
    """One revision of every grant."""

    revision: int = 0
    grants: dict[str, Grant] = field(default_factory=dict)

    def get(self, principal: str) -> Grant | None:
        return self.grants.get(principal)


class GrantBook:
    """The grants of one lake: read, changed (validated), listed."""

    def __init__(
        self, store: Store, registry: ContractRegistry, audit: AccessRecorder | None = None
    ) -> None:
        """``audit``: the access log; required to change grants (each change is recorded
        there before the command returns), not to read them."""
        self._store = store
        self._registry = registry
        self._audit = audit
        self._revisions = Revisions(store, GRANTS_PREFIX, "grants")

    def _recorder(self) -> AccessRecorder:
        if self._audit is None:
            raise GrantError(
                "grants change only with the access log open (GrantBook(..., audit=...))",
                setting="audit",
            )
        return self._audit

    # -- reading --------------------------------------------------------------------------

    def load(self) -> Grants:
        """The latest revision (revision 0, no grant, when none was ever made)."""
        latest = self._revisions.latest()
        grants = {g["principal"]: Grant.from_json(g) for g in latest.entries}
        return Grants(revision=latest.number, grants=grants)

    # -- changing -------------------------------------------------------------------------

    def grant(
        self,
        principal: str,
        *,
        tenants: Iterable[str],
        purposes: Iterable[str],
        branches: Iterable[str] = (),
        token_file: Path | None = None,
        actor: str,
    ) -> Grant:
        """Add tenants, purposes and branches to a principal's grant (made if new). With
        ``token_file`` the principal is a service: a fresh token is written there (mode
        0600; an existing file is refused) and only its hash is kept."""
        check_principal(principal)
        audit = self._recorder()
        tenants, purposes, branches = set(tenants), set(purposes), set(branches)
        if not tenants or not purposes:
            raise GrantError(
                f"a grant to {principal!r} needs at least one --tenant and one --purpose",
                setting="--tenant" if not tenants else "--purpose",
            )
        self._check_purposes(purposes)
        self._check_tenants(tenants)
        if branches:
            if ALL_TENANTS in tenants:
                raise GrantError(
                    "branches narrow a grant to some branches of named tenants; "
                    "not with --tenant '*'",
                    setting="--branch",
                )
            self._check_branches(tenants, branches)
        token: str | None = None
        if token_file is not None:
            token = secrets.token_urlsafe(32)
            _write_token(token_file, token)
        token_hash = TokenHash.of(token) if token is not None else None

        def change(current: Grant | None) -> Grant:
            now = datetime.now(UTC).isoformat(timespec="seconds")
            if current is None:
                return Grant(
                    principal,
                    frozenset(tenants),
                    frozenset(purposes),
                    frozenset(branches) if branches else None,
                    token_hash,
                    now,
                    actor,
                )
            old_branches = current.branches
            if branches and old_branches is None and not current.all_tenants:
                raise GrantError(
                    f"{principal!r} sees every branch of {sorted(current.tenants)}; revoke"
                    " it first to narrow it to branches",
                    setting="--branch",
                )
            return replace(
                current,
                tenants=current.tenants | tenants,
                purposes=current.purposes | purposes,
                branches=None if old_branches is None else old_branches | branches,
                token=token_hash if token_hash is not None else current.token,
                granted_at=now,
                granted_by=actor,
            )

        made = self._save(principal, change, actor)
        assert made is not None  # a grant adds: it never removes the principal
        audit.append(
            "grant",
            {
                "actor": actor,
                "principal": principal,
                "added": {
                    "tenants": sorted(tenants),
                    "purposes": sorted(purposes),
                    "branches": sorted(branches),
                    "token": token_file is not None,
                },
                "grant": made.describe(),
            },
        )
        return made

    def revoke(
        self,
        principal: str,
        *,
        tenants: Iterable[str] = (),
        purposes: Iterable[str] = (),
        branches: Iterable[str] = (),
        actor: str,
    ) -> Grant | None:
        """Take tenants, purposes or branches away; with none named, the whole grant. The
        grant that remains (None: none)."""
        audit = self._recorder()
        tenants, purposes, branches = set(tenants), set(purposes), set(branches)

        def change(current: Grant | None) -> Grant | None:
            if current is None:
                raise GrantError(
                    f"{principal!r} has no grant", setting="PRINCIPAL", value=principal
                )
            if not (tenants or purposes or branches):
                return None
            for wanted, have, option in (
                (tenants, current.tenants, "--tenant"),
                (purposes, current.purposes, "--purpose"),
                (branches, current.branches or frozenset(), "--branch"),
            ):
                if wanted - have:
                    raise GrantError(
                        f"{principal!r} has no {option[2:]} {sorted(wanted - have)}",
                        setting=option,
                        value=sorted(wanted - have),
                    )
            left_tenants = current.tenants - tenants
            left_purposes = current.purposes - purposes
            if not left_tenants or not left_purposes:
                return None
            left_branches = None if current.branches is None else current.branches - branches
            if left_branches is not None and not left_branches:
                return None  # no branch left: nothing to see
            return replace(
                current,
                tenants=left_tenants,
                purposes=left_purposes,
                branches=left_branches,
                granted_at=datetime.now(UTC).isoformat(timespec="seconds"),
                granted_by=actor,
            )

        left = self._save(principal, change, actor)
        audit.append(
            "revoke",
            {
                "actor": actor,
                "principal": principal,
                "removed": {
                    "tenants": sorted(tenants),
                    "purposes": sorted(purposes),
                    "branches": sorted(branches),
                    "all": not (tenants or purposes or branches),
                },
                "grant": None if left is None else left.describe(),
            },
        )
        return left

    def _save(
        self, principal: str, change: Callable[[Grant | None], Grant | None], actor: str
    ) -> Grant | None:
        made: list[Grant | None] = []

        def apply(current: Revision) -> list[dict[str, Any]]:
            grants = {g["principal"]: Grant.from_json(g) for g in current.entries}
            changed = change(grants.get(principal))
            made[:] = [changed]
            if changed is None:
                grants.pop(principal, None)
            else:
                grants[principal] = changed
            return [grants[p].to_json() for p in sorted(grants)]

        self._revisions.save(apply, actor)
        return made[0]

    # -- validation -----------------------------------------------------------------------

    def known_tenants(self) -> list[str]:
        """The lake's clients (its clients table; the tenant folders when it has none)."""
        rel = clients_rel()
        if table_exists(self._store, rel):
            ids = read_table(self._store, rel, columns=["client_id"])["client_id"]
            return sorted({str(v) for v in ids.to_pylist() if v is not None})
        return lake_tenants(self._store)

    def branches_of(self, tenant: str) -> list[str]:
        rel = table_rel(tenant, "branches")
        if not table_exists(self._store, rel):
            return []
        rows = read_table(
            self._store, rel, columns=["branch_id"], filter=pc.field("client_id") == tenant
        )
        return sorted({str(v) for v in rows["branch_id"].to_pylist() if v is not None})

    def _check_purposes(self, purposes: set[str]) -> None:
        known = self._registry.vocabulary.purpose_ids
        unknown = sorted(purposes - set(known))
        if unknown:
            raise GrantError(
                f"unknown purpose {', '.join(unknown)}; the privacy policy's purposes are:"
                f" {', '.join(known)}",
                setting="--purpose",
                value=unknown,
            )

    def _check_tenants(self, tenants: set[str]) -> None:
        if ALL_TENANTS in tenants:
            if len(tenants) > 1:
                raise GrantError(
                    "--tenant '*' (every tenant) stands alone", setting="--tenant", value=tenants
                )
            return
        known = self.known_tenants()
        unknown = sorted(tenants - set(known))
        if unknown:
            raise GrantError(
                f"unknown tenant {', '.join(unknown)}; the lake's clients are:"
                f" {', '.join(known) or '(none: load the reference data first)'}",
                setting="--tenant",
                value=unknown,
            )

    def _check_branches(self, tenants: set[str], branches: set[str]) -> None:
        known = {b for t in tenants for b in self.branches_of(t)}
        unknown = sorted(branches - known)
        if unknown:
            raise GrantError(
                f"unknown branch {', '.join(unknown)} for tenant(s) {', '.join(sorted(tenants))}",
                setting="--branch",
                value=unknown,
            )


def os_user() -> str:
    """The operating system's user running this process (who acts, for the records)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry (some containers)
        return "unknown"


def check_principal(principal: str) -> str:
    if not _PRINCIPAL.match(principal):
        raise GrantError(
            f"principal {principal!r}: use 1-64 of a-z 0-9 . _ @ - (starting with a letter"
            " or digit)",
            setting="PRINCIPAL",
            value=principal,
        )
    return principal


def _write_token(path: Path, token: str) -> None:
    """The token, written once: a new file, mode 0600 (create-if-absent, as the tenant
    keys are made: an fsync'd temp file linked into place)."""
    try:
        with written_temp(path, (token + "\n").encode(), mode=0o600) as tmp:
            os.link(tmp, path)
    except FileExistsError as exc:
        raise GrantError(
            f"{path} exists; name a new file for the token (it is written once)",
            setting="--token-file",
            value=str(path),
        ) from exc
    except OSError as exc:
        raise GrantError(f"{path}: {exc.strerror}", setting="--token-file") from exc
    fsync_dir(path.parent)
