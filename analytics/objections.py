"""The objection register: a data subject objects to a purpose (privacy policy, section 7),
and from then on no governed session for that purpose shows that subject's rows.

An objection names the tenant, the kind of data subject (the vocabulary's ``subjects``:
a technician, a contact), the subject's id, the purpose and the moment it takes effect.
The register keeps no id in clear: it keeps the subject's keyed pseudonym (HMAC-SHA256
with the tenant's key, a domain of its own, so it matches no pseudonym an analyst sees),
and a session compares it with the pseudonyms of the rows' subject ids. Every dataset
whose contract marks a field as that kind of subject (``customProperties.subject``) loses
the rows of that subject, whatever columns the purpose shows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from analytics.errors import GrantError
from analytics.grants import AccessRecorder, GrantBook
from analytics.revisions import Revision, Revisions
from contracts import Contract, ContractRegistry, TenantKey
from contracts.policy import pseudonym
from lake.keys import KeyStore
from lake.storage import Store

__all__ = [
    "OBJECTIONS_PREFIX",
    "Objection",
    "ObjectionRegister",
    "audit_token",
    "drop_objected",
]

OBJECTIONS_PREFIX = "_access/objections"
_DOMAIN = "objection:"


@dataclass(frozen=True, slots=True)
class Objection:
    tenant: str
    kind: str  # a kind of data subject (vocabulary ``subjects``)
    subject: str  # the subject's keyed pseudonym, never the id
    purpose: str
    since: str  # ISO time it takes effect
    recorded_at: str = ""
    recorded_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "kind": self.kind,
            "subject": self.subject,
            "purpose": self.purpose,
            "since": self.since,
            "recorded_at": self.recorded_at,
            "recorded_by": self.recorded_by,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Objection:
        return cls(**{k: str(raw[k]) for k in cls.__slots__})

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.kind, self.subject, self.purpose)


def audit_token(token: str) -> str:
    """What an access record says of the subject: a hash of the register's pseudonym. An
    erasure removes the pseudonym from the register (``retention.erase``); the chained
    access log, which cannot be rewritten, keeps only this hash of it (the fact of the
    objection under a hashed subject id, as it keeps the fact of an erasure)."""
    return "h:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _token(key: TenantKey, kind: str, subject_id: str) -> str:
    return pseudonym(key, _DOMAIN + kind, subject_id)


class ObjectionRegister:
    """The register of one lake, with the tenants' keys to pseudonymise subject ids."""

    def __init__(
        self,
        store: Store,
        registry: ContractRegistry,
        keys: KeyStore,
        audit: AccessRecorder | None = None,
    ) -> None:
        """``audit``: the access log; required to change the register, not to read it."""
        self._audit = audit
        self._registry = registry
        self._keys = keys
        self._book = GrantBook(store, registry)
        self._revisions = Revisions(store, OBJECTIONS_PREFIX, "objections")

    def load(self) -> list[Objection]:
        return [Objection.from_json(e) for e in self._revisions.latest().entries]

    def record(
        self,
        *,
        tenant: str,
        kind: str,
        subject_id: str,
        purpose: str,
        actor: str,
        since: datetime | None = None,
    ) -> Objection:
        """Register an objection (effective from ``since``, default now). Registering the
        same objection again keeps the earlier one."""
        self._check(tenant, kind, purpose)
        self._recorder()
        if not subject_id:
            raise GrantError("an objection names the subject's id", setting="--subject")
        now = datetime.now(UTC)
        made = Objection(
            tenant=tenant,
            kind=kind,
            subject=_token(self._keys.get(tenant), kind, subject_id),
            purpose=purpose,
            since=(since or now).astimezone(UTC).isoformat(),
            recorded_at=now.isoformat(timespec="seconds"),
            recorded_by=actor,
        )
        kept: list[Objection] = []

        def add(current: Revision) -> list[dict[str, Any]]:
            entries = [Objection.from_json(e) for e in current.entries]
            same = [o for o in entries if o.key == made.key]
            kept[:] = same or [made]
            return [o.to_json() for o in (entries if same else [*entries, made])]

        self._revisions.save(add, actor)
        self._recorder().append(
            "objection",
            {
                "actor": actor,
                **kept[0].to_json(),
                "subject": audit_token(kept[0].subject),
                "new": kept[0] is made,
            },
        )
        return kept[0]

    def withdraw(
        self, *, tenant: str, kind: str, subject_id: str, purpose: str, actor: str
    ) -> bool:
        """Remove an objection (the subject withdrew it); False when there was none."""
        self._check(tenant, kind, purpose)
        self._recorder()
        token = _token(self._keys.get(tenant), kind, subject_id)
        found: list[bool] = []

        def remove(current: Revision) -> list[dict[str, Any]]:
            entries = [Objection.from_json(e) for e in current.entries]
            left = [o for o in entries if o.key != (tenant, kind, token, purpose)]
            found[:] = [len(left) < len(entries)]
            return [o.to_json() for o in left]

        self._revisions.save(remove, actor)
        self._recorder().append(
            "objection_withdrawn",
            {
                "actor": actor,
                "tenant": tenant,
                "kind": kind,
                "subject": audit_token(token),
                "purpose": purpose,
                "found": found[0],
            },
        )
        return found[0]

    def _recorder(self) -> AccessRecorder:
        if self._audit is None:
            raise GrantError(
                "the objection register changes only with the access log open", setting="audit"
            )
        return self._audit

    def active(self, tenant: str, purpose: str, at: datetime) -> dict[str, frozenset[str]]:
        """The subjects (by kind, as pseudonyms) whose rows the purpose may not show now."""
        out: dict[str, set[str]] = {}
        for o in self.load():
            if (
                o.tenant == tenant
                and o.purpose == purpose
                and datetime.fromisoformat(o.since) <= at
            ):
                out.setdefault(o.kind, set()).add(o.subject)
        return {kind: frozenset(s) for kind, s in out.items()}

    def _check(self, tenant: str, kind: str, purpose: str) -> None:
        kinds = self._registry.vocabulary.subjects
        if kind not in kinds:
            raise GrantError(
                f"unknown kind of data subject {kind!r}; known: {', '.join(kinds)}",
                setting="--kind",
                value=kind,
            )
        purposes = self._registry.vocabulary.purpose_ids
        if purpose not in purposes:
            raise GrantError(
                f"unknown purpose {purpose!r}; the privacy policy's purposes are:"
                f" {', '.join(purposes)}",
                setting="--purpose",
                value=purpose,
            )
        known = self._book.known_tenants()
        if tenant not in known:
            raise GrantError(
                f"unknown tenant {tenant!r}; the lake's clients are: {', '.join(known)}",
                setting="--tenant",
                value=tenant,
            )


def drop_objected(
    rows: pa.Table, contract: Contract, key: TenantKey, objected: dict[str, frozenset[str]]
) -> tuple[pa.Table, int]:
    """``rows`` without those of the objected subjects (raw rows, before shaping); the
    number of rows removed. One HMAC per distinct subject id, never one per row."""
    removed = 0
    for kind, subjects in objected.items():
        field = contract.subject_field(kind)
        if field is None or field.name not in rows.column_names or not rows.num_rows:
            continue
        encoded = pc.dictionary_encode(rows.column(field.name)).combine_chunks()
        tokens = pa.array(
            [
                v is not None and _token(key, kind, str(v)) in subjects
                for v in encoded.dictionary.to_pylist()
            ],
            type=pa.bool_(),
        )
        hit = pc.fill_null(pc.take(tokens, encoded.indices), False)
        removed += int(pc.sum(hit).as_py() or 0)
        rows = rows.filter(pc.invert(hit))
    return rows, removed
