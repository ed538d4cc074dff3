"""Per-tenant secret keys for keyed pseudonymisation (HMAC-SHA256).

A key is 32 random bytes in ``<keys_dir>/<tenant>.key`` (mode 0600), made on first use.
Destroying a tenant's key makes every pseudonym of that tenant unlinkable (crypto-shredding).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from contracts import PolicyError, TenantKey
from durable.files import fsync_dir, written_temp

__all__ = ["KeyStore"]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")


class KeyStore:
    """Keys on local disk, one file per tenant."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def existing(self, tenant: str) -> TenantKey | None:
        """The tenant's key if one was ever made (None: nothing of the tenant was ever
        pseudonymised), never creating it."""
        if not _TENANT.match(tenant):
            raise PolicyError(f"invalid tenant id {tenant!r}")
        path = self.directory / f"{tenant}.key"
        return TenantKey(tenant=tenant, secret=path.read_bytes()) if path.is_file() else None

    def get(self, tenant: str) -> TenantKey:
        """The tenant's key, created (atomically, 0600) if it does not exist yet."""
        if not _TENANT.match(tenant):
            raise PolicyError(f"invalid tenant id {tenant!r}")
        path = self.directory / f"{tenant}.key"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = secrets.token_bytes(32)
            with written_temp(path, key, mode=0o600) as tmp, contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # fails if another process won the race: keep theirs
            fsync_dir(self.directory)  # the new name (or the unlink) survives a power loss
        secret = path.read_bytes()
        return TenantKey(tenant=tenant, secret=secret)
