"""Per-tenant secret keys for keyed pseudonymisation (HMAC-SHA256).

A key is 32 random bytes in ``<keys_dir>/<tenant>.key`` (mode 0600), made on first use.
Destroying a tenant's key makes every pseudonym of that tenant unlinkable (crypto-shredding).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from contracts import PolicyError, TenantKey

__all__ = ["KeyStore"]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")


class KeyStore:
    """Keys on local disk, one file per tenant."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, tenant: str) -> TenantKey:
        """The tenant's key, created (atomically, 0600) if it does not exist yet."""
        if not _TENANT.match(tenant):
            raise PolicyError(f"invalid tenant id {tenant!r}")
        path = self.directory / f"{tenant}.key"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if another process won the race: keep theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        secret = path.read_bytes()
        return TenantKey(tenant=tenant, secret=secret)
