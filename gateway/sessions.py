"""The gateway's MQTT sessions: one broker account and one bounded broker queue per tenant.

Mosquitto keeps one queue per session and drops what exceeds it (``max_queued_messages``).
With one gateway session for the whole fleet, a single device flooding while the gateway
was away filled that queue and the broker dropped every other tenant's messages. So the
gateway holds one persistent session per tenant, each its own broker account and queue:
a flood can only overflow the queue of the flooding device's own tenant.

Subscriptions are by *tenant*, never by device: a tenant's session subscribes each topic
pattern that carries the tenant (``emaas/v1/{client}/+/{device}/telemetry``) with the
client segment pinned (``emaas/v1/c-1/+/+/telemetry``), so a device provisioned later,
even while the gateway is away, is covered the moment the broker lets it in. The ACL
pins each device to its own tenant and device segments, so only the tenant's devices
can fill the tenant's queue. Patterns without a tenant segment (Tasmota's
``tele/{device}/SENSOR``) are taken by one *shared* session (the base account,
``energylake-gateway``), subscribed to the pattern's wildcard: those devices share one
queue.

``energylake devices provision`` writes the session book, ``gateway-mqtt.json`` (0600),
next to the identity book; the gateway reloads it when it changes. Format (``version``
3)::

    {"version": 3, "password": "<secret shared by the gateway's accounts>",
     "sessions": [{"username": "energylake-gateway", "scope": "shared"},
                  {"username": "energylake-gateway.c-1", "scope": "tenant",
                   "tenant": "c-1", "devices": ["em-...", ...]}, ...],
     "retired": [{"username": "energylake-gateway.c-9", "scope": "tenant",
                  "tenant": "c-9", "devices": [...]}, ...]}

``retired`` lists sessions that are no longer wanted but may still hold queued messages:
the gateway drains them (``gateway/mqtt.py``) and records them drained in its state file
(``SessionState``); provisioning removes a retired account only once it is recorded
drained. ``devices`` of a tenant session only says which per-device filters an older
book may have left at the broker (they are unsubscribed).

Older books are still read: version 1 (``{"username", "password"}``) is one session
taking every topic (scope ``all``); version 2 (per-tenant sessions subscribed per device)
is read with scope ``devices``, as it ran.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from contracts.errors import EXIT_CONFIG, EnergylakeError
from durable.files import atomic_write

__all__ = [
    "SESSION_BOOK_VERSION",
    "SESSION_STATE_FILE",
    "MqttSession",
    "Scope",
    "SessionBook",
    "SessionBookError",
    "SessionState",
    "plan_sessions",
    "read_session_book",
    "session_book_json",
    "session_filters",
]

log = logging.getLogger(__name__)

SESSION_BOOK_VERSION = 3
SESSION_STATE_FILE = "gateway-mqtt-state.json"  # next to the book; written by the gateway
Scope = Literal["all", "shared", "tenant", "devices"]
_SCOPES: tuple[str, ...] = ("all", "shared", "tenant", "devices")


class SessionBookError(EnergylakeError):
    """The gateway's session book (gateway-mqtt.json) is missing or malformed (exit code 2)."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class _Pattern(Protocol):
    """What ``session_filters`` needs of a topic pattern (``gateway.config.TopicPattern``)."""

    @property
    def pattern(self) -> str: ...

    @property
    def subscription(self) -> str: ...

    @property
    def client_index(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class MqttSession:
    """One gateway session: its broker account and what it subscribes to.

    ``scope``: ``tenant`` (the tenant's topics), ``shared`` (the topics without a tenant
    segment), ``all`` (every topic: a version 1 book), ``devices`` (its devices' topics,
    one filter each: a version 2 book).
    """

    username: str
    tenant: str | None = None
    devices: tuple[str, ...] | None = None
    scope: Scope = "all"


@dataclass(frozen=True, slots=True)
class SessionBook:
    password: str
    sessions: tuple[MqttSession, ...]
    retired: tuple[MqttSession, ...] = ()

    def session_of(self, device_id: str, client_id: str | None = None) -> MqttSession | None:
        """The session taking the canonical topics of a device (of tenant ``client_id``)."""
        for session in self.sessions:
            if session.scope == "all":
                return session
            if session.scope == "tenant" and client_id is not None:
                if session.tenant == client_id:
                    return session
            elif session.devices is not None and device_id in session.devices:
                return session
        return None


def session_filters(session: MqttSession, patterns: Sequence[_Pattern]) -> frozenset[str]:
    """The topic filters ``session`` subscribes to, for the gateway's topic patterns."""
    if session.scope == "all":
        return frozenset(p.subscription for p in patterns)
    if session.scope == "shared":
        return frozenset(p.subscription for p in patterns if p.client_index is None)
    if session.scope == "tenant":
        out = set()
        for p in patterns:
            if p.client_index is not None and session.tenant:
                parts = p.subscription.split("/")
                parts[p.client_index] = session.tenant
                out.add("/".join(parts))
        return frozenset(out)
    return frozenset(
        p.pattern.replace("{client}", "+").replace("{device}", d)
        for d in session.devices or ()
        for p in patterns
    )


def plan_sessions(
    devices: Iterable[tuple[str, str]],
    base_user: str,
    *,
    previous: SessionBook | None = None,
    drained: Iterable[str] = (),
) -> tuple[tuple[MqttSession, ...], tuple[MqttSession, ...]]:
    """``(sessions, retired)`` for ``(device_id, client_id)`` pairs: the shared session
    (``base_user``) and one per tenant (``base_user.<client_id>``), sorted; and the
    sessions of ``previous`` (and its retired ones) no longer wanted, unless ``drained``."""
    tenants: dict[str, list[str]] = {}
    for device_id, client_id in devices:
        tenants.setdefault(client_id, []).append(device_id)
    sessions = [MqttSession(base_user, None, None, "shared")]
    sessions += [
        MqttSession(f"{base_user}.{tenant}", tenant, tuple(sorted(members)), "tenant")
        for tenant, members in sorted(tenants.items())
    ]
    wanted = {s.username for s in sessions}
    gone = set(drained)
    retired: dict[str, MqttSession] = {}
    if previous is not None:
        for old in (*previous.retired, *previous.sessions):
            if old.username not in wanted and old.username not in gone:
                retired.setdefault(old.username, old)
    return tuple(sessions), tuple(retired[name] for name in sorted(retired))


def _entry(session: MqttSession) -> dict[str, Any]:
    entry: dict[str, Any] = {"username": session.username, "scope": session.scope}
    if session.tenant is not None:
        entry["tenant"] = session.tenant
    if session.devices is not None:
        entry["devices"] = list(session.devices)
    return entry


def session_book_json(book: SessionBook) -> bytes:
    """The file's bytes (deterministic: provisioning rewrites it only when it changes)."""
    body = {
        "version": SESSION_BOOK_VERSION,
        "password": book.password,
        "sessions": [_entry(s) for s in book.sessions],
        "retired": [_entry(s) for s in book.retired],
    }
    return (json.dumps(body, indent=1) + "\n").encode()


def _text(raw: Mapping[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise SessionBookError(f"{path}: {key!r} must be a non-empty string")
    return value


def _session(item: Any, where: str, path: Path, version: int) -> MqttSession:
    if not isinstance(item, dict):
        raise SessionBookError(f"{path}: {where} is not an object")
    username = _text(item, "username", path)
    devices = item.get("devices")
    scope = item.get("scope", "devices" if version == 2 else None)
    if scope not in _SCOPES:
        raise SessionBookError(f"{path}: {where}.scope must be one of {', '.join(_SCOPES)}")
    if devices is not None and (
        not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices)
    ):
        raise SessionBookError(f"{path}: {where}.devices must list device ids")
    if scope == "devices" and devices is None:
        raise SessionBookError(f"{path}: {where}.devices must list device ids")
    tenant = item.get("tenant")
    if scope == "tenant" and (not isinstance(tenant, str) or not tenant):
        raise SessionBookError(f"{path}: {where}.tenant must name the tenant")
    return MqttSession(
        username,
        str(tenant) if tenant else None,
        tuple(sorted(devices)) if devices is not None else None,
        scope,
    )


def read_session_book(path: Path) -> SessionBook:
    """The session book at ``path`` (version 3, 2 or 1). Errors name the file and never
    echo the password."""
    try:
        raw = json.loads(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise SessionBookError(
            f"no gateway MQTT accounts at {path}: run `energylake devices provision`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SessionBookError(f"cannot read gateway MQTT accounts {path}: not JSON") from exc
    if not isinstance(raw, dict):
        raise SessionBookError(f"{path}: expected a JSON object")
    password = _text(raw, "password", path)
    version = raw.get("version", 1)
    if version == 1 and "sessions" not in raw:
        return SessionBook(password, (MqttSession(_text(raw, "username", path)),))
    if version not in (2, SESSION_BOOK_VERSION) or not isinstance(raw.get("sessions"), list):
        raise SessionBookError(
            f"{path}: not a session book of version {SESSION_BOOK_VERSION}; "
            "run `energylake devices provision` again"
        )
    retired_raw = raw.get("retired", [])
    if not isinstance(retired_raw, list):
        raise SessionBookError(f"{path}: 'retired' must be a list")
    sessions = [
        _session(item, f"sessions[{n}]", path, version) for n, item in enumerate(raw["sessions"])
    ]
    retired = [_session(item, f"retired[{n}]", path, version) for n, item in enumerate(retired_raw)]
    seen: set[str] = set()
    for session in (*sessions, *retired):
        if session.username in seen:
            raise SessionBookError(f"{path}: session {session.username!r} appears twice")
        seen.add(session.username)
    return SessionBook(password, tuple(sessions), tuple(retired))


class SessionState:
    """What the gateway knows of its sessions at the broker, kept across restarts in a
    small JSON file (0600, written atomically): the topic filters each session's broker
    session holds (recorded on SUBACK and UNSUBACK only), and the retired sessions that
    drained. Thread-safe (paho's threads of every session write it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._filters: dict[str, frozenset[str]] = {}
        self._drained: set[str] = set()
        if path is not None:
            try:
                raw = json.loads(path.read_bytes())
                self._filters = {
                    str(k): frozenset(str(f) for f in v) for k, v in raw["filters"].items()
                }
                self._drained = {str(u) for u in raw["drained"]}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("MQTT session state %s unreadable (%s): starting afresh", path, exc)

    def filters(self, username: str) -> frozenset[str] | None:
        """The filters the broker session holds; None when not known (never recorded)."""
        with self._lock:
            return self._filters.get(username)

    def held(self) -> frozenset[str]:
        """Every filter some session's broker session holds."""
        with self._lock:
            return frozenset(f for filters in self._filters.values() for f in filters)

    def drained(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._drained)

    def update(
        self,
        username: str,
        *,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        reset: bool = False,
    ) -> None:
        """Record filters the broker granted (``added``) or dropped (``removed``);
        ``reset``: the broker has no session (it holds no filter)."""
        with self._lock:
            have = set() if reset else set(self._filters.get(username, ()))
            have |= set(added)
            have -= set(removed)
            self._filters[username] = frozenset(have)
            self._save()

    def mark_drained(self, username: str) -> None:
        with self._lock:
            self._drained.add(username)
            self._filters.pop(username, None)
            self._save()

    def revive(self, usernames: Iterable[str]) -> None:
        """Sessions in use again (a tenant provisioned anew) are not drained."""
        with self._lock:
            back = self._drained & set(usernames)
            if back:
                self._drained -= back
                self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        body = {
            "filters": {k: sorted(v) for k, v in sorted(self._filters.items())},
            "drained": sorted(self._drained),
        }
        try:
            atomic_write(self.path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o600)
        except OSError as exc:
            log.warning("MQTT session state not saved to %s: %s", self.path, exc)
