"""The purpose policy engine: what a purpose may see of a dataset, and the shaping of a table.

Pure functions. ``plan_for(contract, purpose)`` decides per field: in clear if the
field lists the purpose; otherwise its protection (pseudonymised, masked,
generalised, dropped); a field with neither is dropped (purpose limitation and data
minimisation: what is not granted is not shown). ``apply_plan`` shapes an Arrow
table accordingly, vectorised where Arrow can, per distinct value where it cannot
(HMAC, masking).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa
import pyarrow.compute as pc

from contracts.errors import PolicyError, UnknownPurposeError
from contracts.model import Contract, Field, Protection
from contracts.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    "PSEUDONYM_PREFIX",
    "Action",
    "FieldPlan",
    "PurposePlan",
    "TenantKey",
    "apply_plan",
    "mask_value",
    "plan_for",
    "pseudonym",
]

PSEUDONYM_PREFIX = "ps_"
_GRAINS = {"1m": "minute", "15m": "minute", "1h": "hour", "1d": "day"}


class Action(StrEnum):
    CLEAR = "clear"
    PSEUDONYMISED = "pseudonymised"
    MASKED = "masked"
    GENERALISED = "generalised"
    DROPPED = "dropped"


_ACTION_OF = {
    "drop": Action.DROPPED,
    "mask": Action.MASKED,
    "pseudonymise": Action.PSEUDONYMISED,
    "generalise": Action.GENERALISED,
}


@dataclass(frozen=True, slots=True)
class TenantKey:
    """A tenant's secret for keyed pseudonymisation. The secret never appears in a repr."""

    tenant: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise PolicyError(f"tenant key for {self.tenant!r} is shorter than 16 bytes")

    def __repr__(self) -> str:
        return f"TenantKey(tenant={self.tenant!r}, secret=<{len(self.secret)} bytes>)"


@dataclass(frozen=True, slots=True)
class FieldPlan:
    field: str
    action: Action
    protection: Protection | None
    reason: str


@dataclass(frozen=True, slots=True)
class PurposePlan:
    """What one purpose sees of one dataset, field by field."""

    dataset: str
    contract: str
    purpose: str
    fields: tuple[FieldPlan, ...]

    def action(self, field: str) -> Action:
        for plan in self.fields:
            if plan.field == field:
                return plan.action
        raise KeyError(field)

    @property
    def visible(self) -> list[str]:
        """Columns present in the output (everything not dropped)."""
        return [p.field for p in self.fields if p.action is not Action.DROPPED]

    @property
    def clear(self) -> list[str]:
        return [p.field for p in self.fields if p.action is Action.CLEAR]


def _field_plan(field: Field, purpose: str) -> FieldPlan:
    if purpose in field.purposes:
        return FieldPlan(field.name, Action.CLEAR, None, f"listed for {purpose}")
    if field.protection is not None:
        return FieldPlan(
            field.name,
            _ACTION_OF[field.protection.method],
            field.protection,
            f"{field.classification}: {field.protection.describe()}",
        )
    return FieldPlan(field.name, Action.DROPPED, None, f"{field.classification}: not listed")


def plan_for(contract: Contract, purpose: str, vocab: Vocabulary | None = None) -> PurposePlan:
    """The per-field plan for a purpose; UnknownPurposeError for a purpose not in the policy."""
    vocab = vocab or load_vocabulary()
    if purpose not in vocab.purposes:
        raise UnknownPurposeError(purpose, vocab.purpose_ids)
    return PurposePlan(
        dataset=contract.dataset,
        contract=contract.ref,
        purpose=purpose,
        fields=tuple(_field_plan(f, purpose) for f in contract.fields),
    )


def pseudonym(key: TenantKey, domain: str, value: str) -> str:
    """Keyed HMAC-SHA256 pseudonym: stable per (tenant key, domain, value), 128 bits shown."""
    digest = hmac.new(key.secret, f"{domain}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def mask_value(value: str, keep_last: int) -> str:
    """Replace letters and digits by '*' but the last few, never keeping more than a third.

    >>> mask_value("+919876543210", 2)
    '+**********10'
    >>> mask_value("ab", 2)
    '**'
    >>> mask_value("+-", 2)
    '**'
    """
    alnum = sum(ch.isalnum() for ch in value)
    if alnum == 0:
        return "*" * len(value)  # nothing to keep the shape of: hide it all
    keep = min(keep_last, alnum // 3)
    out: list[str] = []
    seen = 0
    for ch in value:
        if ch.isalnum():
            seen += 1
            out.append(ch if seen > alnum - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def _map_distinct(column: pa.ChunkedArray, fn: object) -> pa.Array:
    """Apply a str -> str function once per distinct value (dictionary encode, then take)."""
    assert callable(fn)
    encoded = pc.dictionary_encode(column).combine_chunks()
    dictionary = encoded.dictionary.cast(pa.string()).to_pylist()
    mapped = pa.array([fn(v) for v in dictionary], type=pa.string())
    return pc.take(mapped, encoded.indices)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step)) + 1)


def _generalise(column: pa.ChunkedArray, protection: Protection) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        grain = protection.grain or "1d"
        multiple = 15 if grain == "15m" else 1
        return pc.floor_temporal(column, multiple=multiple, unit=_GRAINS[grain])
    step = float(protection.step or 1.0)
    as_float = pc.cast(column, pa.float64())
    cell = pc.floor(pc.divide(as_float, step))
    centre = pc.add(pc.multiply(cell, step), step / 2)
    return pc.round(centre, _decimals(step))


def _protect(
    column: pa.ChunkedArray, field: Field, plan: FieldPlan, key: TenantKey
) -> pa.ChunkedArray | pa.Array:
    protection = plan.protection
    assert protection is not None
    if plan.action is Action.PSEUDONYMISED:
        domain = protection.domain or field.name
        return _map_distinct(pc.cast(column, pa.string()), lambda v: pseudonym(key, domain, v))
    if plan.action is Action.MASKED:
        keep = protection.keep_last
        return _map_distinct(column, lambda v: mask_value(v, keep))
    if plan.action is Action.GENERALISED:
        return _generalise(column, protection)
    raise PolicyError(f"no transform for {plan.action}")  # pragma: no cover - exhaustive


def apply_plan(plan: PurposePlan, table: pa.Table, key: TenantKey, contract: Contract) -> pa.Table:
    """Shape a table for the plan's purpose. Fails closed on columns the contract does not know."""
    if contract.ref != plan.contract:
        raise PolicyError(f"plan is for {plan.contract}, table contract is {contract.ref}")
    known = set(contract.field_names)
    unknown = [name for name in table.column_names if name not in known]
    if unknown:
        raise PolicyError(
            f"{contract.ref}: columns not described by the contract: {', '.join(unknown)}; "
            "refusing to shape a table the policy cannot vouch for"
        )
    arrays: list[pa.ChunkedArray | pa.Array] = []
    out_fields: list[pa.Field] = []
    for field_plan in plan.fields:
        if field_plan.action is Action.DROPPED or field_plan.field not in table.column_names:
            continue
        field = contract.field(field_plan.field)
        column = table.column(field_plan.field)
        if field_plan.action is Action.CLEAR:
            arrays.append(column)
            out_type = column.type
        else:
            protected = _protect(column, field, field_plan, key)
            arrays.append(protected)
            out_type = protected.type
        out_fields.append(
            pa.field(field.name, out_type, metadata={"energylake.action": str(field_plan.action)})
        )
    return pa.Table.from_arrays(
        arrays,
        schema=pa.schema(
            out_fields, metadata={"energylake.contract": contract.ref, "purpose": plan.purpose}
        ),
    )
