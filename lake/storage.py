"""Where the lake lives: a local directory or ``s3://bucket/prefix``, and byte operations on it.

A :class:`Store` is a root location. Everything else in ``lake`` addresses files by a
*relative* path (``tenants/acme/meter_readings/...``) inside a store, so the same code runs
on local disk and on S3.

Byte writes are atomic: locally a temp file in the same directory, fsync, ``os.replace``,
fsync of the directory; on S3 a single PUT (an object appears whole or not at all).
``put_if_absent`` is an atomic create: ``os.link`` locally, ``If-None-Match: *`` on S3.

S3 settings come the standard AWS way (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``); the same settings feed boto3, delta-rs (``storage_options``) and
pyarrow (``filesystem``). See docs/LAKE.md.

At rest: every object the platform writes to S3 asks for server-side encryption
(:class:`S3Encryption`; SSE-S3 ``AES256`` unless configured otherwise): boto3 puts and
uploads, and delta-rs (data files, commits, checkpoints, compaction) through
``storage_options``. The pyarrow filesystem is only read through.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from durable.files import (
    atomic_file,
    atomic_write,
    fsync_dir,
    install,
    is_temp,
    temp_sibling,
    written_temp,
)
from lake.errors import LayoutError, StorageConfigError, StorageError

__all__ = ["DEFAULT_REGION", "SSE_ALGORITHMS", "S3Encryption", "S3Settings", "Store"]

DEFAULT_REGION = "us-east-1"
SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
"""S3 server-side encryption: SSE-S3, SSE-KMS, dual-layer SSE-KMS."""
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Encryption:
    """The server-side encryption asked for on every object written to S3.

    ``algorithm``: one of :data:`SSE_ALGORITHMS`, or None to ask for nothing (the bucket's
    default encryption applies). ``kms_key_id`` (a key id, ARN or alias) only with the KMS
    algorithms; without it S3 uses the account's AWS-managed key.
    """

    algorithm: str | None = "AES256"
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm is not None and self.algorithm not in SSE_ALGORITHMS:
            raise StorageConfigError(
                f"S3 server-side encryption {self.algorithm!r} is not one of "
                f"{', '.join(SSE_ALGORITHMS)} (or none); set s3_sse to one of them",
                setting="s3_sse",
                value=self.algorithm,
            )
        if self.kms_key_id and not (self.algorithm or "").startswith("aws:kms"):
            raise StorageConfigError(
                f"a KMS key id is set but the S3 encryption is {self.algorithm or 'none'}; "
                "set it to aws:kms (or aws:kms:dsse), or unset the key id",
                setting="s3_sse_kms_key_id",
                value=self.kms_key_id,
            )

    def put_args(self) -> dict[str, str]:
        """Arguments of a boto3 ``put_object`` (and ``ExtraArgs`` of ``upload_file``)."""
        args: dict[str, str] = {}
        if self.algorithm:
            args["ServerSideEncryption"] = self.algorithm
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def object_store_options(self) -> dict[str, str]:
        """The same for delta-rs (object_store's S3 options)."""
        opts: dict[str, str] = {}
        if self.algorithm:
            opts["aws_server_side_encryption"] = self.algorithm
        if self.kms_key_id:
            opts["aws_sse_kms_key_id"] = self.kms_key_id
        return opts


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Endpoint, region and credentials for S3 (credentials None: the default AWS chain),
    and the server-side encryption of what is written there."""

    region: str = DEFAULT_REGION
    endpoint: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    encryption: S3Encryption = field(default_factory=S3Encryption)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """The settings of the environment, read the way the AWS SDKs read them."""
        env = os.environ if env is None else env
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        key = env.get("AWS_ACCESS_KEY_ID") or None
        secret = env.get("AWS_SECRET_ACCESS_KEY") or None
        if (key is None) != (secret is None):
            raise StorageConfigError(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
                setting="AWS_ACCESS_KEY_ID" if key is None else "AWS_SECRET_ACCESS_KEY",
            )
        return cls(
            region=region,
            endpoint=endpoint.rstrip("/") if endpoint else None,
            access_key_id=key,
            secret_access_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint) and str(self.endpoint).startswith("http://")


def _check_rel(rel: str, *, allow_empty: bool = False) -> str:
    """A relative path inside a store: '/'-separated, no '.', '..' or empty parts."""
    if rel == "" and allow_empty:
        return rel
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        raise LayoutError(f"not a relative store path: {rel!r}")
    parts = rel.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise LayoutError(f"not a relative store path: {rel!r}")
    return "/".join(parts)


class Store:
    """A root location of the lake: a local directory or ``s3://bucket/prefix``.

    Create with :meth:`from_uri`. Relative paths use '/' on every platform.
    """

    def __init__(
        self,
        uri: str,
        *,
        local_root: Path | None,
        bucket: str | None,
        prefix: str,
        s3: S3Settings | None,
    ) -> None:
        self.uri = uri
        self._root = local_root
        self._bucket = bucket
        self._prefix = prefix
        self._s3 = s3
        self._lock = threading.Lock()
        self._client: Any = None
        self._fs: pafs.FileSystem | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_uri(
        cls,
        uri: str | Path,
        *,
        s3: S3Settings | None = None,
        encryption: S3Encryption | None = None,
    ) -> Store:
        """A store for a local path (``/data/lake``, ``file:///data/lake``) or ``s3://b/prefix``.

        For S3, ``s3`` defaults to :meth:`S3Settings.from_env` (read now, once);
        ``encryption``, when given, replaces its server-side encryption (default SSE-S3).
        """
        text = str(uri)
        if text.startswith("s3://"):
            parsed = urlsplit(text)
            bucket = parsed.netloc
            if not _BUCKET.match(bucket):
                raise StorageConfigError(
                    f"invalid S3 bucket name {bucket!r} in {text!r}; fix lake_uri",
                    setting="lake_uri",
                    value=text,
                )
            prefix = parsed.path.strip("/")
            if prefix:
                _check_rel(prefix)
            norm = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
            s3 = s3 or S3Settings.from_env()
            if encryption is not None:
                s3 = replace(s3, encryption=encryption)
            return cls(norm, local_root=None, bucket=bucket, prefix=prefix, s3=s3)
        if "://" in text and not text.startswith("file://"):
            raise StorageConfigError(
                f"unsupported store URI {text!r} (a local path or s3://bucket/...); fix lake_uri",
                setting="lake_uri",
                value=text,
            )
        if text.startswith("file://"):
            text = urlsplit(text).path
        root = Path(text).expanduser().resolve()
        return cls(str(root), local_root=root, bucket=None, prefix="", s3=None)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    # ------------------------------------------------------------------ addressing

    @property
    def is_s3(self) -> bool:
        return self._bucket is not None

    @property
    def s3_settings(self) -> S3Settings | None:
        return self._s3

    @property
    def bucket(self) -> str | None:
        return self._bucket

    def url(self, rel: str = "") -> str:
        """The full URI of a relative path (local: an absolute path string)."""
        rel = _check_rel(rel, allow_empty=True)
        if self._root is not None:
            return str(self._root / rel) if rel else str(self._root)
        return f"{self.uri}/{rel}" if rel else self.uri

    def _key(self, rel: str) -> str:
        rel = _check_rel(rel, allow_empty=True)
        if self._prefix and rel:
            return f"{self._prefix}/{rel}"
        return self._prefix or rel

    def _path(self, rel: str) -> Path:
        assert self._root is not None
        rel = _check_rel(rel, allow_empty=True)
        return self._root / rel if rel else self._root

    # ------------------------------------------------------------------ engines' settings

    def storage_options(self) -> dict[str, str]:
        """Options for delta-rs (``DeltaTable``, ``write_deltalake``, polars ``scan_delta``).

        On S3 commits use conditional puts (``If-None-Match: *``): no lock service is needed
        and concurrent writers are safe (docs/LAKE.md, "S3"). Every object delta-rs writes
        asks for the store's server-side encryption.
        """
        if self._s3 is None:
            return {}
        s3 = self._s3
        opts = {"AWS_REGION": s3.region, "aws_conditional_put": "etag"}
        opts.update(s3.encryption.object_store_options())
        if s3.endpoint:
            opts["AWS_ENDPOINT_URL"] = s3.endpoint
            if s3.allow_http:
                opts["AWS_ALLOW_HTTP"] = "true"
        if s3.access_key_id and s3.secret_access_key:
            opts["AWS_ACCESS_KEY_ID"] = s3.access_key_id
            opts["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
            if s3.session_token:
                opts["AWS_SESSION_TOKEN"] = s3.session_token
        return opts

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the store's base path in it."""
        with self._lock:
            if self._fs is None:
                self._fs = self._make_filesystem()
            fs = self._fs
        if self._root is not None:
            return fs, str(self._root)
        base = f"{self._bucket}/{self._prefix}" if self._prefix else str(self._bucket)
        return fs, base

    def _make_filesystem(self) -> pafs.FileSystem:
        if self._s3 is None:
            return pafs.LocalFileSystem()
        s3 = self._s3
        kwargs: dict[str, Any] = {"region": s3.region}
        if s3.endpoint:
            parsed = urlsplit(s3.endpoint)
            kwargs["endpoint_override"] = parsed.netloc or s3.endpoint
            kwargs["scheme"] = parsed.scheme or "https"
        if s3.access_key_id and s3.secret_access_key:
            kwargs["access_key"] = s3.access_key_id
            kwargs["secret_key"] = s3.secret_access_key
            if s3.session_token:
                kwargs["session_token"] = s3.session_token
        return pafs.S3FileSystem(**kwargs)

    def boto3_client(self) -> Any:
        """The (cached, thread-safe) boto3 S3 client of this store."""
        if self._s3 is None:
            raise StorageError(f"{self.uri} is not on S3")
        with self._lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]

                s3 = self._s3
                config = Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path"} if s3.endpoint else {},
                    max_pool_connections=32,
                )
                self._client = boto3.client(
                    "s3",
                    region_name=s3.region,
                    endpoint_url=s3.endpoint,
                    aws_access_key_id=s3.access_key_id,
                    aws_secret_access_key=s3.secret_access_key,
                    aws_session_token=s3.session_token,
                    config=config,
                )
            return self._client

    # ------------------------------------------------------------------ byte operations

    def put_bytes(self, rel: str, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``rel`` atomically, replacing what was there."""
        if self._root is None:
            body = data if isinstance(data, bytes | bytearray) else bytes(data)
            sse = self._sse()
            self._s3_call(
                "put", rel, lambda c, k: c.put_object(Bucket=self._bucket, Key=k, Body=body, **sse)
            )
            return
        atomic_write(self._path(_check_rel(rel)), data)

    def write_atomic(self, rel: str, write: Callable[[BinaryIO], object]) -> int:
        """Let ``write`` fill a binary file that appears at ``rel`` atomically; its size.

        Locally the file is written in place as a temp file (no copy in memory), fsync'd and
        renamed; on S3 it is buffered and sent as one PUT.
        """
        if self._root is None:
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            self.put_bytes(rel, data)
            return len(data)
        with atomic_file(self._path(_check_rel(rel))) as handle:
            write(handle)
            size = handle.tell()
        return size

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist; False if it did."""
        if self._root is None:
            return self._s3_put_if_absent(rel, data)
        path = self._path(_check_rel(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_temp(path, data) as tmp:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        fsync_dir(path.parent)
        return True

    def get_bytes(self, rel: str) -> bytes | None:
        """The content of ``rel``, or None if it does not exist."""
        if self._root is None:
            client = self.boto3_client()
            key = self._key(_check_rel(rel))
            try:
                response = client.get_object(Bucket=self._bucket, Key=key)
                body: bytes = response["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
            except Exception as exc:
                raise StorageError(f"get {self.url(rel)}: {exc}") from exc
            return body
        try:
            return self._path(_check_rel(rel)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def exists(self, rel: str) -> bool:
        """Whether the file ``rel`` exists."""
        if self._root is None:
            client = self.boto3_client()
            try:
                client.head_object(Bucket=self._bucket, Key=self._key(_check_rel(rel)))
            except Exception as exc:
                if _status(exc) == 404:
                    return False
                raise StorageError(f"{self.url(rel)}: {exc}") from exc
            return True
        return self._path(_check_rel(rel)).is_file()

    def list(self, prefix_rel: str = "") -> builtins.list[str]:
        """Relative paths of the files under ``prefix_rel`` (recursive, sorted)."""
        prefix_rel = _check_rel(prefix_rel, allow_empty=True)
        if self._root is None:
            base = self._key(prefix_rel)
            key_prefix = f"{base}/" if base else ""
            strip = len(f"{self._prefix}/") if self._prefix else 0
            client = self.boto3_client()
            found: builtins.list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=key_prefix
            ):
                found.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
            return sorted(found)
        top = self._path(prefix_rel)
        if not top.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if not is_temp(name):
                    out.append((Path(dirpath) / name).relative_to(self._root).as_posix())
        return sorted(out)

    def children(self, prefix_rel: str = "") -> builtins.list[str]:
        """Names of the directories directly under ``prefix_rel`` (sorted)."""
        prefix_rel = _check_rel(prefix_rel, allow_empty=True)
        if self._root is None:
            base = self._key(prefix_rel)
            key_prefix = f"{base}/" if base else ""
            client = self.boto3_client()
            names: set[str] = set()
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=key_prefix, Delimiter="/"
            ):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(key_prefix) :].rstrip("/"))
            return sorted(names)
        top = self._path(prefix_rel)
        if not top.is_dir():
            return []
        return sorted(p.name for p in top.iterdir() if p.is_dir())

    def delete(self, rel: str) -> None:
        """Delete the file ``rel`` (a missing file is fine)."""
        if self._root is None:
            self._s3_call("delete", rel, lambda c, k: c.delete_object(Bucket=self._bucket, Key=k))
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(_check_rel(rel)).unlink()

    def delete_tree(self, prefix_rel: str) -> int:
        """Delete every file under ``prefix_rel``; the number of files deleted."""
        prefix_rel = _check_rel(prefix_rel)
        if self._root is None:
            keys = [self._key(rel) for rel in self.list(prefix_rel)]
            client = self.boto3_client()
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            return len(keys)
        top = self._path(prefix_rel)
        if not top.exists():
            return 0
        count = sum(len(files) for _d, _s, files in os.walk(top))
        shutil.rmtree(top)
        return count

    def put_file(self, rel: str, local_path: Path) -> None:
        """Copy a local file to ``rel`` atomically."""
        if self._root is None:
            sse = self._sse()
            self._s3_call(
                "upload",
                rel,
                lambda c, k: c.upload_file(str(local_path), self._bucket, k, ExtraArgs=sse),
            )
            return
        path = self._path(_check_rel(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        try:
            shutil.copyfile(local_path, tmp)
            install(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def stage_file(self, rel: str, local_path: Path) -> None:
        """Make ``rel`` hold the content of the local file and keep the local file: on a
        local lake on the same file system a hard link (atomic, no copy; the file must not
        change afterwards), else ``put_file``. A file already at ``rel`` is kept as it is:
        the caller stages only files that never change, so a second call is a no-op."""
        if self._root is not None:
            path = self._path(_check_rel(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(local_path, path)
            except FileExistsError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise StorageError(f"stage {local_path} at {path}: {exc}") from exc
            else:
                fsync_dir(path.parent)
                return
            if path.is_file():
                return
        elif self.exists(rel):
            return
        self.put_file(rel, local_path)

    def size(self, rel: str) -> int | None:
        """The size of the file ``rel`` in bytes, or None if it does not exist."""
        if self._root is None:
            client = self.boto3_client()
            try:
                head = client.head_object(Bucket=self._bucket, Key=self._key(_check_rel(rel)))
            except Exception as exc:
                if _status(exc) == 404:
                    return None
                raise StorageError(f"{self.url(rel)}: {exc}") from exc
            return int(head["ContentLength"])
        try:
            return self._path(_check_rel(rel)).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def modified_at(self, rel: str) -> float | None:
        """When the file ``rel`` was last written (seconds since the epoch), or None."""
        if self._root is None:
            client = self.boto3_client()
            try:
                head = client.head_object(Bucket=self._bucket, Key=self._key(_check_rel(rel)))
            except Exception as exc:
                if _status(exc) == 404:
                    return None
                raise StorageError(f"{self.url(rel)}: {exc}") from exc
            return float(head["LastModified"].timestamp())
        try:
            return self._path(_check_rel(rel)).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def move_file(self, rel: str, local_path: Path) -> None:
        """Move a local file to ``rel``: a rename when the lake is on the same local file
        system (atomic, no copy), else a copy (``put_file``) and then the unlink."""
        self.move_files([(rel, local_path)])

    def move_files(self, moves: Sequence[tuple[str, Path]]) -> None:
        """``move_file`` for many files: on a local lake every rename first, then each
        directory involved is synced once (not twice per file)."""
        synced: set[Path] = set()
        for rel, local_path in moves:
            if self._root is not None:
                path = self._path(_check_rel(rel))
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(local_path, path)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                else:
                    synced.update((path.parent, local_path.parent))
                    continue
            self.put_file(rel, local_path)
            local_path.unlink()
        for folder in sorted(synced):
            fsync_dir(folder)

    def get_file(self, rel: str, local_path: Path) -> None:
        """Copy ``rel`` to a local file (atomically replaced); StorageError if missing."""
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(local_path)
        try:
            if self._root is None:
                self._s3_call(
                    "download", rel, lambda c, k: c.download_file(self._bucket, k, str(tmp))
                )
            else:
                source = self._path(_check_rel(rel))
                if not source.is_file():
                    raise StorageError(f"{source}: no such file")
                shutil.copyfile(source, tmp)
            install(tmp, local_path)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ S3 helpers

    def _sse(self) -> dict[str, str]:
        assert self._s3 is not None
        return self._s3.encryption.put_args()

    def _s3_call(self, what: str, rel: str, call: Any) -> Any:
        client = self.boto3_client()
        key = self._key(_check_rel(rel))
        try:
            return call(client, key)
        except Exception as exc:
            raise StorageError(f"{what} {self.url(rel)}: {exc}") from exc

    def _s3_put_if_absent(self, rel: str, data: bytes) -> bool:
        client = self.boto3_client()
        key = self._key(_check_rel(rel))
        sse = self._sse()
        for attempt in range(6):
            try:
                client.put_object(Bucket=self._bucket, Key=key, Body=data, IfNoneMatch="*", **sse)
            except Exception as exc:
                status = _status(exc)
                if status == 412:
                    return False
                if status == 409 and attempt < 5:  # ConditionalRequestConflict: retry
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise StorageError(f"put-if-absent {self.url(rel)}: {exc}") from exc
            return True
        raise StorageError(f"put-if-absent {self.url(rel)}: kept conflicting")  # pragma: no cover


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None
