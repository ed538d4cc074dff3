"""Purpose policy: properties that must hold for every contract, purpose, tenant and value."""

from __future__ import annotations

import doctest
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts.policy
from contracts import (
    Action,
    Contract,
    Field,
    PolicyError,
    Protection,
    Retention,
    TenantKey,
    UnknownPurposeError,
    apply_plan,
    load_registry,
    plan_for,
)
from contracts.policy import PSEUDONYM_PREFIX, mask_value, pseudonym

REGISTRY = load_registry()
PURPOSES = REGISTRY.vocabulary.purpose_ids
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.binary(min_size=16, max_size=64).map(lambda b: TenantKey("tenant-a", b))
# Protected strings are drawn long and distinctive enough that a chance equality with an
# unrelated output cell cannot happen; the check itself is exact.
texts = st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=24)


def _value(field: Field) -> st.SearchStrategy[Any]:
    nullable = not field.required
    strategy: st.SearchStrategy[Any]
    t = field.physical_type
    if t == "string":
        strategy = st.sampled_from(list(field.allowed_values)) if field.allowed_values else texts
    elif t in ("int64", "int32"):
        strategy = st.integers(min_value=0, max_value=2**31 - 1)
    elif t == "double":
        low = field.minimum if field.minimum is not None else -1e6
        high = field.maximum if field.maximum is not None else 1e6
        strategy = st.floats(min_value=low, max_value=high, allow_nan=False)
    elif t == "bool":
        strategy = st.booleans()
    elif t == "date32":
        strategy = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1))
    elif t.startswith("timestamp"):
        strategy = st.datetimes(
            min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
            max_value=datetime(2040, 1, 1),  # noqa: DTZ001
            timezones=st.just(UTC),
        )
    elif t == "list<string>":
        strategy = st.lists(texts, max_size=3)
    else:  # pragma: no cover - every physical type of the contracts is listed above
        raise AssertionError(t)
    return st.one_of(st.none(), strategy) if nullable else strategy


def _rows(contract: Contract) -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries({f.name: _value(f) for f in contract.fields})
    return st.lists(row, min_size=1, max_size=8)


def _table(contract: Contract, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=contract.arrow_schema())


@pytest.mark.parametrize("dataset", REGISTRY.datasets)
@pytest.mark.parametrize("purpose", PURPOSES)
def test_plan_grants_clear_exactly_to_listed_purposes(dataset: str, purpose: str) -> None:
    contract = REGISTRY.get(dataset)
    plan = plan_for(contract, purpose)
    for field, field_plan in zip(contract.fields, plan.fields, strict=True):
        assert field_plan.field == field.name
        if purpose in field.purposes:
            assert field_plan.action is Action.CLEAR
        else:
            assert field_plan.action is not Action.CLEAR
            if field.protection is None:
                assert field_plan.action is Action.DROPPED


def test_secrets_are_never_visible() -> None:
    devices = REGISTRY.get("devices")
    for purpose in PURPOSES:
        assert plan_for(devices, purpose).action("http_token_sha256") is Action.DROPPED


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset", ["contacts", "work_orders", "branches", "devices", "quarantine"]
)
@SETTINGS
@given(data=st.data(), key=keys)
def test_no_protected_value_survives_in_any_output_column(
    dataset: str, data: st.DataObject, key: TenantKey
) -> None:
    contract = REGISTRY.get(dataset)
    rows = data.draw(_rows(contract))
    purpose = data.draw(st.sampled_from(PURPOSES))
    table = _table(contract, rows)
    plan = plan_for(contract, purpose)
    out = apply_plan(plan, table, key, contract)

    assert set(out.column_names) == set(plan.visible)
    for name in plan.clear:
        assert out.column(name).equals(table.column(name))

    clear_inputs = {str(v) for name in plan.clear for v in table.column(name).to_pylist()}
    protected = {
        str(v)
        for fp in plan.fields
        if fp.action in (Action.PSEUDONYMISED, Action.MASKED, Action.DROPPED)
        for v in table.column(fp.field).to_pylist()
        if v is not None
        and str(v) not in clear_inputs
        and set(str(v)) != {"*"}  # all mask characters: nothing to leak
    }
    cells = [
        str(v)
        for name in out.column_names
        if name not in plan.clear
        for v in out.column(name).to_pylist()
        if v is not None
    ]
    for value in protected:
        assert value not in cells, f"{dataset}/{purpose}: protected value {value!r} survived"
        if len(value) >= 6:
            assert not any(value in cell for cell in cells), f"{value!r} inside an output cell"

    for fp in plan.fields:
        if fp.action is Action.GENERALISED and fp.protection and fp.protection.step:
            step = fp.protection.step
            for before, after in zip(
                table.column(fp.field).to_pylist(), out.column(fp.field).to_pylist(), strict=True
            ):
                if before is None:
                    assert after is None
                    continue
                assert abs(after - before) <= step / 2 + 1e-9
                cell = (after - step / 2) / step
                assert math.isclose(cell, round(cell), abs_tol=1e-6), "not a grid-cell centre"


@SETTINGS
@given(values=st.lists(texts, min_size=1, max_size=20), key_a=keys, key_b=keys)
def test_pseudonyms_stable_within_a_tenant_and_different_across(
    values: list[str], key_a: TenantKey, key_b: TenantKey
) -> None:
    contract = REGISTRY.get("contacts")
    plan = plan_for(contract, "benchmarking")
    assert plan.action("name") is Action.PSEUDONYMISED
    rows = [
        {
            "contact_id": f"ct-{i}",
            "client_id": "kaveri",
            "branch_id": "kaveri-blr-001",
            "name": v,
            "mobile": "+919876543210",
            "email": None,
            "role": "branch_manager",
            "is_primary": True,
            "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
        for i, v in enumerate(values)
    ]
    table = _table(contract, rows)
    first = apply_plan(plan, table, key_a, contract).column("name").to_pylist()
    again = (
        apply_plan(plan, table.slice(0).take(list(reversed(range(len(values))))), key_a, contract)
        .column("name")
        .to_pylist()
    )
    assert first == list(reversed(again))  # same value, same pseudonym, wherever it is
    for value, alias in zip(values, first, strict=True):
        assert alias == pseudonym(key_a, "name", value)
        assert alias.startswith(PSEUDONYM_PREFIX)
        assert len(alias) == len(PSEUDONYM_PREFIX) + 32
    if key_a.secret != key_b.secret:
        other = apply_plan(plan, table, TenantKey("tenant-b", key_b.secret), contract)
        assert all(x != y for x, y in zip(first, other.column("name").to_pylist(), strict=True))


_protections = st.one_of(
    st.none(),
    st.just(Protection("drop")),
    st.builds(Protection, method=st.just("mask"), keep_last=st.integers(0, 4)),
    st.just(Protection("pseudonymise")),
)


@st.composite
def _synthetic_contract(draw: st.DrawFn) -> Contract:
    count = draw(st.integers(1, 8))
    fields = []
    for i in range(count):
        purposes = draw(st.frozensets(st.sampled_from(PURPOSES)))
        fields.append(
            Field(
                name=f"f{i}",
                description="",
                logical_type="string",
                physical_type="string",
                required=False,
                classification="personal",
                purposes=purposes,
                protection=draw(_protections),
            )
        )
    fields.append(
        Field(
            name="at",
            description="",
            logical_type="timestamp",
            physical_type="timestamp[us, UTC]",
            required=True,
            classification="personal",
            purposes=frozenset(),
            protection=Protection("generalise", grain="1h"),
        )
    )
    return Contract(
        id="synthetic",
        version="0.0.1",
        dataset="synthetic",
        path=Path("x"),
        purpose="",
        domain="",
        fields=tuple(fields),
        retention=Retention(1, 0, "delete", "at"),
        quality=(),
        extras={},
    )


@SETTINGS
@given(contract=_synthetic_contract(), data=st.data(), key=keys)
def test_any_contract_never_leaks_beyond_its_purposes(
    contract: Contract, data: st.DataObject, key: TenantKey
) -> None:
    purpose = data.draw(st.sampled_from(PURPOSES))
    table = _table(contract, data.draw(_rows(contract)))
    out = apply_plan(plan_for(contract, purpose), table, key, contract)
    for field in contract.fields:
        present = field.name in out.column_names
        if purpose in field.purposes:
            assert present
            assert out.column(field.name).equals(table.column(field.name))
        elif field.protection is None or field.protection.method == "drop":
            assert not present
        else:
            assert present
            assert field.name != "at" or all(
                v.minute == 0 and v.second == 0 for v in out.column("at").to_pylist()
            )


def test_unknown_purpose_is_refused() -> None:
    with pytest.raises(UnknownPurposeError, match="marketing"):
        plan_for(REGISTRY.get("contacts"), "marketing")


def test_undescribed_columns_fail_closed() -> None:
    contract = REGISTRY.get("clients")
    table = pa.table({"client_id": ["kaveri"], "ssn": ["123"]})
    with pytest.raises(PolicyError, match="ssn"):
        apply_plan(plan_for(contract, "benchmarking"), table, TenantKey("t", b"k" * 16), contract)


def test_short_keys_are_refused() -> None:
    with pytest.raises(PolicyError):
        TenantKey("t", b"short")
    assert "secret=<32 bytes>" in repr(TenantKey("t", b"x" * 32))


@given(value=st.text(max_size=40), keep=st.integers(0, 4))
def test_mask_keeps_at_most_a_third(value: str, keep: int) -> None:
    masked = mask_value(value, keep)
    assert len(masked) == len(value)
    kept = sum(a == b and a.isalnum() for a, b in zip(value, masked, strict=True))
    alnum = sum(c.isalnum() for c in value)
    assert kept <= alnum // 3
    if value:
        assert masked != value or set(value) == {"*"}


def test_docstring_examples() -> None:
    assert doctest.testmod(contracts.policy).failed == 0
