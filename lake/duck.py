"""DuckDB connections that can read the lake: the pinned duckdb with its delta (and, for S3,
httpfs) extension loaded from the installed ``duckdb-extension-*`` packages, offline.

This only opens the door; which tables a caller may see is the access layer's job.
"""

from __future__ import annotations

import importlib.resources
from typing import Any
from urllib.parse import urlsplit

import duckdb

from lake.errors import LakeError
from lake.storage import Store

__all__ = ["connect", "extension_path"]


def extension_path(name: str) -> str:
    """The extension file shipped by ``duckdb-extension-<name>`` for this DuckDB version."""
    try:
        root = importlib.resources.files(f"duckdb_extension_{name}")
    except ModuleNotFoundError as exc:
        raise LakeError(
            f"DuckDB extension package duckdb-extension-{name} is not installed"
        ) from exc
    path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise LakeError(f"no {name} extension for DuckDB {duckdb.__version__} in {root}")
    return str(path)


def _text(value: str) -> str:
    return value.replace("'", "''")


def connect(store: Store | None = None) -> Any:
    """An in-memory DuckDB connection with ``delta_scan`` available for ``store``."""
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    if store is not None and store.is_s3:
        con.execute(f"LOAD '{_text(extension_path('httpfs'))}'")
    con.execute(f"LOAD '{_text(extension_path('delta'))}'")
    settings = store.s3_settings if store is not None else None
    if settings is not None:
        endpoint = urlsplit(settings.endpoint or "")
        options = {
            "KEY_ID": settings.access_key_id or "",
            "SECRET": settings.secret_access_key or "",
            "REGION": settings.region,
        }
        if endpoint.netloc:
            options["ENDPOINT"] = endpoint.netloc
            options["URL_STYLE"] = "path"
        if settings.encryption.kms_key_id:
            # What DuckDB can ask for: a write through this door is SSE-KMS with the lake's
            # key. (It has no SSE-S3 request; the platform writes nothing through DuckDB.)
            options["KMS_KEY_ID"] = settings.encryption.kms_key_id
        text = ", ".join(f"{k} '{_text(v)}'" for k, v in options.items())
        use_ssl = "false" if endpoint.scheme == "http" else "true"
        con.execute(f"CREATE SECRET lake_s3 (TYPE s3, {text}, USE_SSL {use_ssl})")
    return con
