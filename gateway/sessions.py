"""The gateway's MQTT sessions: one broker account and one bounded broker queue per tenant.

Mosquitto keeps one queue per session and drops what exceeds it (``max_queued_messages``).
With one gateway session for the whole fleet, a single device flooding while the gateway
was away filled that queue and the broker dropped every other tenant's messages. So the
gateway holds one persistent session per tenant (or per shard of a tenant's devices), each
its own broker account and its own queue: a flood can only overflow the queue of the
flooding device's own session.

A session subscribes to its devices' topics by the *device* segment (the one the ACL pins
to the publisher's account), never by the client or branch a topic claims: a device that
names another tenant in its topic still lands in its own tenant's session, and the
pipeline still records the claim (BRANCH_MISMATCH).

``energylake devices provision`` writes the session book, ``gateway-mqtt.json`` (0600),
next to the identity book; the gateway reloads it when it changes (new devices are
subscribed without a restart). Format (``version`` 2)::

    {"version": 2, "password": "<secret shared by the gateway's accounts>",
     "sessions": [{"username": "energylake-gateway.c-1", "tenant": "c-1",
                   "devices": ["em-...", ...]}, ...]}

A version 1 file (``{"username", "password"}``, one account for everything) is still read:
it gives one session subscribed to every device topic, as before sessions existed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import EnergylakeError

__all__ = [
    "SESSION_BOOK_VERSION",
    "MqttSession",
    "SessionBook",
    "SessionBookError",
    "assign_sessions",
    "read_session_book",
    "session_book_json",
]

SESSION_BOOK_VERSION = 2


class SessionBookError(EnergylakeError):
    """The gateway's session book (gateway-mqtt.json) is missing or malformed."""


@dataclass(frozen=True, slots=True)
class MqttSession:
    """One gateway session: its broker account and the devices whose topics it takes.

    ``devices`` None means every device (one wildcard subscription per topic pattern):
    the single session of a version 1 book.
    """

    username: str
    tenant: str | None = None
    devices: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SessionBook:
    password: str
    sessions: tuple[MqttSession, ...]

    def session_of(self, device_id: str) -> MqttSession | None:
        for session in self.sessions:
            if session.devices is None or device_id in session.devices:
                return session
        return None


def assign_sessions(
    devices: Iterable[tuple[str, str]], base_user: str, *, per_tenant: int = 1
) -> tuple[MqttSession, ...]:
    """Sessions for ``(device_id, client_id)`` pairs: one per tenant, or ``per_tenant``
    shards of a tenant's devices (a stable hash of the device id picks the shard; a shard
    with no device gets no session). Sorted, so the same fleet gives the same book."""
    if per_tenant < 1:
        raise ValueError(f"sessions per tenant must be at least 1, got {per_tenant}")
    shards: dict[tuple[str, int], list[str]] = {}
    for device_id, client_id in devices:
        shard = 0
        if per_tenant > 1:
            digest = hashlib.sha256(device_id.encode("utf-8")).digest()
            shard = int.from_bytes(digest[:8], "big") % per_tenant
        shards.setdefault((client_id, shard), []).append(device_id)
    sessions = []
    for (tenant, shard), members in sorted(shards.items()):
        name = f"{base_user}.{tenant}" if per_tenant == 1 else f"{base_user}.{tenant}.{shard}"
        sessions.append(MqttSession(name, tenant, tuple(sorted(members))))
    return tuple(sessions)


def session_book_json(book: SessionBook) -> bytes:
    """The file's bytes (deterministic: provisioning rewrites it only when it changes)."""
    body = {
        "version": SESSION_BOOK_VERSION,
        "password": book.password,
        "sessions": [
            {"username": s.username, "tenant": s.tenant, "devices": list(s.devices or ())}
            for s in book.sessions
        ],
    }
    return (json.dumps(body, indent=1) + "\n").encode()


def _text(raw: Mapping[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise SessionBookError(f"{path}: {key!r} must be a non-empty string")
    return value


def read_session_book(path: Path) -> SessionBook:
    """The session book at ``path`` (version 2, or version 1 read as one wildcard session).

    Errors name the file and never echo the password.
    """
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
    if raw.get("version", 1) == 1 and "sessions" not in raw:
        return SessionBook(password, (MqttSession(_text(raw, "username", path)),))
    if raw.get("version") != SESSION_BOOK_VERSION or not isinstance(raw.get("sessions"), list):
        raise SessionBookError(
            f"{path}: not a session book of version {SESSION_BOOK_VERSION}; "
            "run `energylake devices provision` again"
        )
    sessions = []
    seen: set[str] = set()
    for number, item in enumerate(raw["sessions"]):
        if not isinstance(item, dict):
            raise SessionBookError(f"{path}: sessions[{number}] is not an object")
        username = _text(item, "username", path)
        devices = item.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
            raise SessionBookError(f"{path}: sessions[{number}].devices must list device ids")
        if username in seen:
            raise SessionBookError(f"{path}: session {username!r} appears twice")
        seen.add(username)
        tenant = item.get("tenant")
        sessions.append(
            MqttSession(username, str(tenant) if tenant else None, tuple(sorted(devices)))
        )
    return SessionBook(password, tuple(sessions))
