"""Governed sessions over a real processed lake: rows of the principal's tenants and
branches only, every column shaped for the one purpose (before any predicate runs),
pseudonyms joinable across datasets, and an access record for every session, statement
and denied attempt, written before the result is returned."""

from __future__ import annotations

import hashlib
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest

from analytics.access import connect
from analytics.errors import AccessDeniedError, GrantError, QueryError
from analytics.grants import GrantBook
from analytics.objections import ObjectionRegister
from audit.query import read_records
from contracts import UnknownPurposeError, load_registry
from lake.delta import read_table
from lake.layout import table_rel
from lake.storage import Store
from tests.analytics.conftest import GovernedLake


def _records(lake: GovernedLake) -> list[dict[str, Any]]:
    """The access log's records, oldest first, as ``energylake audit log`` reads them."""
    return list(read_records(lake.audit_dir))


def _raw(lake: GovernedLake, tenant: str, dataset: str, column: str) -> list[Any]:
    values: list[Any] = read_table(lake.store, table_rel(tenant, dataset), columns=[column])[
        column
    ].to_pylist()
    return values


def test_a_purpose_sees_each_column_as_its_contract_says(governed_lake: GovernedLake) -> None:
    lake = governed_lake
    tenant = lake.tenants[0]
    lake.book().grant(
        "asha", tenants=[tenant], purposes=["field_service", "benchmarking"], actor="test"
    )
    phones = {p for p in _raw(lake, tenant, "work_orders", "technician_phone") if p}
    assert phones
    with lake.session("asha", "field_service") as clear:
        seen = clear.sql("SELECT DISTINCT technician_phone FROM work_orders")
        assert set(seen["technician_phone"].to_pylist()) - {None} == phones
    with lake.session("asha", "benchmarking") as shaped:
        got = shaped.sql("SELECT technician_phone, technician_name, device_id FROM work_orders")
        masked = set(got["technician_phone"].to_pylist()) - {None}
        assert masked
        assert not masked & phones
        assert all(p.count("*") >= len(p) - 3 for p in masked)  # at most the last 2 digits
        assert all(n.startswith("ps_") for n in got["technician_name"].to_pylist() if n)
        assert all(d.startswith("ps_") for d in got["device_id"].to_pylist() if d)
        # Dropped fields are not there at all.
        with pytest.raises(QueryError, match="notes"):
            shaped.sql("SELECT notes FROM work_orders")
        # Mask before filter: the raw value matches nothing.
        phone = sorted(phones)[0]
        hits = shaped.sql(
            f"SELECT count(*) AS n FROM work_orders WHERE technician_phone = '{phone}'"
        )
        assert hits["n"].to_pylist() == [0]
        probe = shaped.sql(
            f"SELECT count(*) AS n FROM work_orders WHERE technician_phone LIKE '%{phone[-6:]}%'"
        )
        assert probe["n"].to_pylist() == [0]
        # Pseudonyms join across datasets of the tenant (same key, same domain).
        joined = shaped.sql(
            "SELECT count(*) AS n FROM work_orders w JOIN devices d USING (device_id)"
        )
        assert joined["n"].to_pylist()[0] > 0


def test_rows_are_the_principals_tenants_and_branches_only(governed_lake: GovernedLake) -> None:
    lake = governed_lake
    mine, other = lake.tenants
    branch = lake.branches[mine][0]
    lake.book().grant(
        "ravi", tenants=[mine], purposes=["energy_monitoring"], branches=[branch], actor="test"
    )
    with lake.session("ravi", "energy_monitoring") as session:
        assert "clients" not in session.views  # no branch column: not for a branch-bound grant
        rows = session.sql("SELECT DISTINCT client_id, branch_id FROM meter_readings")
        assert rows.to_pylist() == [{"client_id": mine, "branch_id": branch}]
        everything = session.sql(
            "SELECT (SELECT count(*) FROM meter_readings) AS m, (SELECT count(*) FROM devices) AS d"
        ).to_pylist()[0]
        raw = read_table(lake.store, table_rel(mine, "meter_readings"), columns=["branch_id"])
        assert everything["m"] == pc.sum(pc.equal(raw["branch_id"], branch)).as_py()
        assert everything["d"] > 0
    lake.book().grant("staff", tenants=["*"], purposes=["energy_monitoring"], actor="test")
    with lake.session("staff", "energy_monitoring") as session:
        both = session.sql("SELECT DISTINCT client_id FROM meter_readings ORDER BY 1")
        assert both["client_id"].to_pylist() == sorted([mine, other])
    with lake.session("staff", "energy_monitoring", tenant=other) as session:
        one = session.sql("SELECT DISTINCT client_id FROM clients")
        assert one["client_id"].to_pylist() == [other]


def test_every_statement_leaves_a_record_before_its_result(governed_lake: GovernedLake) -> None:
    lake = governed_lake
    tenant = lake.tenants[0]
    lake.book().grant("meera", tenants=[tenant], purposes=["benchmarking"], actor="test")
    statement = "SELECT count(*) AS n FROM work_orders WHERE technician_phone = '+919812345678'"
    before = len(_records(lake))
    with lake.session("meera", "benchmarking") as session:
        session_id = session.id
        result = session.sql(statement)
        # The record is on disk now, while the caller holds the result.
        records = _records(lake)[before:]
        query = [r for r in records if r["event"] == "query"][-1]
        assert query["principal"] == "meera"
        assert query["purpose"] == "benchmarking"
        assert query["tenants"] == [tenant]
        assert query["outcome"] == "ok"
        assert query["rows"] == result.num_rows == 1
        assert "+919812345678" not in orjson.dumps(query).decode()
        assert query["sql_redacted"] == (
            "SELECT count(*) AS n FROM work_orders WHERE technician_phone = ?"
        )
        assert query["sql_sha256"] == hashlib.sha256(statement.encode()).hexdigest()
        assert query["datasets"] == [
            {
                "dataset": "work_orders",
                "table": table_rel(tenant, "work_orders"),
                "version": query["datasets"][0]["version"],
                "contract": lake.registry.get("work_orders").ref,
                "objected_rows_left_out": 0,
                # Only the column the statement names was read (no bound on a masked one).
                "read": {"columns": ["technician_phone"], "since": None, "until": None, "keys": {}},
            }
        ]
        assert isinstance(query["datasets"][0]["version"], int)
        actions = {c["column"]: c["action"] for c in query["columns"]}
        assert actions["technician_phone"] == "masked"
        assert actions["notes"] == "dropped"
        assert actions["status"] == "clear"
        assert query["duration_ms"] >= 0
        with pytest.raises(QueryError):
            session.sql("SELECT no_such_column FROM work_orders WHERE x = 'secret-literal'")
    records = _records(lake)[before:]
    events = [r["event"] for r in records if r.get("session") == session_id]
    assert events == ["session_open", "query", "query", "session_close"]
    failed = [r for r in records if r["event"] == "query"][-1]
    assert failed["outcome"] == "error"
    assert "secret-literal" not in orjson.dumps(failed).decode()


def test_denied_attempts_are_refused_and_recorded(
    governed_lake: GovernedLake, tmp_path: Path
) -> None:
    lake = governed_lake
    mine, other = lake.tenants
    lake.book().grant("kiran", tenants=[mine], purposes=["benchmarking"], actor="test")
    token_file = tmp_path / "svc.token"
    lake.book().grant(
        "svc.reports",
        tenants=[mine],
        purposes=["regulatory_reporting"],
        token_file=token_file,
        actor="test",
    )
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    stored = b"".join(lake.store.get_bytes(r) or b"" for r in lake.store.list("_access"))
    assert token.encode() not in stored  # only its hash is kept
    before = len(_records(lake))
    attempts = [
        ({"principal": "nobody", "purpose": "benchmarking"}, "no_grant"),
        ({"principal": "kiran", "purpose": "field_service"}, "purpose_not_granted"),
        ({"principal": "kiran", "purpose": "benchmarking", "tenant": other}, "tenant_not_granted"),
        ({"principal": "svc.reports", "purpose": "regulatory_reporting"}, "bad_token"),
        (
            {"principal": "svc.reports", "purpose": "regulatory_reporting", "token": "guess"},
            "bad_token",
        ),
    ]
    for kwargs, reason in attempts:
        principal, purpose = kwargs.pop("principal"), kwargs.pop("purpose")
        with pytest.raises(AccessDeniedError) as denied:
            lake.session(principal, purpose, **kwargs)
        assert denied.value.reason == reason
        assert denied.value.exit_code == 6
    with pytest.raises(UnknownPurposeError):
        lake.session("kiran", "marketing")
    records = _records(lake)[before:]
    assert [r["reason"] for r in records] == [r for _, r in attempts] + ["unknown_purpose"]
    assert all(r["outcome"] == "denied" for r in records)
    assert all(token not in orjson.dumps(r).decode() for r in records)
    with lake.session("svc.reports", "regulatory_reporting", token=token) as session:
        assert session.sql("SELECT count(*) AS n FROM meter_readings")["n"].to_pylist()[0] > 0


def test_grants_name_only_what_exists(governed_lake: GovernedLake, tmp_path: Path) -> None:
    book = governed_lake.book()
    tenant = governed_lake.tenants[0]
    other_branch = governed_lake.branches[governed_lake.tenants[1]][0]
    with pytest.raises(GrantError, match="unknown tenant nope"):
        book.grant("x1", tenants=["nope"], purposes=["benchmarking"], actor="t")
    with pytest.raises(GrantError, match="unknown purpose marketing"):
        book.grant("x1", tenants=[tenant], purposes=["marketing"], actor="t")
    with pytest.raises(GrantError, match=f"unknown branch {other_branch}"):
        book.grant(
            "x1", tenants=[tenant], purposes=["benchmarking"], branches=[other_branch], actor="t"
        )
    with pytest.raises(GrantError, match="principal"):
        book.grant("Bad Name", tenants=[tenant], purposes=["benchmarking"], actor="t")
    with pytest.raises(GrantError, match="stands alone"):
        book.grant("x1", tenants=["*", tenant], purposes=["benchmarking"], actor="t")
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(GrantError, match="exists"):
        book.grant("x1", tenants=[tenant], purposes=["benchmarking"], token_file=taken, actor="t")
    assert book.load().get("x1") is None  # nothing half-made
    book.grant("x2", tenants=[tenant], purposes=["benchmarking", "field_service"], actor="t")
    left = book.revoke("x2", purposes=["benchmarking"], actor="t")
    assert left is not None
    assert left.purposes == {"field_service"}
    with pytest.raises(GrantError, match="has no purpose"):
        book.revoke("x2", purposes=["benchmarking"], actor="t")
    assert book.revoke("x2", actor="t") is None
    assert book.load().get("x2") is None


def test_a_session_window_bounds_the_readings(governed_lake: GovernedLake) -> None:
    lake = governed_lake
    tenant = lake.tenants[0]
    lake.book().grant("tara", tenants=[tenant], purposes=["energy_monitoring"], actor="test")
    ts = read_table(lake.store, table_rel(tenant, "meter_readings"), columns=["ts"])["ts"]
    low, high = pc.min(ts).as_py(), pc.max(ts).as_py()
    middle = low + (high - low) / 2
    with lake.session("tara", "energy_monitoring", since=middle) as session:
        got = session.sql("SELECT min(ts) AS lo, count(*) AS n FROM meter_readings").to_pylist()[0]
    assert got["lo"] >= middle
    assert 0 < got["n"] < len(ts)
    with pytest.raises(AccessDeniedError, match="before"):
        lake.session("tara", "energy_monitoring", since=middle, until=middle)


def test_an_objection_removes_the_subjects_rows_from_that_purpose(
    governed_lake: GovernedLake,
) -> None:
    lake = governed_lake
    tenant = lake.tenants[0]
    lake.book().grant(
        "nila", tenants=[tenant], purposes=["benchmarking", "field_service"], actor="test"
    )
    technicians = [t for t in _raw(lake, tenant, "work_orders", "technician_id") if t]
    technician = max(set(technicians), key=technicians.count)
    theirs, total = (
        technicians.count(technician),
        len(_raw(lake, tenant, "work_orders", "ticket_id")),
    )
    register = ObjectionRegister(lake.store, lake.registry, lake.keys, lake.audit())
    later = datetime.now(UTC) + timedelta(days=1)
    register.record(
        tenant=tenant,
        kind="technician",
        subject_id=technician,
        purpose="benchmarking",
        actor="dpo",
        since=later,
    )
    count = "SELECT count(*) AS n FROM work_orders"
    with lake.session("nila", "benchmarking") as session:  # not in effect yet
        assert session.sql(count)["n"].to_pylist() == [total]
    register.withdraw(
        tenant=tenant,
        kind="technician",
        subject_id=technician,
        purpose="benchmarking",
        actor="dpo",
    )
    register.record(
        tenant=tenant,
        kind="technician",
        subject_id=technician,
        purpose="benchmarking",
        actor="dpo",
    )
    stored = b"".join(lake.store.get_bytes(r) or b"" for r in lake.store.list("_access"))
    assert technician.encode() not in stored  # the register keeps a pseudonym only
    before = len(_records(lake))
    with lake.session("nila", "benchmarking") as session:
        assert session.sql(count)["n"].to_pylist() == [total - theirs]
    query = next(r for r in _records(lake)[before:] if r["event"] == "query")
    assert query["datasets"][0]["objected_rows_left_out"] == theirs
    with lake.session("nila", "field_service") as session:  # another purpose: unaffected
        assert session.sql(count)["n"].to_pylist() == [total]
        shown = session.sql(
            f"SELECT count(*) AS n FROM work_orders WHERE technician_id = '{technician}'"
        )
        assert shown["n"].to_pylist() == [theirs]
    assert register.withdraw(
        tenant=tenant,
        kind="technician",
        subject_id=technician,
        purpose="benchmarking",
        actor="dpo",
    )
    with lake.session("nila", "benchmarking") as session:
        assert session.sql(count)["n"].to_pylist() == [total]


def test_a_lake_that_cannot_be_read_is_recorded_as_an_error(
    governed_lake: GovernedLake, tmp_path: Path
) -> None:
    """A copy of the lake with one data file of a table gone: the statement fails, and
    the failure is in the access log like any other statement's."""
    lake = governed_lake
    tenant = lake.tenants[0]
    root = tmp_path / "lake"
    shutil.copytree(lake.store.url(), root)
    store = Store.from_uri(str(root))
    victim = next((root / table_rel(tenant, "devices")).rglob("*.parquet"))
    victim.unlink()
    GrantBook(store, lake.registry, lake.audit()).grant(
        "broken.reader", tenants=[tenant], purposes=["energy_monitoring"], actor="test"
    )
    before = len(_records(lake))
    with (
        connect(
            store,
            load_registry(),
            lake.keys,
            lake.audit(),
            principal="broken.reader",
            purpose="energy_monitoring",
        ) as session,
        pytest.raises(Exception, match=victim.name),
    ):
        session.sql("SELECT count(*) FROM devices")
    failed = [r for r in _records(lake)[before:] if r["event"] == "query"]
    assert [r["outcome"] for r in failed] == ["error"]
