"""Device onboarding: a new device checked against the devices contract, the decoder catalogue
and the registry, then written to its tenant's registry table with a fresh secret.

``check_device`` returns every reason a device cannot be added, each naming the field:
a value the devices contract does not allow (type, pattern, range, enum, length); a
client or branch the lake does not know; an id (or MQTT name) already taken, or that no
stream of its decoder could route (the ``{device}`` segment of its topics), or that is a
literal segment of a topic pattern (``tele``, ``status``: a topic two patterns match);
a decoder that maps no field of the device's kind; a profile the kind's contract does
not name; a Modbus device without its endpoint, unit or a register map serving its kind;
a Sparkplug device without a registered edge node. ``add_device`` writes the row (the
registry is a per-tenant snapshot table, rewritten with the row added, as a reference
load does) and returns the device's secret, which exists nowhere else afterwards: only its
SHA-256 is stored. ``retire_device`` marks a device retired (its history stays; its
readings are then quarantined UNKNOWN_DEVICE "retired").
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from contracts import ContractRegistry
from contracts.errors import EnergylakeError
from contracts.model import READING_SYSTEM_FIELDS, Contract
from lake.delta import read_table, table_exists
from lake.layout import clients_rel, table_rel
from lake.reference import load_device_registry, write_reference_rows
from lake.storage import Store
from transforms.catalogue import DEVICE_SEGMENT, Catalogue

__all__ = [
    "OnboardingError",
    "add_device",
    "check_device",
    "retire_device",
]

_DEVICE_NAME = re.compile(DEVICE_SEGMENT)


class OnboardingError(EnergylakeError):
    """A device that cannot be added or retired; ``reasons`` names each problem."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        self.reasons = reasons or []
        lines = "".join(f"\n  - {r}" for r in self.reasons)
        super().__init__(f"{message}{lines}")


def _contract_problems(row: Mapping[str, Any], contract: Contract) -> list[str]:
    """What the devices contract refuses in ``row``: nulls, types, patterns, ranges, enums."""
    out: list[str] = []
    schema = contract.arrow_schema()
    for f in contract.fields:
        value = row.get(f.name)
        nullable = schema.field(f.name).nullable
        if value is None:
            if not nullable:
                out.append(f"{f.name}: required by {contract.ref}")
            continue
        try:
            pa.array([value], schema.field(f.name).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            out.append(f"{f.name}: {value!r} is not a {f.physical_type}")
            continue
        if f.pattern is not None and isinstance(value, str) and not re.search(f.pattern, value):
            out.append(f"{f.name}: {value!r} does not match {f.pattern}")
        if f.max_length is not None and isinstance(value, str) and len(value) > f.max_length:
            out.append(f"{f.name}: longer than {f.max_length} characters")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if f.minimum is not None and value < f.minimum:
                out.append(f"{f.name}: {value} is below {f.minimum}")
            if f.maximum is not None and value > f.maximum:
                out.append(f"{f.name}: {value} is above {f.maximum}")
        if f.allowed_values and value not in f.allowed_values:
            allowed = ", ".join(map(str, f.allowed_values))
            out.append(f"{f.name}: {value!r} is not one of {allowed}")
    return out


def _unsupplied(
    catalogue: Catalogue, decoder: str, contract: Contract, profile: str | None
) -> list[str]:
    """Required fields of ``contract`` the decoder can never supply for a device of that
    kind and profile: no stream maps them, and not every stream's profile omits them."""
    omitted = {f for p in (profile or "").split("+") if p for f in contract.profiles.get(p, ())}
    streams = catalogue.decoders[decoder].streams
    kind = contract.device_kind or ""
    mapped: set[str] = set()
    for stream in streams:
        if stream.layout == "envelope":
            return []
        for rule in stream.fields:
            name = rule.target(kind)
            if name == "*":
                return []
            if name is not None:
                mapped.add(name)
        for derived in stream.derive:
            name = derived.targets.get(kind, derived.targets.get("*"))
            if name is not None:
                mapped.add(name)
    always_omitted = set.intersection(
        *(set(contract.profiles.get(s.profile or "", ())) for s in streams)
    )
    required = [
        f.name
        for f in contract.fields
        if f.required and f.name not in READING_SYSTEM_FIELDS and f.name not in omitted
    ]
    return [n for n in required if n not in mapped and n not in always_omitted]


def check_device(
    row: Mapping[str, Any],
    *,
    store: Store,
    registry: ContractRegistry,
    catalogue: Catalogue,
    patterns: tuple[str, ...],
    maps: Mapping[str, str] | None = None,
) -> list[str]:
    """Every reason ``row`` (a devices-contract row) cannot join the registry.

    ``maps``: register map name -> the kind it serves (None: Modbus is not checked)."""
    reasons = _contract_problems(row, registry.get("devices"))
    device_id = str(row.get("device_id") or "")
    kind = str(row.get("kind") or "")
    decoder = str(row.get("payload_format") or "")
    name = str(row.get("mqtt_name") or device_id)
    existing = load_device_registry(store, registry)
    ids = set(existing.column("device_id").to_pylist())
    names = {
        str(r.get("mqtt_name") or r["device_id"]): str(r["device_id"])
        for r in existing.select(["device_id", "mqtt_name"]).to_pylist()
    }
    if device_id in ids:
        reasons.append(
            f"device_id: {device_id} is already registered (retire it, or pick another id)"
        )
    if name in names and names[name] != device_id:
        reasons.append(
            f"mqtt_name: {name} is already the name device {names[name]} publishes under"
        )
    # the tenant and branch must exist
    client, branch = str(row.get("client_id") or ""), str(row.get("branch_id") or "")
    if client and not _has(store, clients_rel(), "client_id", client):
        reasons.append(f"client_id: no client {client} in the lake (energylake reference load)")
    elif client and branch and not _has(store, table_rel(client, "branches"), "branch_id", branch):
        reasons.append(f"branch_id: client {client} has no branch {branch}")
    # the decoder: known, serving the kind, able to route the device's name
    if decoder not in catalogue.decoders:
        reasons.append(
            f"payload_format: no decoder {decoder!r} in the catalogue "
            f"({', '.join(sorted(catalogue.decoders))})"
        )
    else:
        kind_contract = next(
            (
                registry.get(ds)
                for ds in registry.readings_datasets
                if registry.get(ds).device_kind == kind
            ),
            None,
        )
        if kind_contract is not None:
            missing = _unsupplied(catalogue, decoder, kind_contract, row.get("profile"))
            if missing:
                reasons.append(
                    f"payload_format: the {decoder} decoder never supplies "
                    f"{', '.join(missing)}, which a {kind} reading requires (a profile that "
                    "omits them, or another decoder)"
                )
        for stream in catalogue.decoders[decoder].streams:
            regex = stream.regex.pattern
            segment = r"[a-z0-9][a-z0-9-]{1,63}" if stream.layout == "envelope" else DEVICE_SEGMENT
            if not re.fullmatch(segment, name):
                reasons.append(
                    f"{'mqtt_name' if row.get('mqtt_name') else 'device_id'}: {name!r} cannot be "
                    f"the device segment of {stream.topic} ({regex})"
                )
                break
    if row.get("mqtt_name") and decoder == "canonical":
        reasons.append(
            "mqtt_name: the canonical envelope names its device by id (device_id in the "
            "payload and the topic); an MQTT name is for vendor formats that name themselves"
        )
    literals = {s for p in patterns for s in p.split("/") if s != "+" and not s.startswith("{")}
    if name in literals:
        reasons.append(
            f"{'mqtt_name' if row.get('mqtt_name') else 'device_id'}: {name!r} is a literal "
            "segment of a topic pattern; a topic two patterns match could be taken for it"
        )
    # profile
    contract = next(
        (
            registry.get(ds)
            for ds in registry.readings_datasets
            if registry.get(ds).device_kind == kind
        ),
        None,
    )
    profile = row.get("profile")
    if profile and contract is not None:
        unknown = [p for p in str(profile).split("+") if p not in contract.profiles]
        if unknown:
            known = ", ".join(sorted(contract.profiles)) or "none"
            reasons.append(
                f"profile: {', '.join(unknown)} is not a profile of {contract.dataset} ({known})"
            )
    # Modbus
    modbus = [row.get(k) for k in ("modbus_endpoint", "modbus_unit_id", "register_map")]
    if any(v is not None for v in modbus):
        if any(v is None for v in modbus):
            reasons.append(
                "register_map: a Modbus device needs modbus_endpoint, modbus_unit_id and "
                "register_map together"
            )
        if decoder != "canonical":
            reasons.append(
                "payload_format: a Modbus device's records come from the poller: canonical"
            )
        wanted = row.get("register_map")
        if maps is not None and wanted is not None:
            if wanted not in maps:
                reasons.append(f"register_map: no map {wanted!r} ({', '.join(sorted(maps))})")
            elif maps[str(wanted)] != kind:
                reasons.append(f"register_map: {wanted} serves {maps[str(wanted)]}, not {kind}")
    # Sparkplug
    edge = row.get("edge_node")
    if edge is not None:
        if decoder != "sparkplug_b":
            reasons.append("edge_node: only a Sparkplug B device (sparkplug_b) has an edge node")
        active = {
            str(r.get("mqtt_name") or r["device_id"])
            for r in existing.to_pylist()
            if r.get("status") == "active"
        }
        if edge not in active and edge != name:
            reasons.append(
                f"edge_node: {edge} is not an active registered device (register the edge "
                "node first: its account is the one that publishes)"
            )
    return reasons


def _has(store: Store, rel: str, column: str, value: str) -> bool:
    if not table_exists(store, rel):
        return False
    rows = read_table(store, rel, columns=[column])
    return bool(pc.any(pc.equal(rows.column(column), value)).as_py())


def new_secret() -> tuple[str, str]:
    """A device secret (256 random bits, URL-safe) and its SHA-256 (hex)."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Added:
    """A device written to the registry: its row (the digest, never the secret), the secret
    to hand to the device once, and the registry table's version."""

    row: dict[str, Any]
    secret: str
    version: int


def add_device(
    row: Mapping[str, Any],
    *,
    store: Store,
    registry: ContractRegistry,
    catalogue: Catalogue,
    patterns: tuple[str, ...],
    maps: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Added:
    """Check ``row`` and write it, with a fresh secret's digest, to its tenant's registry."""
    now = now or datetime.now(UTC)
    secret, digest = new_secret()
    full = {
        **{f.name: None for f in registry.get("devices").fields},
        "status": "active",
        "installed_on": now.date(),
        **dict(row),
        "http_token_sha256": digest,
        "updated_at": now,
    }
    if isinstance(full.get("installed_on"), str):
        full["installed_on"] = date.fromisoformat(str(full["installed_on"]))
    reasons = check_device(
        full, store=store, registry=registry, catalogue=catalogue, patterns=patterns, maps=maps
    )
    if reasons:
        raise OnboardingError(f"device {full.get('device_id')} cannot be added:", reasons)
    version = _write(store, registry, str(full["client_id"]), lambda rows: [*rows, full])
    return Added(full, secret, version)


def retire_device(
    device_id: str, *, store: Store, registry: ContractRegistry, now: datetime | None = None
) -> dict[str, Any]:
    """Mark ``device_id`` retired in its tenant's registry; returns its row as it was."""
    now = now or datetime.now(UTC)
    existing = load_device_registry(store, registry).to_pylist()
    found = [r for r in existing if r["device_id"] == device_id]
    if not found:
        raise OnboardingError(f"no device {device_id} in the registry")
    before: dict[str, Any] = dict(found[0])
    if before["status"] == "retired":
        raise OnboardingError(f"device {device_id} is already retired")

    def retired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**r, "status": "retired", "updated_at": now} if r["device_id"] == device_id else r
            for r in rows
        ]

    _write(store, registry, str(before["client_id"]), retired)
    return before


def _write(store: Store, registry: ContractRegistry, client: str, change: Any) -> int:
    contract = registry.get("devices")
    rel = table_rel(client, "devices")
    rows: list[dict[str, Any]] = []
    if table_exists(store, rel):
        current = read_table(store, rel)
        rows = [{f.name: r.get(f.name) for f in contract.fields} for r in current.to_pylist()]
    table = pa.Table.from_pylist(change(rows), schema=contract.arrow_schema())
    table = table.sort_by([(k, "ascending") for k in contract.primary_key])
    return write_reference_rows(
        store, rel, contract, table, source="energylake devices", tenant=client
    )
