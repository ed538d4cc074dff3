"""Property: whatever an analyst asks, no result holds a raw value of a field its purpose
may not see in clear, nor anything of a tenant or branch it was not granted.

Hypothesis draws principals (one tenant, every tenant, one branch) and purposes, and for
each session queries over its views: projections, filters (probing with the raw values
it must not learn), joins, aggregates (string_agg and list included) and window functions.
What must never appear is computed from the RAW lake and the contracts alone, never from
what the session shows (a check that read the session's own views would bless whatever
leaked): the raw values of every string field the purpose does not see in clear, and the
identifiers (client, branch, device) of the rows outside the grant, less whatever the
purpose sees in clear in the granted rows (a device id in a clear payload of the tenant's
own quarantine is its own). A probe (``count(*)`` where a protected column equals or
contains a forbidden value) must find nothing.

The two tests at the end switch one protection off (the mask; the branch filter) and
show that the same check then fails: the property can fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts.policy as policy
from analytics.access import Session
from contracts.policy import Action, plan_for
from lake.delta import read_table, table_exists
from lake.layout import clients_rel, table_rel
from tests.analytics.conftest import GovernedLake

PURPOSES = (
    "energy_monitoring",
    "predictive_maintenance",
    "benchmarking",
    "visualisation",
    "field_service",
    "product_improvement",
    "regulatory_reporting",
)
IDENTITY_COLUMNS = ("client_id", "branch_id", "device_id")
MIN_SUBSTRING = 6  # shorter forbidden values are checked for equality only
QUERIES = int(os.environ.get("ENERGYLAKE_TEST_QUERIES", "10000"))
PER_EXAMPLE = 10
_PROBED = (Action.PSEUDONYMISED, Action.MASKED)


@dataclass(frozen=True, slots=True)
class Scope:
    """Who asks: tenants (one, or every tenant), maybe one branch, and the purpose."""

    tenants: tuple[str, ...]
    branch: str | None
    purpose: str
    everyone: bool = False

    @property
    def principal(self) -> str:
        who = "all" if self.everyone else "-".join(self.tenants)
        return f"prop.{who}.{self.branch or 'any'}.{self.purpose}"[:64].replace("_", "-")


@dataclass(slots=True)
class Case:
    session: Session
    forbidden: frozenset[str]
    long_forbidden: tuple[str, ...]
    probes: dict[str, list[str]]  # view -> its columns that are not clear (probe targets)
    views: dict[str, pa.Schema]


_RAW: dict[tuple[str, str], dict[str, pa.Table]] = {}


def _raw(lake: GovernedLake, dataset: str) -> dict[str, pa.Table]:
    """Every tenant's raw rows of a dataset, by tenant (read once per lake)."""
    key = (lake.store.uri, dataset)
    if key not in _RAW:
        _RAW[key] = _read_raw(lake, dataset)
    return _RAW[key]


def _read_raw(lake: GovernedLake, dataset: str) -> dict[str, pa.Table]:
    out = {}
    for tenant in lake.tenants:
        rel = clients_rel() if dataset == "clients" else table_rel(tenant, dataset)
        if table_exists(lake.store, rel):
            table = read_table(lake.store, rel)
            out[tenant] = table.filter(pc.field("client_id") == tenant)
    return out


def _strings(table: pa.Table, columns: list[str]) -> set[str]:
    found: set[str] = set()
    for name in columns:
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found.update(v for v in column.to_pylist() if v)
    return found


def _granted(table: pa.Table, scope: Scope) -> pa.Table:
    if scope.branch is None or "branch_id" not in table.column_names:
        return table
    return table.filter(pc.field("branch_id") == scope.branch)


def _withheld(table: pa.Table, scope: Scope) -> pa.Table:
    if scope.branch is None or "branch_id" not in table.column_names:
        return table.slice(0, 0)
    return table.filter(pc.field("branch_id") != scope.branch)


def _forbidden(lake: GovernedLake, scope: Scope) -> frozenset[str]:
    """From the raw lake and the contracts only (see the module docstring)."""
    hidden: set[str] = set()
    clear: set[str] = set()
    for contract in lake.registry:
        plan = plan_for(contract, scope.purpose)
        offered = bool(plan.clear) and (scope.branch is None or "branch_id" in contract.field_names)
        by_tenant = _raw(lake, contract.dataset)
        clear_columns = [p.field for p in plan.fields if p.action is Action.CLEAR]
        other_columns = [p.field for p in plan.fields if p.action is not Action.CLEAR]
        for tenant, rows in by_tenant.items():
            identity = [c for c in IDENTITY_COLUMNS if c in rows.column_names]
            present = set(rows.column_names)
            if tenant not in scope.tenants:
                hidden |= _strings(rows, identity)
                continue
            hidden |= _strings(_withheld(rows, scope), identity)
            granted = _granted(rows, scope)
            hidden |= _strings(granted, [c for c in other_columns if c in present])
            if offered:
                clear |= _strings(granted, [c for c in clear_columns if c in present])
    text = "\x00".join(clear)
    return frozenset(v for v in hidden - clear if v not in text)


_CASES: dict[Scope, Case] = {}


def _clear_cases() -> None:
    for case in _CASES.values():
        case.session.close()
    _CASES.clear()


def _case(lake: GovernedLake, scope: Scope) -> Case:
    if scope not in _CASES:
        _CASES[scope] = _new_case(lake, scope)
    return _CASES[scope]


def _new_case(lake: GovernedLake, scope: Scope) -> Case:
    tenants = ["*"] if scope.everyone else list(scope.tenants)
    branches = [scope.branch] if scope.branch else []
    lake.book().grant(
        scope.principal, tenants=tenants, purposes=[scope.purpose], branches=branches, actor="prop"
    )
    session = lake.session(scope.principal, scope.purpose)
    forbidden = _forbidden(lake, scope)
    probes = {
        name: [
            p.field for p in view.plan.fields if p.action in (Action.PSEUDONYMISED, Action.MASKED)
        ]
        for name, view in session.views.items()
    }
    views = {name: session.schema(name) for name in session.views}
    return Case(
        session,
        forbidden,
        tuple(v for v in forbidden if len(v) >= MIN_SUBSTRING),
        probes,
        views,
    )


def _scopes(lake: GovernedLake) -> st.SearchStrategy[Scope]:
    mine, other = lake.tenants
    return st.one_of(
        st.builds(
            Scope, st.sampled_from([(mine,), (other,)]), st.none(), st.sampled_from(PURPOSES)
        ),
        st.builds(
            Scope,
            st.just((mine,)),
            st.sampled_from(lake.branches[mine]),
            st.sampled_from(PURPOSES),
        ),
        st.builds(
            Scope,
            st.just((mine, other)),
            st.none(),
            st.sampled_from(PURPOSES),
            st.just(True),
        ),
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _is_text(schema: pa.Schema, column: str) -> bool:
    return bool(pa.types.is_string(schema.field(column).type))


@st.composite
def _query(draw: st.DrawFn, case: Case) -> tuple[str, bool]:
    """A statement over the case's views, and whether it is a probe (must count 0)."""
    names = sorted(case.views)
    pool = sorted(case.forbidden)
    kind = draw(st.sampled_from(["probe", "select", "aggregate", "join", "window"]))
    probed = [n for n in names if any(_is_text(case.views[n], c) for c in case.probes[n])]
    view = draw(st.sampled_from(probed if kind == "probe" and probed else names))
    schema = case.views[view]
    columns = schema.names
    targets = [c for c in case.probes.get(view, []) if _is_text(schema, c)]
    if kind == "probe" and targets and pool:
        column = draw(st.sampled_from(targets))
        value = draw(st.sampled_from(pool))
        form = draw(st.sampled_from(["eq", "like", "in", "case", "prefix"]))
        if form == "eq":
            where = f"{_q(column)} = {_lit(value)}"
        elif form == "like":
            where = f"{_q(column)} LIKE {_lit('%' + value[-8:] + '%')}"
        elif form == "in":
            where = f"{_q(column)} IN ({_lit(value)}, {_lit(value.upper())})"
        elif form == "prefix":
            where = f"starts_with({_q(column)}, {_lit(value[:5])}) AND {_q(column)} = {_lit(value)}"
        else:
            return (
                f"SELECT coalesce(sum(CASE WHEN {_q(column)} = {_lit(value)} THEN 1 ELSE 0 END), 0)"
                f" AS hits FROM {_q(view)}",
                True,
            )
        return f"SELECT count(*) AS hits FROM {_q(view)} WHERE {where}", True
    picked = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=4, unique=True))
    where = ""
    if draw(st.booleans()):
        column = draw(st.sampled_from(columns))
        if _is_text(schema, column) and pool and draw(st.booleans()):
            where = f" WHERE {_q(column)} <> {_lit(draw(st.sampled_from(pool)))}"
        else:
            where = f" WHERE {_q(column)} IS NOT NULL"
    if kind == "aggregate":
        column = draw(st.sampled_from(columns))
        fn = draw(
            st.sampled_from(
                [
                    "count(DISTINCT {c})",
                    "min({c})",
                    "max({c})",
                    "string_agg(CAST({c} AS VARCHAR), ',')",
                    "list({c})",
                    "any_value({c})",
                    "arg_max({c}, {c})",
                ]
            )
        )
        group = draw(st.sampled_from(columns))
        return (
            f"SELECT {_q(group)}, {fn.format(c=_q(column))} AS v FROM {_q(view)}{where}"
            f" GROUP BY {_q(group)} ORDER BY 1 LIMIT 50",
            False,
        )
    if kind == "join":
        other = draw(st.sampled_from(names))
        common = [c for c in columns if c in case.views[other].names and c in IDENTITY_COLUMNS]
        if common:
            key = draw(st.sampled_from(common))
            cols = ", ".join(f"a.{_q(c)}" for c in picked)
            extra = draw(st.sampled_from(case.views[other].names))
            return (
                f"SELECT {cols}, b.{_q(extra)} FROM {_q(view)} a JOIN {_q(other)} b"
                f" USING ({_q(key)}) LIMIT 200",
                False,
            )
    if kind == "window":
        order = draw(st.sampled_from(columns))
        part = draw(st.sampled_from(columns))
        target = draw(st.sampled_from(columns))
        return (
            f"SELECT {_q(target)}, lag({_q(target)}) OVER (PARTITION BY {_q(part)}"
            f" ORDER BY {_q(order)}) AS prev, first_value({_q(target)}) OVER"
            f" (PARTITION BY {_q(part)} ORDER BY {_q(order)}) AS head FROM {_q(view)}{where}"
            " LIMIT 200",
            False,
        )
    return f"SELECT {', '.join(map(_q, picked))} FROM {_q(view)}{where} LIMIT 200", False


def _cells(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _cells(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _cells(item)


def _leaks(case: Case, result: pa.Table) -> list[str]:
    cells = [cell for row in result.to_pylist() for cell in _cells(list(row.values()))]
    found = [cell for cell in cells if cell in case.forbidden]
    text = "\x00".join(c for c in cells if len(c) >= MIN_SUBSTRING)
    if text:
        found.extend(v for v in case.long_forbidden if v in text)
    return found


def _check(case: Case, statement: str, probe: bool) -> None:
    result = case.session.sql(statement)
    leaks = _leaks(case, result)
    assert not leaks, f"{statement}\nleaked: {sorted(set(leaks))[:5]}"
    if probe:
        assert result.column(0).to_pylist() == [0], statement


@pytest.mark.slow
def test_no_query_learns_what_its_grant_and_purpose_withhold(governed_lake: GovernedLake) -> None:
    """QUERIES statements: examples of PER_EXAMPLE statements each (one session per example:
    hypothesis's own work per example is then spread over several statements)."""
    lake = governed_lake
    counted = {"queries": 0, "probes": 0}

    @settings(
        max_examples=QUERIES // PER_EXAMPLE,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        scope = data.draw(_scopes(lake))
        case = _case(lake, scope)
        for _ in range(PER_EXAMPLE):
            statement, probe = data.draw(_query(case))
            _check(case, statement, probe)
            counted["queries"] += 1
            counted["probes"] += probe

    try:
        run()
    finally:
        sessions = len(_CASES)
        _clear_cases()
    print(f"{counted['queries']} queries ({counted['probes']} probes) in {sessions} sessions")
    assert counted["queries"] >= QUERIES
    assert counted["probes"] > QUERIES // 50


def _leak_found(lake: GovernedLake, scope: Scope, examples: int) -> bool:
    """Run the same property for one scope; True when it fails."""
    _clear_cases()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = _case(lake, scope)
        statement, probe = data.draw(_query(case))
        _check(case, statement, probe)

    try:
        run()
    except AssertionError:
        return True
    finally:
        _clear_cases()
    return False


def test_the_check_fails_when_the_mask_is_switched_off(
    governed_lake: GovernedLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = Scope((governed_lake.tenants[0],), None, "benchmarking")
    assert not _leak_found(governed_lake, scope, 300)
    monkeypatch.setattr(policy, "mask_value", lambda value, keep_last: value)
    assert _leak_found(governed_lake, scope, 300)


def test_the_check_fails_when_the_branch_filter_is_switched_off(
    governed_lake: GovernedLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = governed_lake
    scope = Scope((lake.tenants[0],), lake.branches[lake.tenants[0]][0], "energy_monitoring")
    assert not _leak_found(lake, scope, 300)
    original = Session._bounds

    def no_branch(
        self: Session, contract: Any, tenant: str | None, read: Any
    ) -> list[tuple[str, str, Any]]:
        return [b for b in original(self, contract, tenant, read) if b[0] != "branch_id"]

    monkeypatch.setattr(Session, "_bounds", no_branch)
    assert _leak_found(lake, scope, 300)
