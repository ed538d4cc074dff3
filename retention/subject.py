"""A data subject, as a subject request knows them: ids and identifiers, the byte forms to
search for, and the keyed hash that stands for them in audit records and receipts.

A request starts from one identifier (``--email``, ``--mobile``, ``--name``, or an id of a
kind of subject: ``--contact-id``, ``--technician-id``). The contracts say which fields
hold what: a field with ``customProperties subject`` holds the id of that kind of person, a
field with ``identifies`` an e-mail, mobile or name, and a ``freeText`` field may name
anybody. The find step widens the identifiers with the other identifiers of the rows that
matched (the same person's e-mail on their contact row, say): see ``retention.find``.

Comparison: e-mails and names case-insensitively (whitespace collapsed), mobiles by their
digits (``+91 98765-43210`` is ``+919876543210``). In free text and raw bytes, every
identifier is searched as a substring, case-insensitively, and a mobile also by its last
ten digits (how people write an Indian mobile), digits separated by spaces, dashes,
dots or brackets included.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from contracts import Contract, TenantKey
from contracts.policy import pseudonym

__all__ = ["ID_OPTIONS", "Matcher", "Subject", "normalise"]

ID_OPTIONS = ("email", "mobile", "name")
"""The identifier kinds a request can start from (vocabulary ``identifiers``)."""

_SPACES = re.compile(r"\s+")
_NOT_DIGIT = re.compile(r"[^0-9]")
_MIN_NEEDLE = 4  # shorter values are never searched as substrings (too many false hits)
_OBJECTION_DOMAIN = "objection:"


def normalise(kind: str, value: str) -> str:
    """The form a value is compared in: digits with '+' for a mobile, lower case otherwise."""
    if kind == "mobile":
        digits = _NOT_DIGIT.sub("", value)
        return f"+{digits}" if digits else ""
    return _SPACES.sub(" ", value.strip()).lower()


@dataclass(slots=True)
class Subject:
    """One person: ids per kind of subject, identifier values per kind, as found."""

    ids: dict[str, set[str]] = field(default_factory=dict)  # subject kind -> ids (exact)
    values: dict[str, set[str]] = field(default_factory=dict)  # identifier kind -> normalised
    stored: set[str] = field(default_factory=set)  # exact stored values (for pseudonyms)

    @classmethod
    def start(cls, kind: str, value: str) -> Subject:
        """The subject a request names: ``kind`` is an identifier kind or a subject kind."""
        subject = cls()
        subject.add(kind, value)
        return subject

    def add(self, kind: str, value: str) -> bool:
        """Add one identifier; True if it was new."""
        if kind in ID_OPTIONS:
            norm = normalise(kind, value)
            if not norm or norm in self.values.get(kind, set()):
                self.stored.add(value)
                return False
            self.values.setdefault(kind, set()).add(norm)
        else:
            if not value or value in self.ids.get(kind, set()):
                self.stored.add(value)
                return False
            self.ids.setdefault(kind, set()).add(value)
        self.stored.add(value)
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": {k: sorted(v) for k, v in self.ids.items()},
            "values": {k: sorted(v) for k, v in self.values.items()},
            "stored": sorted(self.stored),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Subject:
        return cls(
            ids={str(k): set(v) for k, v in raw.get("ids", {}).items()},
            values={str(k): set(v) for k, v in raw.get("values", {}).items()},
            stored=set(raw.get("stored", [])),
        )

    def merge(self, other: Subject) -> Subject:
        """This subject with ``other``'s identifiers added (a new object)."""
        merged = Subject.from_json(self.to_json())
        for kind, ids in other.ids.items():
            merged.ids.setdefault(kind, set()).update(ids)
        for kind, values in other.values.items():
            merged.values.setdefault(kind, set()).update(values)
        merged.stored |= other.stored
        return merged

    def matches(self, kind: str, value: str) -> bool:
        """Whether ``value`` of a field holding ``kind`` is one of this subject's."""
        if kind in ID_OPTIONS:
            return normalise(kind, value) in self.values.get(kind, set())
        return value in self.ids.get(kind, set())

    def size(self) -> int:
        return sum(map(len, self.ids.values())) + sum(map(len, self.values.values()))

    def ambiguous(self) -> list[str]:
        """Kinds of id with more than one value: the request may name several people."""
        return sorted(kind for kind, ids in self.ids.items() if len(ids) > 1)

    def texts(self) -> list[str]:
        """Every identifier as it is searched in free text (lower case)."""
        out: set[str] = set()
        for kind, values in self.values.items():
            for value in values:
                out.add(value.lower())
                if kind == "mobile" and len(value) > 10:
                    out.add(value[-10:])  # the national number, as people write it
                    out.add(value[1:])  # without the '+'
        for ids in self.ids.values():
            out.update(v.lower() for v in ids)
        out.update(v.lower() for v in self.stored)
        return sorted(t for t in out if len(t) >= _MIN_NEEDLE)

    def matcher(self, pseudonyms: Iterable[str] = ()) -> Matcher:
        """What finds this person in bytes and text (with ``pseudonyms``, those too)."""
        forms = {t for t in self.texts() if not t.lstrip("+").isdigit()}
        forms |= {p.lower() for p in pseudonyms}
        digits = {t.lstrip("+") for t in self.texts() if t.lstrip("+").isdigit()}
        return Matcher(forms, digits)

    def pseudonyms(self, contracts: Iterable[Contract], key: TenantKey) -> set[str]:
        """Every pseudonym the access layer or the objection register can make of this
        person under one tenant's key: each pseudonymised field that holds one of their
        identifiers, with the field's domain, over the exact stored values."""
        out: set[str] = set()
        for contract in contracts:
            for f in contract.fields:
                if f.protection is None or f.protection.method != "pseudonymise":
                    continue
                if f.subject is None and f.identifies is None:
                    continue
                domain = f.protection.domain or f.name
                for value in self.stored:
                    out.add(pseudonym(key, domain, value))
        for kind, ids in self.ids.items():
            for value in ids:
                out.add(pseudonym(key, _OBJECTION_DOMAIN + kind, value))
        return out

    def digest(self, key: bytes) -> str:
        """A keyed hash standing for the subject in audit records and receipts: stable for
        the identifiers the request started from, and meaningless without the key."""
        canon = "\x1e".join(
            f"{kind}\x1f{value}"
            for kind, values in sorted((*self.ids.items(), *self.values.items()))
            for value in sorted(values)
        )
        return "subj_" + hmac.new(key, canon.encode(), hashlib.sha256).hexdigest()[:32]


_SEPARATOR = r"[\s().-]?"


class Matcher:
    """Finds and overwrites a person's identifiers in bytes and text, in any case, and a
    mobile's digits with the separators people type (``+91 98123-45670``)."""

    def __init__(self, forms: Iterable[str], digits: Iterable[str] = ()) -> None:
        self.forms = tuple(sorted(set(forms), key=len, reverse=True))  # literal, lower case
        self.digits = tuple(sorted(set(digits), key=len, reverse=True))  # digit runs
        runs = [_SEPARATOR.join(d) for d in self.digits]
        alternatives = "|".join([*runs, *(re.escape(f) for f in self.forms)]) or "(?!)"
        self.text = re.compile(alternatives, re.IGNORECASE)
        # bytes are searched lower-cased (ASCII; the length stays), case-sensitively: five
        # times faster than an IGNORECASE pattern over megabytes
        self.binary = re.compile(alternatives.encode())

    @property
    def empty(self) -> bool:
        return not (self.forms or self.digits)

    def count(self, data: bytes) -> int:
        return 0 if self.empty else sum(1 for _ in self.binary.finditer(data.lower()))

    def found(self, data: bytes) -> bool:
        return not self.empty and self.binary.search(data.lower()) is not None

    def found_text(self, text: str) -> bool:
        return not self.empty and self.text.search(text) is not None

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """``data`` with every match overwritten by as many ``*``: the length stays, so
        offsets into a file stay valid. Returns the count replaced."""
        if self.empty:
            return data, 0
        out = bytearray(data)
        count = 0
        for match in self.binary.finditer(data.lower()):
            out[match.start() : match.end()] = b"*" * (match.end() - match.start())
            count += 1
        return bytes(out), count

    def redact_text(self, text: str) -> tuple[str, int]:
        """``redact`` on a string (characters, not bytes, are starred)."""
        if self.empty:
            return text, 0
        count = 0

        def star(match: re.Match[str]) -> str:
            nonlocal count
            count += 1
            return "*" * len(match.group(0))

        return self.text.sub(star, text), count
