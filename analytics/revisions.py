"""A governance register kept in the lake as whole revisions (``<prefix>/<n>.json``), each
written once with put-if-absent: two operators changing it at once cannot lose a change
(the second finds revision *n* taken, reloads, and applies its change again). The grants
(``analytics.grants``) and the objection register (``analytics.objections``) use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from analytics.errors import GrantError
from lake.storage import Store

__all__ = ["Revision", "Revisions"]

_FORMAT = 1
_SAVE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision: its number (0: nothing was ever saved) and its entries."""

    number: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)


class Revisions:
    """The revisions of one register under ``prefix`` in the lake."""

    def __init__(self, store: Store, prefix: str, what: str) -> None:
        self._store = store
        self._prefix = prefix
        self._what = what  # "grants", "objections": names the register in errors

    def latest(self) -> Revision:
        numbers = sorted(
            int(name[:-5])
            for rel in self._store.list(self._prefix)
            if (name := rel.rsplit("/", 1)[-1]).endswith(".json") and name[:-5].isdigit()
        )
        if not numbers:
            return Revision()
        rel = self._rel(numbers[-1])
        data = self._store.get_bytes(rel)
        if data is None:  # pragma: no cover - listed a moment ago; revisions stay
            raise GrantError(f"{self._store.url(rel)} vanished", setting=self._what)
        raw = orjson.loads(data)
        if raw.get("format") != _FORMAT:
            raise GrantError(
                f"{self._store.url(rel)}: {self._what} format {raw.get('format')!r}; this"
                f" version of energylake reads {_FORMAT}: upgrade energylake",
                setting=self._what,
                value=raw.get("format"),
            )
        return Revision(int(raw["revision"]), list(raw["entries"]))

    def save(self, change: Callable[[Revision], list[dict[str, Any]]], actor: str) -> Revision:
        """Apply ``change`` to the latest revision and save the result as the next one."""
        for _ in range(_SAVE_ATTEMPTS):
            current = self.latest()
            entries = change(current)
            number = current.number + 1
            document = {
                "format": _FORMAT,
                "revision": number,
                "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "updated_by": actor,
                "entries": entries,
            }
            data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            if self._store.put_if_absent(self._rel(number), data):
                return Revision(number, entries)
        raise GrantError(  # pragma: no cover - eight operators at once
            f"the {self._what} kept changing under this command; run it again",
            setting=self._what,
        )

    def _rel(self, number: int) -> str:
        return f"{self._prefix}/{number:08d}.json"
