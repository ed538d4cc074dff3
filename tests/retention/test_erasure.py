"""Erasure to zero bytes, proven by reading every byte (issue 15, points 8 and 9).

The lake (``erasure_lake``) is built from the simulator with one person planted in every
place a person can be. ``energylake subject erase --apply`` runs through the CLI; then
this test reads every file under the data folder -- and, in the S3 variant, every object
of the bucket -- with its own scanner (raw bytes in any case, decoded Parquet values and
footer statistics, gzip, file and folder names) and finds none of the person's
identifiers in any form: clear, pseudonym, upper case, the mobile with spaces. Every other
person is intact, readings and their energy totals are unchanged, and DuckDB, polars and
pyarrow read every table.
"""

from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from audit.query import read_records
from lake.delta import read_table, table_exists
from lake.duck import connect as duck_connect
from lake.layout import table_rel
from lake.storage import Store
from retention.areas import uncovered
from tests.conftest import S3_ENV
from tests.retention.erasure_lake import (
    MOBILE,
    ErasureLake,
    build,
    environment,
)

TENANTS = ("kaveri", "sahyadri")
READINGS = ("meter_readings", "dg_readings", "solar_readings")


def _values(data: bytes) -> str:
    """Every decoded value and footer statistic of a Parquet file, as text."""
    parquet = pq.ParquetFile(io.BytesIO(data))
    parts = []
    for g in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(g)
        for c in range(group.num_columns):
            stats = group.column(c).statistics
            if stats is not None and stats.has_min_max:
                parts.append(f"{stats.min} {stats.max}")
    for column in parquet.read().columns:
        parts.extend(str(v) for v in column.to_pylist())
    return "\n".join(parts)


def _residues(files: dict[str, bytes], forms: list[str]) -> list[tuple[str, str, str]]:
    """(file, form found, where) for every form in any file's name, bytes or values."""
    found: list[tuple[str, str, str]] = []
    for name, data in files.items():
        texts = {"name": name.lower(), "bytes": data.decode("latin-1").lower()}
        if data[:4] == b"PAR1":
            texts["parquet values"] = _values(data).lower()
        if data[:2] == b"\x1f\x8b":
            texts["gzip"] = gzip.decompress(data).decode("latin-1").lower()
        for where, text in texts.items():
            found.extend((name, form, where) for form in forms if form in text)
    return found


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _bucket_files(store: Store) -> dict[str, bytes]:
    return {rel: store.get_bytes(rel) or b"" for rel in store.list("")}


def _snapshot(lake: ErasureLake) -> dict[str, Any]:
    store = lake.store
    snap: dict[str, Any] = {}
    for tenant in TENANTS:
        for dataset in READINGS:
            rows = read_table(store, table_rel(tenant, dataset))
            energy = [c for c in rows.column_names if c.endswith("_kwh")]
            snap[f"{tenant}/{dataset}"] = (
                rows.num_rows,
                {c: round(float(pc.sum(rows.column(c)).as_py() or 0.0), 6) for c in energy},
            )
        for dataset in ("contacts", "work_orders", "quarantine"):
            rows = read_table(store, table_rel(tenant, dataset))
            snap[f"{tenant}/{dataset}"] = sorted(rows.to_pylist(), key=lambda r: str(r))
    return snap


def receipt_tables(receipt: dict[str, Any]) -> set[str]:
    return {p["path"] for p in receipt["places"] if p["place"] == "table"}


def _run_erasure(lake: ErasureLake, *, on_s3: bool) -> None:
    before = _snapshot(lake)
    forms = lake.forms()
    # the premise: before the erasure, every kind of place holds the person
    pre = _local_files(lake.data_dir) | (_bucket_files(lake.store) if on_s3 else {})
    places = {name.split("/")[0] for name, _form, _w in _residues(pre, forms)}
    assert {"sim", "extracts", "quality", "logs"} <= places
    held = {name for name, _form, _w in _residues(pre, forms)}
    assert any("_access/objections" in name for name in held)
    where = {w for _n, _f, w in _residues(pre, forms)}
    assert "parquet values" in where

    found = lake.cli("subject", "find", "--mobile", MOBILE, "--json")
    assert found.exit_code == 0, found.output
    kinds = {p["place"] for p in json.loads(found.output)["places"]}
    assert {"table", "raw segment", "extract", "reference source", "objections", "text"} <= kinds

    dry = lake.cli("subject", "erase", "--mobile", MOBILE)  # a dry run by default
    assert dry.exit_code == 0, dry.output
    assert _snapshot(lake) == before

    done = lake.cli("subject", "erase", "--mobile", MOBILE, "--apply", "--json")
    assert done.exit_code == 0, done.output
    receipt = json.loads(done.output)
    assert receipt["verified"] is True
    assert all(p["empty"] for p in receipt["places"])
    assert receipt["scan"]["files"] > 100

    # the proof, by this test's own reading of every byte
    files = _local_files(lake.data_dir)
    if on_s3:
        files |= {f"s3/{k}": v for k, v in _bucket_files(lake.store).items()}
    assert _residues(files, forms) == []

    # everyone else intact; readings and energy unchanged
    after = _snapshot(lake)
    for tenant in TENANTS:
        for dataset in READINGS:
            assert after[f"{tenant}/{dataset}"] == before[f"{tenant}/{dataset}"]
    kaveri_contacts = before["kaveri/contacts"]
    assert len(after["kaveri/contacts"]) == len(kaveri_contacts) - 1
    assert [r for r in kaveri_contacts if r["contact_id"] != lake.contact_id] == after[
        "kaveri/contacts"
    ]
    assert after["sahyadri/contacts"] == before["sahyadri/contacts"]
    for tenant in TENANTS:
        old = {r["ticket_id"]: r for r in before[f"{tenant}/work_orders"]}
        new = {r["ticket_id"]: r for r in after[f"{tenant}/work_orders"]}
        assert old.keys() == new.keys()  # work orders keep their rows (the contract's rule)
        for ticket, row in new.items():
            if ticket in lake.tickets:
                assert row["technician_id"] is None
                assert row["technician_name"] is None
                assert row["technician_phone"] is None
                assert row["visit_latitude_deg"] is None
                assert row["visit_longitude_deg"] is None
                assert row["opened_at"] == old[ticket]["opened_at"]
            elif ticket == lake.mentioned_ticket:
                assert "*" in row["notes"]
                assert {k: v for k, v in row.items() if k != "notes"} == {
                    k: v for k, v in old[ticket].items() if k != "notes"
                }
            else:
                assert row == old[ticket]
        assert len(after[f"{tenant}/quarantine"]) == len(before[f"{tenant}/quarantine"])

    # readable by DuckDB, polars and pyarrow
    con = duck_connect(lake.store)
    try:
        for tenant in TENANTS:
            for dataset in ("contacts", "work_orders", "quarantine", *READINGS):
                rel = table_rel(tenant, dataset)
                url = lake.store.url(rel)
                rows = read_table(lake.store, rel).num_rows
                duck = con.execute(f"SELECT count(*) FROM delta_scan('{url}')").fetchone()
                assert duck == (rows,)
                frame = pl.read_delta(url, storage_options=lake.store.storage_options() or None)
                assert frame.height == rows
    finally:
        con.close()
    # what erasure does to time travel (docs/ERASURE.md): versions before it are gone
    contacts = lake.store.url(table_rel("kaveri", "contacts"))
    with pytest.raises(Exception, match=r"(?i)version|not found|log"):
        DeltaTable(contacts, version=0, storage_options=lake.store.storage_options() or None)

    # what the law asks to keep: the fact, under the keyed digest, never an identifier
    records = list(read_records(lake.data_dir / "audit" / "subjects"))
    assert {r["event"] for r in records} == {"SUBJECT_FIND", "SUBJECT_ERASE"}
    erase = [r for r in records if r["event"] == "SUBJECT_ERASE"]
    assert len(erase) == 1  # the dry run changes nothing and is not an erasure
    assert erase[-1]["verified"] is True
    assert erase[-1]["subject"].endswith(receipt["subject"])
    receipts = list((lake.data_dir / "erasure" / "receipts").glob("*.json"))
    assert len(receipts) == 1
    events = [
        json.loads(line)
        for day in (lake.data_dir / "lineage" / "events").glob("*.jsonl")
        for line in day.read_text().splitlines()
    ]
    runs = [e for e in events if e["job"]["name"] == "erasure"]
    assert [e["eventType"] for e in runs] == ["START", "COMPLETE"]
    complete = runs[-1]
    touched = {t for t in receipt_tables(receipt)}
    assert {i["name"] for i in runs[0]["inputs"]} == touched
    assert {o["name"] for o in complete["outputs"]} == touched
    versions_in = {i["name"]: i["facets"]["version"]["datasetVersion"] for i in runs[0]["inputs"]}
    versions_out = {
        o["name"]: o["facets"]["version"]["datasetVersion"] for o in complete["outputs"]
    }
    assert all(int(versions_out[t]) > int(versions_in[t]) for t in touched)

    # every file left belongs to a storage area with an owner and a retention
    assert uncovered(lake.settings, lake.registry, lake.store) == []

    # a second erasure finds nothing and changes nothing
    again = lake.cli("subject", "find", "--mobile", MOBILE, "--json")
    assert json.loads(again.output)["places"] == []


@pytest.mark.slow
def test_erasure_leaves_zero_bytes_on_local_disk(tmp_path: Path) -> None:
    lake = build(tmp_path / "data")
    _run_erasure(lake, on_s3=False)


@pytest.mark.slow
def test_erasure_leaves_zero_bytes_in_the_bucket(tmp_path: Path, s3_server: str) -> None:
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    lake_uri = f"s3://{bucket}/lake"
    env = {"AWS_ENDPOINT_URL": s3_server, **S3_ENV, "ENERGYLAKE_LAKE_URI": lake_uri}
    with environment(env):
        boto3.client(
            "s3",
            endpoint_url=s3_server,
            region_name=S3_ENV["AWS_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)
        lake = build(tmp_path / "data", lake_uri=lake_uri)
        assert lake.store.is_s3
        assert table_exists(lake.store, table_rel("kaveri", "contacts"))
        _run_erasure(lake, on_s3=True)
