"""Device provisioning: from the device registry to the files the broker and gateway read.

``provision`` takes the registry's rows (``lake.reference.load_device_registry``) and
writes, into one folder (default ``DATA_DIR/gateway/``):

- ``mosquitto.passwd`` (0600): Mosquitto 2.0 ``$7$`` entries (PBKDF2-SHA512, 101 rounds,
  12-byte salt; what ``mosquitto_passwd`` writes) for the gateway account and every
  active, not revoked device that has an MQTT secret. A device's MQTT password is its
  HTTP bearer token: one 256-bit secret per device, verified against the registry's
  ``http_token_sha256`` before it is written.
- ``mosquitto.acl``: ``infra/mosquitto/acl.template`` rendered: each active device writes
  only its own topics, its canonical topic pinned to its own tenant
  (``user <device>`` / ``topic write emaas/v1/<client>/+/<device>/telemetry``); each
  gateway account reads them, its block repeated per account.
- ``identities.json``: the gateway's identity book (``gateway.identity``).
- ``gateway-mqtt.json`` (0600): the gateway's session book (``gateway.sessions``): one
  broker account and persistent session per tenant (``<gateway user>.<client_id>``,
  subscribed to the tenant's whole topic space) and one shared session (``<gateway
  user>``, the topics without a tenant segment), each with its own bounded broker queue.
  Sessions no longer wanted are listed as retired, and their accounts kept, until the
  gateway records them drained (``gateway-mqtt-state.json``, which the gateway writes);
  the next run then removes them. A new tenant's devices get their MQTT accounts only
  once that state file shows a gateway session holding the tenant's topics (the report
  lists them as pending: run provisioning again once the gateway has subscribed), so the
  broker never accepts a message of theirs that no session takes. One password for the
  gateway's accounts, generated once and kept (also from a version 1 or 2 file).
- ``mosquitto.conf``: ``infra/mosquitto/mosquitto.conf`` rendered with these paths; its
  TLS listener is live when a certificate and key are given (``BrokerOptions.tls_cert``,
  ``tls_key``), else rendered commented out.

Secrets enter through a credentials file, ``{"version": 1, "devices": {device_id:
token}}`` (mode 0600), exported by the fleet's onboarding; the simulator writes one for
its fleet. The registry only holds token digests, so a device without a supplied secret
keeps the password entry it already has, or gets no MQTT login (HTTP still works).

Idempotent: every file is rewritten only when its content would change, atomically
(temp file, fsync, rename). Password salts are random, so an entry whose existing hash
still verifies the same secret is kept byte for byte; the same registry and secrets
give the same files. Revocation is sticky: a device revoked in the book stays revoked
when provisioning runs again (retired devices are revoked too).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from contracts.errors import EXIT_CONFIG, EnergylakeError
from durable.files import atomic_write
from gateway.config import DEFAULT_TOPIC_PATTERNS
from gateway.identity import DeviceIdentity, IdentityBook, IdentityError, write_identity_book
from gateway.sessions import (
    SESSION_STATE_FILE,
    SessionBook,
    SessionBookError,
    SessionState,
    plan_sessions,
    read_session_book,
    session_book_json,
)

__all__ = [
    "ACL_FILE",
    "BOOK_FILE",
    "BROKER_CONF_FILE",
    "CREDENTIALS_NAME",
    "CREDENTIALS_VERSION",
    "GATEWAY_CREDENTIALS_FILE",
    "GATEWAY_USER",
    "INFRA_MOSQUITTO",
    "PASSWORD_FILE",
    "BrokerOptions",
    "DeviceStatus",
    "ProvisionError",
    "ProvisionReport",
    "RevokeReport",
    "device_status",
    "mosquitto_hash",
    "provision",
    "read_credentials",
    "read_password_file",
    "render_template",
    "revoke",
    "session_memory_bytes",
    "verify_mosquitto_hash",
    "write_credentials",
]

INFRA_MOSQUITTO = Path(__file__).resolve().parents[1] / "infra" / "mosquitto"
PASSWORD_FILE = "mosquitto.passwd"  # noqa: S105 - a file name, not a secret
ACL_FILE = "mosquitto.acl"
BOOK_FILE = "identities.json"
GATEWAY_CREDENTIALS_FILE = "gateway-mqtt.json"
BROKER_CONF_FILE = "mosquitto.conf"
GATEWAY_USER = "energylake-gateway"
CREDENTIALS_VERSION = 1
CREDENTIALS_NAME = "device-credentials.json"  # what the simulator writes for its fleet

_ITERATIONS = 101  # mosquitto_passwd's default; secrets are 256-bit random, not words
_SALT_BYTES = 12
# A username Mosquitto substitutes for %u in ACL patterns: no topic wildcards or levels.
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")
# Mosquitto 2.0.11 holds a queued message in ~420 bytes beyond its payload (measured: 100,000
# queued messages of 107 payload bytes on a 52-byte topic grew it by 528 B each); 512 B
# leaves room for longer topics. max_queued_bytes counts payload bytes only.
_QUEUED_MESSAGE_OVERHEAD_BYTES = 512
_QUEUE_SHARE = 0.75  # of memory_limit_bytes; the rest: connections, retained store, broker


class ProvisionError(EnergylakeError):
    """Provisioning refused: bad registry row, mismatched secret, unreadable state.

    Each is a file or an option to fix (exit code 2)."""

    exit_code: ClassVar[int] = EXIT_CONFIG


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Where the rendered broker config listens and keeps its state."""

    port: int = 1883
    bind: str = "127.0.0.1"
    user: str | None = None  # default: the account running provision (owns the 0600 files)
    persistence_dir: Path | None = None  # default: OUT/mosquitto-data/
    pid_file: Path | None = None  # default: OUT/mosquitto.pid
    # TLS listener for devices: on when both files are given (PEM chain and its key)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_port: int = 8883
    tls_bind: str = "0.0.0.0"  # noqa: S104 - devices on public networks reach this one
    # Issue 12 (MQTT): every gateway session's queue bound, the broker's $SYS period (its
    # dropped-messages counter) and its log file (drop episodes).
    max_queued_messages: int = 300_000
    max_queued_bytes: int = 128 * 1024 * 1024
    # The broker's whole heap (Mosquitto memory_limit): the gateway sessions' queues
    # together may take at most _QUEUE_SHARE of it (provisioning refuses more).
    memory_limit_bytes: int = 4 * 1024 * 1024 * 1024
    sys_interval_s: int = 10
    log_file: Path | None = None  # default: OUT/mosquitto.log


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """What ``provision`` wrote. Holds no secret."""

    out_dir: Path
    devices: int
    mqtt_accounts: int  # device accounts in the password file
    revoked: tuple[str, ...]
    without_mqtt: tuple[str, ...]  # active devices with no MQTT secret supplied or kept
    changed: tuple[str, ...]  # file names rewritten by this run
    gateway_user: str
    files: dict[str, Path] = field(default_factory=dict)
    gateway_sessions: int = 0  # one broker account and queue each
    retired_sessions: tuple[str, ...] = ()  # kept until the gateway has drained them
    # devices of a new tenant no gateway session has subscribed yet: no account this run
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RevokeReport:
    device_id: str
    already_revoked: bool
    removed_mqtt_account: bool
    signalled_pid: int | None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One row of ``energylake devices list``."""

    device_id: str
    client_id: str
    branch_id: str
    kind: str
    http_token: bool
    mqtt_account: bool
    revoked: bool


# --- the Mosquitto password format ------------------------------------------------------
def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 password entry value: ``$7$<rounds>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    """Whether ``encoded`` (a ``$7$`` entry value) is the hash of ``password``."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        rounds = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if not 1 <= rounds <= 1_000_000:
        return False
    have = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, rounds)
    return hmac.compare_digest(have, want)


def read_password_file(path: Path) -> dict[str, str]:
    """username -> hash of an existing password file (empty when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"cannot read password file {path}: {exc}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, value = line.partition(":")
        if not sep or not user:
            raise ProvisionError(f"{path}:{number}: not a 'username:hash' line")
        entries[user] = value
    return entries


# --- secrets files ------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Write ``data`` to ``path`` (temp file, fsync, rename) unless it already holds it."""
    try:
        if path.read_bytes() == data:
            if (path.stat().st_mode & 0o777) != mode:
                path.chmod(mode)
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=mode)
    return True


def write_credentials(path: Path, tokens: Mapping[str, str]) -> Path:
    """Write a device credentials file (mode 0600): what onboarding hands to provisioning."""
    body = {"version": CREDENTIALS_VERSION, "devices": dict(sorted(tokens.items()))}
    _write_atomic(path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o600)
    return path


def read_credentials(path: Path) -> dict[str, str]:
    """device_id -> clear secret from a credentials file; errors never echo a secret."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ProvisionError(f"no credentials file at {path}") from exc
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"cannot read credentials file {path}: not JSON") from exc
    if not isinstance(raw, dict) or raw.get("version") != CREDENTIALS_VERSION:
        raise ProvisionError(f"{path}: not a credentials file of version {CREDENTIALS_VERSION}")
    devices = raw.get("devices")
    if not isinstance(devices, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in devices.items()
    ):
        raise ProvisionError(f"{path}: 'devices' must map device ids to non-empty strings")
    return dict(devices)


# --- templates ----------------------------------------------------------------------------
def render_template(text: str, values: Mapping[str, object]) -> str:
    """Replace every ``@@NAME@@``; a placeholder without a value is an error."""
    out = text
    for name, value in values.items():
        out = out.replace(f"@@{name}@@", str(value))
    left = sorted(set(_PLACEHOLDER.findall(out)))
    if left:
        raise ProvisionError(f"template placeholders without a value: {', '.join(left)}")
    return out


def _tls_values(options: BrokerOptions) -> dict[str, object]:
    """The TLS listener's placeholders: live with both files, commented out with none."""
    cert, key = options.tls_cert, options.tls_key
    if (cert is None) != (key is None):
        raise ProvisionError(
            "the broker's TLS listener needs a certificate and its key: give both "
            "--tls-cert and --tls-key, or neither"
        )
    if not 1 <= options.tls_port <= 65535 or options.tls_port == options.port:
        raise ProvisionError(
            f"broker TLS port {options.tls_port} must be within 1..65535 and differ from "
            f"the plain port {options.port}"
        )
    if cert is None or key is None:
        return {
            "TLS": "#",
            "TLS_PORT": options.tls_port,
            "TLS_BIND": options.tls_bind,
            "TLS_CERT": "/etc/mosquitto/certs/server.crt",
            "TLS_KEY": "/etc/mosquitto/certs/server.key",
        }
    for path, what in ((cert, "certificate"), (key, "key")):
        if not Path(path).is_file():
            raise ProvisionError(f"TLS {what} {path} does not exist (a PEM file)")
    return {
        "TLS": "",
        "TLS_PORT": options.tls_port,
        "TLS_BIND": options.tls_bind,
        "TLS_CERT": Path(cert).resolve(),
        "TLS_KEY": Path(key).resolve(),
    }


def _broker_values(out_dir: Path, options: BrokerOptions) -> dict[str, object]:
    persistence = (options.persistence_dir or out_dir / "mosquitto-data").resolve()
    for value, what in (
        (options.bind, "bind address"),
        (options.tls_bind, "TLS bind address"),
        (options.user or "", "user"),
    ):
        if value and not re.fullmatch(r"[A-Za-z0-9._:-]+", value):
            raise ProvisionError(f"broker {what} {value!r} is not a plain name")
    if not 1 <= options.port <= 65535:
        raise ProvisionError(f"broker port {options.port} is not within 1..65535")
    limits = {
        "max_queued_messages": options.max_queued_messages >= 1,
        "max_queued_bytes": options.max_queued_bytes >= 1024,
        "memory_limit_bytes": options.memory_limit_bytes >= 64 * 1024 * 1024,
        "sys_interval_s": options.sys_interval_s >= 1,
    }
    bad = [name for name, ok in limits.items() if not ok]
    if bad:
        raise ProvisionError(f"broker option(s) out of range: {', '.join(bad)}")
    return {
        **_tls_values(options),
        "USER": options.user or getpass.getuser(),
        "PID_FILE": (options.pid_file or out_dir / "mosquitto.pid").resolve(),
        "PERSISTENCE_DIR": f"{persistence}/",
        "PASSWORD_FILE": (out_dir / PASSWORD_FILE).resolve(),
        "ACL_FILE": (out_dir / ACL_FILE).resolve(),
        "BIND": options.bind,
        "PORT": options.port,
        "MAX_QUEUED_MESSAGES": options.max_queued_messages,
        "MAX_QUEUED_BYTES": options.max_queued_bytes,
        "MEMORY_LIMIT": options.memory_limit_bytes,
        "SYS_INTERVAL": options.sys_interval_s,
        "LOG_FILE": (options.log_file or out_dir / "mosquitto.log").resolve(),
    }


# --- provisioning -------------------------------------------------------------------------
def _registry_rows(devices: Any) -> list[dict[str, Any]]:
    rows = devices.to_pylist() if hasattr(devices, "to_pylist") else list(devices)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        device_id = str(row.get("device_id") or "")
        if not _ACCOUNT.fullmatch(device_id):
            raise ProvisionError(
                f"device id {device_id!r} cannot be an MQTT account (letters, digits, . _ : -)"
            )
        client_id = str(row.get("client_id") or "")
        if not _ACCOUNT.fullmatch(client_id):
            raise ProvisionError(
                f"client id {client_id!r} of device {device_id!r} cannot name a gateway "
                "account or a topic segment (letters, digits, . _ : -; fix the registry)"
            )
        if device_id in seen:
            raise ProvisionError(f"device {device_id!r} appears twice in the registry")
        seen.add(device_id)
        out.append(dict(row))
    return out


def _gateway_sessions(path: Path, user: str, identities: list[DeviceIdentity]) -> SessionBook:
    """The gateway's session book for the active devices, keeping an existing password;
    sessions of the previous book no longer wanted stay listed (retired) until the
    gateway's state file records them drained."""
    previous = None
    if path.exists():
        try:
            previous = read_session_book(path)
        except SessionBookError as exc:
            raise ProvisionError(f"{exc}; move it away to provision from scratch") from exc
    drained = SessionState(path.with_name(SESSION_STATE_FILE)).drained()
    active = [(d.device_id, d.client_id) for d in identities if not d.revoked]
    sessions, retired = plan_sessions(active, user, previous=previous, drained=drained)
    password = previous.password if previous is not None else secrets.token_urlsafe(32)
    return SessionBook(password, sessions, retired)


def session_memory_bytes(options: BrokerOptions) -> int:
    """What one gateway session's full broker queue can take in the broker's memory."""
    overhead = options.max_queued_messages * _QUEUED_MESSAGE_OVERHEAD_BYTES
    return options.max_queued_bytes + overhead


def _check_memory(sessions: int, options: BrokerOptions) -> None:
    """Every gateway session may fill its queue at once (the gateway away): together they
    must fit the broker's memory limit, or the broker would refuse everyone's messages."""
    each = session_memory_bytes(options)
    budget = int(options.memory_limit_bytes * _QUEUE_SHARE)
    if sessions * each > budget:
        mib = 1024 * 1024
        raise ProvisionError(
            f"{sessions} gateway session(s) x {each // mib} MiB of broker queue each "
            f"({sessions * each // mib} MiB) exceed {_QUEUE_SHARE:.0%} of the broker's memory "
            f"limit ({options.memory_limit_bytes // mib} MiB): lower --queue-messages or "
            "--queue-bytes, or raise --broker-memory (the host must have it)"
        )


def _unsubscribed_tenants(out_dir: Path, identities: list[DeviceIdentity]) -> set[str]:
    """Tenants whose canonical topics no gateway session holds at the broker, by the
    gateway's state file. A device account of such a tenant would let the broker accept
    messages nobody is subscribed to (acknowledged, then dropped), so it waits. Without
    a state file no gateway has run against this folder: nothing is held back."""
    path = out_dir / SESSION_STATE_FILE
    if not path.exists():
        return set()
    held = SessionState(path).held()
    if "emaas/v1/+/+/+/telemetry" in held:  # a version 1 session takes every tenant
        return set()
    tenants = {d.client_id for d in identities if not d.revoked}
    return {t for t in tenants if f"emaas/v1/{t}/+/+/telemetry" not in held}


def _device_acl(identities: list[DeviceIdentity]) -> str:
    """One block per active device: its canonical topic, pinned to its own tenant."""
    return "\n".join(
        f"user {d.device_id}\ntopic write emaas/v1/{d.client_id}/+/{d.device_id}/telemetry\n"
        for d in sorted(identities, key=_key)
        if not d.revoked
    )


def _device_patterns(patterns: Sequence[str]) -> str:
    """A ``pattern write`` line per tenant-less topic pattern, the device segment pinned to
    the account (the canonical pattern, with its tenant, is written per device)."""
    return "\n".join(
        "pattern write " + "/".join("%u" if seg == "{device}" else seg for seg in p.split("/"))
        for p in patterns
        if "{client}" not in p.split("/")
    )


def _gateway_reads(patterns: Sequence[str]) -> str:
    """A ``topic read`` line per topic pattern the gateway subscribes to."""
    return "\n".join(
        "topic read " + "/".join("+" if seg.startswith("{") else seg for seg in p.split("/"))
        for p in patterns
    )


def _render_acl(
    template: str,
    accounts: list[str],
    identities: list[DeviceIdentity],
    patterns: Sequence[str] = DEFAULT_TOPIC_PATTERNS,
) -> str:
    """The ACL template with the devices' lines and blocks and its gateway block (from
    ``user @@GATEWAY_USER@@`` to the end) repeated for every gateway account."""
    marker = "user @@GATEWAY_USER@@"
    if marker not in template:
        raise ProvisionError(f"the ACL template has no {marker!r} block")
    head, _, block = template.partition(marker)
    block = marker + block
    reads = _gateway_reads(patterns)
    blocks = [
        render_template(block, {"GATEWAY_USER": account, "GATEWAY_READS": reads})
        for account in accounts
    ]
    devices = {"DEVICE_ACL": _device_acl(identities), "DEVICE_PATTERNS": _device_patterns(patterns)}
    return render_template(head, devices) + "\n".join(blocks)


def _reserved_names(patterns: Sequence[str]) -> frozenset[str]:
    """Names no account may take: a literal segment of a topic pattern. A device named
    ``tele`` could otherwise publish ``tele/status/x``, which two patterns match."""
    return frozenset(
        seg for p in patterns for seg in p.split("/") if seg != "+" and not seg.startswith("{")
    )


def _existing_book(path: Path) -> IdentityBook | None:
    if not path.exists():
        return None
    try:
        return IdentityBook.load(path)
    except IdentityError as exc:
        raise ProvisionError(f"{exc}; move it away to provision from scratch") from exc


def _password_lines(wanted: Mapping[str, str | None], existing: Mapping[str, str]) -> bytes:
    """Entries for ``wanted`` (user -> secret, or None = keep the existing entry)."""
    lines = []
    for user in sorted(wanted):
        secret = wanted[user]
        have = existing.get(user)
        if secret is None:
            if have is None:
                continue
            value = have
        elif have is not None and verify_mosquitto_hash(secret, have):
            value = have  # same secret: keep the salt, so the file does not churn
        else:
            value = mosquitto_hash(secret)
        lines.append(f"{user}:{value}\n")
    return "".join(lines).encode()


def provision(
    devices: Any,
    out_dir: Path,
    *,
    credentials: Mapping[str, str] | None = None,
    gateway_user: str = GATEWAY_USER,
    broker: BrokerOptions | None = None,
    template_dir: Path = INFRA_MOSQUITTO,
    patterns: Sequence[str] = DEFAULT_TOPIC_PATTERNS,
) -> ProvisionReport:
    """Write the broker's and gateway's files for the registry's ``devices`` (rows or Arrow).

    A device's account is the name it publishes under: its ``mqtt_name`` when it has one
    (Tasmota's default ``tasmota_1A2B3C``), else its id; ``credentials`` are keyed by
    device id. ``patterns``: the topics devices may write (the decoder catalogue's).

    Every check runs before anything is written: an unknown device in ``credentials``,
    a secret whose SHA-256 is not the registry's, a malformed row, or an account named
    like a literal segment of a topic pattern raises ``ProvisionError`` and leaves the
    folder as it was.
    """
    raw_rows = devices.to_pylist() if hasattr(devices, "to_pylist") else list(devices)
    account_of = {
        str(r.get("device_id") or ""): str(r.get("mqtt_name") or r.get("device_id") or "")
        for r in raw_rows
    }
    rows = _registry_rows(
        [{**r, "device_id": account_of[str(r.get("device_id") or "")]} for r in raw_rows]
    )
    reserved = _reserved_names(patterns)
    taken = sorted(r["device_id"] for r in rows if r["device_id"] in reserved)
    if taken:
        raise ProvisionError(
            f"device account {taken[0]!r} is a literal segment of a topic pattern: a "
            "message on a topic two patterns match could be taken for it; rename the "
            "device (or set its mqtt_name)"
        )
    credentials = {account_of.get(k, k): v for k, v in (credentials or {}).items()}
    if not _ACCOUNT.fullmatch(gateway_user):
        raise ProvisionError(f"gateway user {gateway_user!r} is not a plain account name")
    by_id = {row["device_id"]: row for row in rows}
    clash = sorted(d for d in by_id if d == gateway_user or d.startswith(f"{gateway_user}."))
    if clash:
        raise ProvisionError(f"device id {clash[0]!r} collides with the gateway's accounts")
    unknown = sorted(set(credentials) - set(by_id))
    if unknown:
        raise ProvisionError(
            f"{len(unknown)} credential(s) for devices not in the registry: "
            f"{', '.join(unknown[:5])}"
        )
    for device_id, secret in credentials.items():
        digest = by_id[device_id].get("http_token_sha256")
        if not digest:
            raise ProvisionError(
                f"device {device_id!r} has no token digest in the registry: "
                "cannot verify its secret"
            )
        if not hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), str(digest)):
            raise ProvisionError(
                f"the secret given for device {device_id!r} does not match the registry's "
                "http_token_sha256; re-export it from onboarding"
            )
    out_dir = Path(out_dir)
    book_path = out_dir / BOOK_FILE
    old_book = _existing_book(book_path)
    sticky = {d.device_id for d in old_book.devices() if d.revoked} if old_book else set()
    identities = [
        DeviceIdentity(
            device_id=row["device_id"],
            client_id=str(row["client_id"]),
            branch_id=str(row["branch_id"]),
            kind=str(row["kind"]),
            http_token_sha256=row.get("http_token_sha256") or None,
            revoked=row["device_id"] in sticky or row.get("status", "active") != "active",
        )
        for row in rows
    ]
    options = broker or BrokerOptions()
    values = _broker_values(out_dir, options)
    conf = render_template((template_dir / "mosquitto.conf").read_text(), values)
    sessions = _gateway_sessions(out_dir / GATEWAY_CREDENTIALS_FILE, gateway_user, identities)
    # retired sessions keep their accounts until the gateway has drained them
    accounts = [s.username for s in (*sessions.sessions, *sessions.retired)]
    _check_memory(len(accounts), options)
    acl = _render_acl((template_dir / "acl.template").read_text(), accounts, identities, patterns)
    existing = read_password_file(out_dir / PASSWORD_FILE)

    changed: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(str(values["PERSISTENCE_DIR"])).mkdir(mode=0o700, parents=True, exist_ok=True)
    # The session book first: the gateway subscribes a new tenant's session (it reloads
    # the book) while the broker, reloaded after provisioning, lets its devices in.
    book_bytes = session_book_json(sessions)
    if _write_atomic(out_dir / GATEWAY_CREDENTIALS_FILE, book_bytes, mode=0o600):
        changed.append(GATEWAY_CREDENTIALS_FILE)
    wanted: dict[str, str | None] = dict.fromkeys(accounts, sessions.password)
    waiting = _unsubscribed_tenants(out_dir, identities)
    pending: list[str] = []
    for ident in identities:
        if ident.revoked:
            continue
        if ident.client_id in waiting and ident.device_id not in existing:
            pending.append(ident.device_id)  # no account until its tenant is subscribed
            continue
        wanted[ident.device_id] = credentials.get(ident.device_id)
    body = _password_lines(wanted, existing)
    if _write_atomic(out_dir / PASSWORD_FILE, body, mode=0o600):
        changed.append(PASSWORD_FILE)
    if _write_atomic(out_dir / ACL_FILE, acl.encode()):
        changed.append(ACL_FILE)
    if old_book is None or sorted(old_book.devices(), key=_key) != sorted(identities, key=_key):
        write_identity_book(book_path, identities)
        changed.append(BOOK_FILE)
    if _write_atomic(out_dir / BROKER_CONF_FILE, conf.encode()):
        changed.append(BROKER_CONF_FILE)
    device_accounts = set(read_password_file(out_dir / PASSWORD_FILE)) - set(accounts)
    return ProvisionReport(
        out_dir=out_dir,
        devices=len(identities),
        mqtt_accounts=len(device_accounts),
        revoked=tuple(sorted(d.device_id for d in identities if d.revoked)),
        without_mqtt=tuple(
            sorted(
                d.device_id
                for d in identities
                if not d.revoked
                and d.device_id not in device_accounts
                and d.device_id not in pending
            )
        ),
        pending=tuple(sorted(pending)),
        changed=tuple(changed),
        gateway_user=gateway_user,
        files={
            name: out_dir / name
            for name in (
                PASSWORD_FILE,
                ACL_FILE,
                BOOK_FILE,
                GATEWAY_CREDENTIALS_FILE,
                BROKER_CONF_FILE,
            )
        },
        gateway_sessions=len(sessions.sessions),
        retired_sessions=tuple(s.username for s in sessions.retired),
    )


def _key(device: DeviceIdentity) -> str:
    return device.device_id


# --- revoke and list ----------------------------------------------------------------------
def revoke(out_dir: Path, device_id: str, *, pid_file: Path | None = None) -> RevokeReport:
    """Revoke a device: marked in the book, its MQTT account removed, the broker reloaded.

    The broker rereads its password file and ACL on SIGHUP; with ``pid_file`` the signal
    is sent here. The gateway reloads the book when the file changes.
    """
    book_path = Path(out_dir) / BOOK_FILE
    book = _existing_book(book_path)
    if book is None:
        raise ProvisionError(f"no identity book in {out_dir}: run `energylake devices provision`")
    device = book.device(device_id)
    if device is None:
        raise ProvisionError(f"device {device_id!r} is not in the identity book {book_path}")
    already = device.revoked
    if not already:
        write_identity_book(
            book_path,
            [
                DeviceIdentity(**{**d.as_dict(), "revoked": True})
                if d.device_id == device_id
                else d
                for d in book.devices()
            ],
        )
    password_path = Path(out_dir) / PASSWORD_FILE
    entries = read_password_file(password_path)
    removed = entries.pop(device_id, None) is not None
    if removed:
        body = "".join(f"{u}:{h}\n" for u, h in sorted(entries.items())).encode()
        _write_atomic(password_path, body, mode=0o600)
    pid = _signal_reload(pid_file) if pid_file is not None else None
    return RevokeReport(device_id, already, removed, pid)


def _signal_reload(pid_file: Path) -> int:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"cannot read a pid from {pid_file}: {exc}") from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise ProvisionError(
            f"no process {pid} (from {pid_file}): the device is revoked in the files; "
            "start the broker or reload it by hand"
        ) from exc
    return pid


def device_status(out_dir: Path) -> list[DeviceStatus]:
    """Every device in the book with whether it has an HTTP token and an MQTT account."""
    book = _existing_book(Path(out_dir) / BOOK_FILE)
    if book is None:
        raise ProvisionError(f"no identity book in {out_dir}: run `energylake devices provision`")
    accounts = set(read_password_file(Path(out_dir) / PASSWORD_FILE))
    return [
        DeviceStatus(
            device_id=d.device_id,
            client_id=d.client_id,
            branch_id=d.branch_id,
            kind=d.kind,
            http_token=d.http_token_sha256 is not None,
            mqtt_account=d.device_id in accounts,
            revoked=d.revoked,
        )
        for d in sorted(book.devices(), key=_key)
    ]
