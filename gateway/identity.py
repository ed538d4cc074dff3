"""Who a device is: the gateway's view of the device registry.

The gateway authenticates devices without reaching into the lake: ``energylake devices
provision`` reads the registry's reference tables and writes an *identity book*, one JSON
file, next to the Mosquitto password file and ACL it writes from the same registry. The
gateway loads the book at start and reloads it when the file changes (so a revoked token
stops working without a restart).

The book holds no secret: HTTP tokens appear only as SHA-256 hex digests (the registry's
``http_token_sha256``). A token is 256 random bits, so a digest lookup is the check; there
is nothing to brute-force and no timing signal worth having.

File format (``version`` 1)::

    {"version": 1, "generated_at": "2026-11-25T07:00:00Z",
     "devices": [{"device_id": "...", "client_id": "...", "branch_id": "...",
                  "kind": "meter|dg|solar", "http_token_sha256": "<hex>|null",
                  "revoked": false}, ...]}

The authenticated identity written into a landing envelope is the ``device_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from contracts.errors import EXIT_CONFIG, EnergylakeError
from durable.files import atomic_write

__all__ = [
    "BOOK_VERSION",
    "DeviceIdentity",
    "IdentityBook",
    "IdentityError",
    "token_digest",
    "write_identity_book",
]

BOOK_VERSION = 1
_KINDS = frozenset({"meter", "dg", "solar"})
_HEX64 = frozenset("0123456789abcdef")


class IdentityError(EnergylakeError):
    """The identity book is missing, unreadable or malformed (a file to fix: exit code 2)."""

    exit_code: ClassVar[int] = EXIT_CONFIG


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """One device as the gateway knows it."""

    device_id: str
    client_id: str
    branch_id: str
    kind: str
    http_token_sha256: str | None = None
    revoked: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_digest(token: str) -> str:
    """The registry's digest of a clear bearer token (SHA-256, lowercase hex)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _device(raw: Any, where: str) -> DeviceIdentity:
    if not isinstance(raw, dict):
        raise IdentityError(f"{where}: expected an object, got {type(raw).__name__}")
    try:
        device = DeviceIdentity(
            device_id=str(raw["device_id"]),
            client_id=str(raw["client_id"]),
            branch_id=str(raw["branch_id"]),
            kind=str(raw["kind"]),
            http_token_sha256=raw.get("http_token_sha256"),
            revoked=bool(raw.get("revoked", False)),
        )
    except KeyError as exc:
        raise IdentityError(f"{where}: missing {exc.args[0]!r}") from exc
    if device.kind not in _KINDS:
        raise IdentityError(f"{where}: kind {device.kind!r} is not one of {sorted(_KINDS)}")
    digest = device.http_token_sha256
    if digest is not None and (
        not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX64
    ):
        raise IdentityError(f"{where}: http_token_sha256 is not 64 lowercase hex digits")
    return device


class IdentityBook:
    """Devices by id and by token digest. Immutable; load a new one to pick up changes."""

    __slots__ = ("_by_digest", "_by_id", "generated_at", "path")

    def __init__(
        self,
        devices: Iterable[DeviceIdentity],
        *,
        generated_at: str | None = None,
        path: Path | None = None,
    ) -> None:
        self._by_id: dict[str, DeviceIdentity] = {}
        self._by_digest: dict[str, DeviceIdentity] = {}
        for device in devices:
            if device.device_id in self._by_id:
                raise IdentityError(f"device {device.device_id!r} appears twice")
            self._by_id[device.device_id] = device
            if device.http_token_sha256 and not device.revoked:
                if device.http_token_sha256 in self._by_digest:
                    raise IdentityError(f"two devices share a token ({device.device_id!r})")
                self._by_digest[device.http_token_sha256] = device
        self.generated_at = generated_at
        self.path = path

    def __len__(self) -> int:
        return len(self._by_id)

    def devices(self) -> list[DeviceIdentity]:
        return list(self._by_id.values())

    def device(self, device_id: str) -> DeviceIdentity | None:
        """The device with this id, revoked or not; None when unknown."""
        return self._by_id.get(device_id)

    def authenticate(self, token: str) -> DeviceIdentity | None:
        """The live (not revoked) device whose token this is; None otherwise."""
        if not token:
            return None
        return self._by_digest.get(token_digest(token))

    @classmethod
    def load(cls, path: Path) -> IdentityBook:
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise IdentityError(
                f"no identity book at {path}: run `energylake devices provision` first"
            ) from exc
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot read identity book {path}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("version") != BOOK_VERSION:
            raise IdentityError(f"{path}: not an identity book of version {BOOK_VERSION}")
        devices = raw.get("devices")
        if not isinstance(devices, list):
            raise IdentityError(f"{path}: 'devices' must be a list")
        return cls(
            (_device(d, f"{path}: devices[{i}]") for i, d in enumerate(devices)),
            generated_at=raw.get("generated_at"),
            path=path,
        )


def write_identity_book(
    path: Path, devices: Iterable[DeviceIdentity | Mapping[str, Any]]
) -> IdentityBook:
    """Write the book atomically (temp file, fsync, rename) and return it as loaded."""
    items = [d if isinstance(d, DeviceIdentity) else _device(dict(d), "device") for d in devices]
    book = IdentityBook(items)  # validates: unique ids and tokens
    generated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "version": BOOK_VERSION,
        "generated_at": generated_at,
        "devices": [d.as_dict() for d in sorted(items, key=lambda d: d.device_id)],
    }
    atomic_write(path, json.dumps(body, indent=1).encode(), mode=0o600)
    return IdentityBook(book.devices(), generated_at=generated_at, path=path)
