"""``energylake subject find | export | rectify`` on a lake from the simulator (issue 15,
points 5, 6 and 7), and the pieces they stand on."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audit.query import read_records
from contracts.lint import lint_file
from lake.delta import read_table
from lake.layout import table_rel
from lake.storage import Store
from landing.format import Envelope
from landing.reader import SegmentBytes, closed_segments, read_records_at, read_segment
from landing.writer import LandingWriter
from retention.erase import redact_segment, versioned_bucket
from retention.subject import Subject
from tests.retention.erasure_lake import EMAIL, MOBILE, NAME, TECH_ID, ErasureLake, build


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> ErasureLake:
    return build(tmp_path_factory.mktemp("requests") / "data")


def _bytes_under(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes().lower()]


def test_find_export_rectify(lake: ErasureLake, tmp_path: Path) -> None:
    # find: from any one identifier, the same places, widened through the rows
    by_mobile = lake.cli("subject", "find", "--mobile", "+91 98123-45670", "--json")
    assert by_mobile.exit_code == 0, by_mobile.output
    places = json.loads(by_mobile.output)["places"]
    tables = {p["table"]: p for p in places if p["place"] == "table"}
    assert tables[table_rel("kaveri", "contacts")]["rows_naming"] == 1
    assert tables[table_rel("kaveri", "work_orders")]["rows_naming"] == 1
    assert tables[table_rel("kaveri", "work_orders")]["rows_mentioning"] == 1
    assert tables[table_rel("sahyadri", "work_orders")]["rows_naming"] == 1
    assert tables[table_rel("kaveri", "quarantine")]["rows_mentioning"] == 1
    kinds = {p["place"] for p in places}
    assert {"raw segment", "extract", "reference source"} <= kinds
    assert any(p.get("as_pseudonym") for p in places if p["place"] == "extract")
    by_email = lake.cli("subject", "find", "--email", EMAIL.upper(), "--json")
    assert {p.get("table") or p["path"] for p in json.loads(by_email.output)["places"]} == {
        p.get("table") or p["path"] for p in places
    }
    by_tech = lake.cli("subject", "find", "--technician-id", TECH_ID, "--json")
    assert len(json.loads(by_tech.output)["places"]) == len(places)
    nobody = lake.cli("subject", "find", "--email", "nobody@nowhere.example", "--json")
    assert json.loads(nobody.output)["places"] == []
    two = lake.cli("subject", "find", "--email", EMAIL, "--mobile", MOBILE)
    assert two.exit_code == 2
    # every request is audited under a keyed digest, never an identifier
    log = lake.data_dir / "audit" / "subjects"
    records = list(read_records(log))
    assert [r["event"] for r in records].count("SUBJECT_FIND") == 4
    assert all(r["subject"].split(":")[1].startswith("subj_") for r in records)
    assert _bytes_under(log, NAME.lower().encode()) == []
    assert _bytes_under(log, MOBILE[3:].encode()) == []

    # export: per dataset JSON and Parquet, and the manifest
    out = tmp_path / "package"
    exported = lake.cli("subject", "export", "--mobile", MOBILE, "--out", str(out))
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"contacts", "work_orders"}
    contacts = manifest["datasets"]["contacts"]
    assert contacts["rows"] == 1
    assert contacts["retention"]["hot_days"] == 730
    assert contacts["purposes"]["mobile"] == ["field_service"]
    assert contacts["categories"]["email"]["classification"] == "personal"
    assert "ops.fs" in contacts["recipients"]  # granted field_service on kaveri
    assert contacts["source"]["tables"][0]["table"] == table_rel("kaveri", "contacts")
    orders = pq.read_table(out / "work_orders.parquet")
    assert sorted(orders.column("ticket_id").to_pylist()) == sorted(lake.tickets)
    assert set(orders.column("technician_phone").to_pylist()) == {MOBILE}
    rows = json.loads((out / "contacts.json").read_text())
    assert rows[0]["email"] == EMAIL
    assert {p["place"] for p in manifest["other_places"]} >= {"raw segment", "extract"}

    # rectify: the new mobile everywhere the person's rows hold one, the old one purged
    bad = lake.cli("subject", "rectify", "--mobile", MOBILE, "--set", "mobile=12345")
    assert bad.exit_code == 2
    new = "+919800000001"
    fixed = lake.cli("subject", "rectify", "--mobile", MOBILE, "--set", f"mobile={new}")
    assert fixed.exit_code == 0, fixed.output
    contacts_rows = read_table(lake.store, table_rel("kaveri", "contacts")).to_pylist()
    assert [r["mobile"] for r in contacts_rows if r["contact_id"] == lake.contact_id] == [new]
    for tenant in ("kaveri", "sahyadri"):
        orders_rows = read_table(lake.store, table_rel(tenant, "work_orders")).to_pylist()
        phones = {r["technician_phone"] for r in orders_rows if r["ticket_id"] in lake.tickets}
        assert phones == {new}
        for dataset in ("contacts", "work_orders"):
            folder = Path(lake.store.url(table_rel(tenant, dataset)))
            assert _bytes_under(folder, MOBILE[1:].encode()) == []  # files and log history


def test_a_segment_is_redacted_in_place_with_valid_frames(tmp_path: Path) -> None:
    envelopes = [
        Envelope(1, "mqtt", "t/a", "dev-a", b'{"who": "Zarina VASQUEZ-iyer"}'),
        Envelope(2, "http", "t/b", "dev-b", b'{"call": "+91 98123-45670", "x": 1}'),
        Envelope(3, "mqtt", "t/c", "dev-c", b'{"nobody": true}'),
    ]
    with LandingWriter(tmp_path, "t", clock=None) as writer:
        refs = writer.append_many(envelopes)
    (segment,) = closed_segments(tmp_path)
    data = segment.read_bytes()
    subject = Subject.start("name", NAME)
    subject.add("mobile", MOBILE)
    redacted, changed = redact_segment(data, subject.matcher())
    assert changed == 2
    assert len(redacted) == len(data)
    records = read_segment(SegmentBytes(segment.name, redacted))
    assert records.damage is None  # every frame's CRC checks
    payloads = [e.payload for e in records.envelopes()]
    assert payloads[2] == envelopes[2].payload
    assert b"zarina" not in payloads[0].lower()
    assert b"45670" not in payloads[1]
    assert payloads[0].count(b"*") == len(NAME)
    # records stay where they were: quarantine rows' offsets still point at them
    again = read_records_at(SegmentBytes(segment.name, redacted), [r.offset for r in refs])
    assert [e.topic for e in again] == ["t/a", "t/b", "t/c"]


def test_contracts_must_say_what_erasure_does(tmp_path: Path) -> None:
    source = Path("contracts/contacts.odcs.yaml").read_text()
    missing = tmp_path / "contacts.odcs.yaml"
    missing.write_text(source.replace("  - property: erasure\n    value: {rows: delete}\n", ""))
    assert "E039" in {i.code for i in lint_file(missing)}
    wrong = tmp_path / "wrong" / "contacts.odcs.yaml"
    wrong.parent.mkdir()
    wrong.write_text(
        source.replace("value: {rows: delete}", "value: {rows: keep, clear: [contact_id]}").replace(
            "{property: identifies, value: mobile}", "{property: identifies, value: phone}"
        )
    )
    codes = [i.code for i in lint_file(wrong)]
    assert codes.count("E039") == 1  # contact_id is required: it cannot be cleared
    assert "E038" in codes


def test_a_versioned_bucket_is_named_as_a_residue(s3_store: Store) -> None:
    """On a bucket that keeps versions a delete leaves the old bytes: the check an erasure
    makes before it calls the bucket proven (a versioned bucket is a residue)."""
    assert versioned_bucket(s3_store) is False
    s3_store.boto3_client().put_bucket_versioning(
        Bucket=s3_store.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    assert versioned_bucket(s3_store) is True
