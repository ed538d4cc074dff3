"""Audit records: one JSON object per line under ``<audit_dir>/YYYY-MM-DD.jsonl`` (UTC day).

Security events at the edge (a bad token, a device posting for another device or branch)
are appended and flushed at once, so an operator or the lineage tools can read them while
the gateway runs.

With ``repeat_window_s`` > 0 (the gateway's log) the volume is bounded so a flood cannot
fill the disk, whatever the number of client addresses:

- repeats are folded: the first event of a kind (same event, device, client, branch and
  address group: the IPv4 address or the IPv6 /64, as ``address_group``
  groups them for rate limiting) is written at once with ``"count": 1`` and the real
  ``remote``; further ones within the window are only counted, and when the window ends
  (``flush_due()``, called on a timer, or ``close()``) one record says how many there were
  (``"count": n``, ``"first_ts"``, ``"last_ts"``, the last ``detail`` and ``remote``, the
  ``"address_group"`` and how many distinct ``"addresses"`` it held);
- at most ``max_first_records`` first records are written per window (all kinds
  together); past that budget new kinds are only counted, and when the window ends one
  ``audit_summary`` record says "N events from M addresses" with the count per kind.

The fact that something happened is never lost; only repeats are folded, and a window
writes at most ``2 * max_first_records + 1`` records.

Every record goes through the folder's hash chain (``audit.chain``: ``seq``, ``prev``,
anchors; any number of processes may append to one folder). Two modes:

- lenient (the default; the gateway, the pipeline): an I/O error is logged, never raised,
  so a full disk does not stop ingest; records are flushed to the OS, not fsynced (the
  anchors are);
- ``fail_closed=True`` (governed access): every record is fsynced before ``append`` or
  ``record`` returns, and a record that cannot be made durable raises ``AuditWriteError``,
  so the caller refuses to hand out what the record is about.

``append(event, fields)`` writes a structured record (the access layer's); ``record(...)``
the edge events. Both carry ``ts``, ``component`` and ``event``.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.chain import ANCHOR_EVERY_RECORDS, ANCHOR_INTERVAL_S, ChainWriter
from audit.chain import stamp as _stamp
from audit.errors import AuditWriteError

__all__ = ["AuditLog", "address_group"]

log = logging.getLogger(__name__)

_Key = tuple[str, str | None, str | None, str | None, str | None]  # the last: address group
_GROUP_ADDRESSES = 256  # distinct addresses counted per folded kind
_SUMMARY_ADDRESSES = 10_000  # distinct addresses counted in a window's summary
_SUMMARY_KINDS = 64  # event names counted in a summary (the code has a handful)
_RESERVED = frozenset({"ts", "component", "event", "seq", "prev"})  # the log's own fields


def address_group(remote: str | None) -> str:
    """The unit a failed-authentication budget is kept for: the IPv4 address, or the
    IPv6 /64 (one host may hold a whole /64). An IPv4-mapped IPv6 address
    (``::ffff:a.b.c.d``, how a dual-stack socket shows an IPv4 client) is its IPv4 address:
    as a /64 every IPv4 client would share ``::/64``."""
    if remote is None:
        return "unknown"
    if ":" not in remote:
        return remote
    try:
        address = ipaddress.IPv6Address(remote)
    except ValueError:
        return remote
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@dataclass(slots=True)
class _Repeats:
    until: float  # monotonic end of the window
    count: int
    first: datetime
    last: datetime
    detail: str
    remote: str | None
    addresses: set[str]


@dataclass(slots=True)
class _Summary:
    """What went past the budget of first records in one window: only counted."""

    count: int
    first: datetime
    last: datetime
    addresses: set[str]
    kinds: dict[str, int]

    def add(self, event: str, remote: str | None, now: datetime) -> None:
        self.count += 1
        self.last = now
        if remote is not None and len(self.addresses) < _SUMMARY_ADDRESSES:
            self.addresses.add(remote)
        if event in self.kinds or len(self.kinds) < _SUMMARY_KINDS:
            self.kinds[event] = self.kinds.get(event, 0) + 1
        else:
            self.kinds["other"] = self.kinds.get("other", 0) + 1


class AuditLog:
    """Appends audit events for one component to its folder's chain; thread-safe; never
    raises on I/O errors unless ``fail_closed``."""

    def __init__(
        self,
        folder: Path,
        component: str = "gateway",
        *,
        repeat_window_s: float = 0.0,
        max_kinds: int = 10_000,
        max_first_records: int = 100,
        fail_closed: bool = False,
        anchor_dir: Path | None = None,
        anchor_every_records: int = ANCHOR_EVERY_RECORDS,
        anchor_interval_s: float = ANCHOR_INTERVAL_S,
    ) -> None:
        self._folder = Path(folder)
        self._component = component
        self._fail_closed = fail_closed
        self._chain = ChainWriter(
            self._folder,
            component=component,
            anchor_dir=anchor_dir,
            fsync=fail_closed,
            anchor_every_records=anchor_every_records,
            anchor_interval_s=anchor_interval_s,
        )
        self._window_s = repeat_window_s
        self._max_kinds = max_kinds
        self._max_first = max_first_records
        self._budget_until = 0.0  # monotonic end of the current budget window
        self._firsts = 0  # first records written in it
        self._summary: _Summary | None = None
        self._lock = threading.Lock()
        self._repeats: dict[_Key, _Repeats] = {}

    def record(
        self,
        event: str,
        *,
        device_id: str | None = None,
        client_id: str | None = None,
        branch_id: str | None = None,
        remote: str | None = None,
        detail: str = "",
        actor: str | None = None,
    ) -> None:
        """Append one event. ``actor``: the person or service that acted (an operator's
        decision); the audit log is the one place that names them."""
        now = datetime.now(UTC)
        fields = self._fields(now, event, device_id, client_id, branch_id, remote, detail)
        if actor is not None:
            fields["actor"] = actor
        with self._lock:
            if self._window_s > 0 and not self._fold(event, fields, now):
                return
            self._write(fields)

    def append(self, event: str, fields: Mapping[str, Any]) -> tuple[int, str] | None:
        """Append one structured record: ``fields`` (JSON values: str, int, float, bool,
        None, lists and dicts of them) after ``ts``, ``component`` and ``event``. Returns
        the record's (seq, SHA-256); ``None`` when a lenient log could not write it. Never
        folded: each call is one record."""
        reserved = _RESERVED & fields.keys()
        if reserved:
            raise AuditWriteError(
                f"audit fields {sorted(reserved)} are the log's own; name them otherwise",
                folder=self._folder,
            )
        record = {"ts": _stamp(datetime.now(UTC)), "component": self._component, "event": event}
        record.update(fields)
        with self._lock:
            return self._write(record)

    def _fields(
        self,
        now: datetime,
        event: str,
        device_id: str | None,
        client_id: str | None,
        branch_id: str | None,
        remote: str | None,
        detail: str,
    ) -> dict[str, Any]:
        """The fields every record starts with, in the log's order."""
        return {
            "ts": _stamp(now),
            "component": self._component,
            "event": event,
            "device_id": device_id,
            "client_id": client_id,
            "branch_id": branch_id,
            "remote": remote,
            "detail": detail,
        }

    def flush_due(self) -> None:
        """Write the counts of repeats whose window has ended (a timer calls this)."""
        with self._lock:
            clock = time.monotonic()
            self._flush(clock)
            if clock >= self._budget_until:
                self._write_summary()
            self._guard("anchor", self._chain.anchor_if_due)

    def close(self) -> None:
        """Write what is held, anchor the head, close the files."""
        with self._lock:
            self._flush(None)
            self._write_summary()
            self._guard("anchor at close", self._chain.close)

    # -- under the lock -------------------------------------------------------------------
    def _fold(self, event: str, fields: dict[str, Any], now: datetime) -> bool:
        """Count the event; True if it is to be written now as a first record."""
        remote: str | None = fields["remote"]
        group = None if remote is None else address_group(remote)
        key = (event, fields["device_id"], fields["client_id"], fields["branch_id"], group)
        clock = time.monotonic()
        seen = self._repeats.get(key)
        if seen is not None and clock < seen.until:
            if seen.count == 0:
                seen.first = now
            seen.count += 1
            seen.last = now
            seen.detail = fields["detail"]
            seen.remote = remote
            if remote is not None and len(seen.addresses) < _GROUP_ADDRESSES:
                seen.addresses.add(remote)
            return False
        if seen is not None:
            self._write_repeats(key, self._repeats.pop(key))
        if clock >= self._budget_until:
            self._write_summary()
            self._budget_until = clock + self._window_s
            self._firsts = 0
        if self._firsts >= self._max_first:
            if self._summary is None:
                self._summary = _Summary(0, now, now, set(), {})
            self._summary.add(event, remote, now)
            return False
        self._firsts += 1
        if len(self._repeats) >= self._max_kinds:
            self._flush(None)
        seen_at = {remote} if remote is not None else set()
        self._repeats[key] = _Repeats(
            clock + self._window_s, 0, now, now, fields["detail"], remote, seen_at
        )
        fields["count"] = 1
        return True

    def _flush(self, clock: float | None) -> None:
        for key, seen in list(self._repeats.items()):
            if clock is None or clock >= seen.until:
                del self._repeats[key]
                self._write_repeats(key, seen)

    def _write_repeats(self, key: _Key, seen: _Repeats) -> None:
        if seen.count == 0:
            return
        now = datetime.now(UTC)
        event, device_id, client_id, branch_id, group = key
        detail = f"repeated after the first record; the last: {seen.detail}"
        fields = self._fields(now, event, device_id, client_id, branch_id, seen.remote, detail)
        fields.update(count=seen.count, first_ts=_stamp(seen.first), last_ts=_stamp(seen.last))
        if group is not None:
            fields["address_group"] = group
            fields["addresses"] = len(seen.addresses)
        self._write(fields)

    def _write_summary(self) -> None:
        summary, self._summary = self._summary, None
        if summary is None:
            return
        now = datetime.now(UTC)
        many = len(summary.addresses)
        counted = f"at least {many}" if many >= _SUMMARY_ADDRESSES else str(many)
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.kinds.items()))
        self._write(
            {
                "ts": _stamp(now),
                "component": self._component,
                "event": "audit_summary",
                "device_id": None,
                "client_id": None,
                "branch_id": None,
                "remote": None,
                "detail": (
                    f"{summary.count} events from {counted} addresses, kinds {kinds}; over "
                    f"the budget of {self._max_first} first records per "
                    f"{self._window_s:g} s, only counted"
                ),
                "count": summary.count,
                "addresses": many,
                "kinds": summary.kinds,
                "first_ts": _stamp(summary.first),
                "last_ts": _stamp(summary.last),
            },
        )

    def _write(self, fields: dict[str, Any]) -> tuple[int, str] | None:
        try:
            return self._chain.append(fields)
        except (OSError, TypeError) as exc:  # TypeError: a value that is not JSON
            if self._fail_closed:
                raise AuditWriteError(
                    f"audit record {fields.get('event')} could not be made durable in "
                    f"{self._folder}: {exc}; nothing it records may be handed out until the "
                    "audit log can be written (check the disk, its space and permissions)",
                    folder=self._folder,
                ) from exc
            log.error("audit record %s could not be written: %s", fields.get("event"), exc)
            return None

    def _guard(self, what: str, step: Any) -> None:
        try:
            step()
        except OSError as exc:
            if self._fail_closed:
                raise AuditWriteError(
                    f"audit {what} in {self._folder} failed: {exc}; check the disk and the "
                    "anchor folder (audit_anchor_dir)",
                    folder=self._folder,
                ) from exc
            log.error("audit %s in %s failed: %s", what, self._folder, exc)
