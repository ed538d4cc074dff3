"""Delta tables on local disk and on S3 (moto): create, write, commit, replay, prune, compact.

Every read-back goes through real readers: deltalake, pyarrow datasets, polars
``scan_delta`` and DuckDB ``delta_scan``.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties
from deltalake.exceptions import CommitFailedError

from contracts import Contract, load_registry
from contracts.errors import EnergylakeError
from lake.delta import (
    CONTRACT_KEY,
    NULL_PARTITION,
    DataFile,
    app_txn_version,
    commit_files,
    compact,
    data_file_name,
    dataset,
    ensure_table,
    file_stats,
    files_per_partition,
    open_table,
    read_table,
    stats_columns,
    table_exists,
    write_data_file,
)
from lake.errors import LakeError, SchemaMismatchError
from lake.layout import UNASSIGNED_TENANT, table_rel
from lake.storage import Store

REGISTRY = load_registry()
METER = REGISTRY.get("meter_readings")
QUARANTINE = REGISTRY.get("quarantine")
REL = table_rel("acme", "meter_readings")
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def readings(
    branch: str, month: str, rows: int, *, first_seq: int = 0, start: datetime | None = None
) -> pa.Table:
    """Meter readings of one partition under the contract's schema (plausible values)."""
    start = start or datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
    seqs = list(range(first_seq, first_seq + rows))
    columns: dict[str, list[Any]] = {}
    for field in METER.fields:
        kind = field.arrow_type
        if field.name == "client_id":
            columns[field.name] = ["acme"] * rows
        elif field.name == "branch_id":
            columns[field.name] = [branch] * rows
        elif field.name == "event_month":
            columns[field.name] = [month] * rows
        elif field.name == "device_id":
            columns[field.name] = [f"{branch}-em-{s % 3}" for s in seqs]
        elif field.name == "seq":
            columns[field.name] = seqs
        elif pa.types.is_timestamp(kind):
            columns[field.name] = [start + timedelta(seconds=s, microseconds=250) for s in seqs]
        elif pa.types.is_list(kind):
            columns[field.name] = [None if s % 2 else ["late"] for s in seqs]
        elif pa.types.is_floating(kind):
            columns[field.name] = [float(s % 97) + 0.5 for s in seqs]
        elif pa.types.is_integer(kind):
            columns[field.name] = seqs
        else:
            columns[field.name] = [f"{field.name}-{s}" for s in seqs]
    return pa.table(columns, schema=METER.arrow_schema())


def write_batch(
    store: Store, batch: str, parts: list[tuple[str, str]], rows: int, *, first_seq: int = 0
) -> list[DataFile]:
    files = []
    for branch, month in parts:
        values = {"branch_id": branch, "event_month": month}
        table = readings(branch, month, rows, first_seq=first_seq)
        files.append(write_data_file(store, REL, table, values, data_file_name(batch, values)))
    return files


PARTS = [("blr-001", "2026-05"), ("blr-001", "2026-06"), ("maa-002", "2026-05")]


def polars_count(store: Store, rel: str) -> int:
    frame = pl.scan_delta(store.url(rel), storage_options=store.storage_options() or None)
    return int(frame.select(pl.len()).collect().item())


def duckdb_rows(con: Any, store: Store, rel: str, sql: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = con.execute(
        sql.replace("TABLE", f"delta_scan('{store.url(rel)}')")
    ).fetchall()
    return rows


# ---------------------------------------------------------------------------- creating


def test_ensure_table_creates_from_the_contract_and_is_idempotent(store: Store) -> None:
    assert not table_exists(store, REL)
    table = ensure_table(store, REL, METER)
    assert table.version() == 0
    meta = table.metadata()
    assert meta.name == "meter_readings"
    assert list(meta.partition_columns) == ["branch_id", "event_month"]
    assert meta.configuration[CONTRACT_KEY] == METER.ref
    assert meta.configuration["delta.dataSkippingStatsColumns"] == ",".join(stats_columns(METER))
    schema = pa.schema(table.schema().to_arrow())
    assert schema.names == METER.field_names
    assert table_exists(store, REL)

    again = ensure_table(store, REL, METER)
    assert again.version() == 0
    assert len(again.history()) == 1


def test_ensure_table_refuses_another_schema(store: Store) -> None:
    ensure_table(store, REL, REGISTRY.get("solar_readings"))
    with pytest.raises(SchemaMismatchError) as info:
        ensure_table(store, REL, METER)
    assert isinstance(info.value, EnergylakeError)
    message = str(info.value)
    assert store.url(REL) in message
    assert "voltage_l1_v" in message
    assert "irradiance_w_m2" in message


def test_ensure_table_records_a_new_contract_version_of_the_same_schema(store: Store) -> None:
    ensure_table(store, REL, METER)
    newer = Contract(**{**_contract_fields(METER), "version": "9.9.9"})
    table = ensure_table(store, REL, newer)
    assert table.metadata().configuration[CONTRACT_KEY] == newer.ref
    assert table.version() == 1
    assert ensure_table(store, REL, newer).version() == 1


def _contract_fields(contract: Contract) -> dict[str, Any]:
    return {name: getattr(contract, name) for name in contract.__dataclass_fields__}


def _ensure_in_process(uri: str, rel: str, barrier: Any, results: Any) -> None:
    store = Store.from_uri(uri)
    barrier.wait(timeout=60)
    try:
        results.put(("ok", ensure_table(store, rel, METER).version()))
    except Exception as exc:  # reported to the test
        results.put(("error", repr(exc)))


@pytest.mark.slow
def test_ensure_table_race_between_processes(store: Store) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    results = context.Queue()
    procs = [
        context.Process(target=_ensure_in_process, args=(store.uri, REL, barrier, results))
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert outcomes == [("ok", 0)] * 3, outcomes
    table = open_table(store, REL)
    assert table.version() == 0
    assert [h["operation"] for h in table.history()] == ["CREATE TABLE"]


# ---------------------------------------------------------------------------- write and read


@pytest.mark.slow
def test_write_commit_and_every_reader_agrees(
    store: Store, duckdb_for: Callable[[Store], Any]
) -> None:
    ensure_table(store, REL, METER)
    files = write_batch(store, "b-0001", PARTS, 500)
    assert commit_files(
        store, REL, METER, files, app_id="ingest", version=1, metadata={"batch": "b-0001"}
    )

    # the files sit in Hive-style partition directories, without the partition columns
    first = files[0]
    assert first.path.startswith("branch_id=blr-001/event_month=2026-05/part-b-0001-")
    assert store.exists(f"{REL}/{first.path}")
    fs, base = store.filesystem()
    parquet_schema = pq.read_schema(fs.open_input_file(f"{base}/{REL}/{first.path}"))
    assert "branch_id" not in parquet_schema.names
    assert "event_month" not in parquet_schema.names

    expected = 3 * 500
    table = open_table(store, REL)
    assert table.version() == 1
    assert read_table(store, REL).num_rows == expected
    assert dataset(store, REL).count_rows() == expected
    assert polars_count(store, REL) == expected
    con = duckdb_for(store)
    assert duckdb_rows(con, store, REL, "SELECT count(*) FROM TABLE") == [(expected,)]
    per_partition = duckdb_rows(
        con,
        store,
        REL,
        "SELECT branch_id, event_month, count(*), min(ts), count(DISTINCT seq) FROM TABLE "
        "GROUP BY ALL ORDER BY ALL",
    )
    assert [(b, m, n, d) for b, m, n, _ts, d in per_partition] == [
        ("blr-001", "2026-05", 500, 500),
        ("blr-001", "2026-06", 500, 500),
        ("maa-002", "2026-05", 500, 500),
    ]
    assert per_partition[0][3] == datetime(2026, 5, 1, 0, 0, 0, 250, tzinfo=UTC)

    # values survive the trip
    back = read_table(store, REL, filter=pc.field("seq") == 7)
    assert back.num_rows == 3
    row = back.filter(pc.field("branch_id") == "maa-002").to_pylist()[0]
    assert row["quality_flags"] is None
    assert row["power_kw"] == 7.5
    history = table.history(1)[0]
    assert history["batch"] == "b-0001"
    assert history[CONTRACT_KEY] == METER.ref


def test_commit_replay_commits_nothing(store: Store) -> None:
    ensure_table(store, REL, METER)
    files = write_batch(store, "b-1", PARTS[:2], 100)
    assert commit_files(store, REL, METER, files, app_id="ingest", version=1, metadata={})
    assert app_txn_version(store, REL, "ingest") == 1
    version = open_table(store, REL).version()

    # the same batch replayed (same files rewritten: same names), and an older one
    again = write_batch(store, "b-1", PARTS[:2], 100)
    assert [f.path for f in again] == [f.path for f in files]
    assert not commit_files(store, REL, METER, again, app_id="ingest", version=1, metadata={})
    assert not commit_files(store, REL, METER, again, app_id="ingest", version=0, metadata={})
    assert open_table(store, REL).version() == version
    assert read_table(store, REL).num_rows == 200

    # an empty batch still records its app transaction; other app ids are independent
    assert commit_files(store, REL, METER, [], app_id="ingest", version=2, metadata={})
    assert app_txn_version(store, REL, "ingest") == 2
    assert app_txn_version(store, REL, "other") is None
    assert open_table(store, REL).version() == version + 1
    assert read_table(store, REL).num_rows == 200


def test_concurrent_commits_land_once_each(store: Store) -> None:
    """Writers racing on one table: every batch commits once, a duplicate batch only once."""
    ensure_table(store, REL, METER)
    batches = {
        f"w{w}-{v}": write_batch(store, f"w{w}-{v}", PARTS[:1], 10, first_seq=100 * w + 10 * v)
        for w in range(3)
        for v in range(1, 3)
    }
    duplicate = write_batch(store, "dup", PARTS[1:2], 10)
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def writer(w: int) -> None:
        mine = Store.from_uri(store.uri)  # its own Store: an independent writer
        try:
            barrier.wait()
            for v in range(1, 3):
                batch = batches[f"w{w}-{v}"]
                ok = commit_files(mine, REL, METER, batch, app_id=f"w{w}", version=v, metadata={})
                outcomes.append((f"w{w}", ok))
        except BaseException as exc:
            errors.append(exc)

    def duplicate_writer() -> None:
        mine = Store.from_uri(store.uri)
        try:
            barrier.wait()
            ok = commit_files(mine, REL, METER, duplicate, app_id="dup", version=1, metadata={})
            outcomes.append(("dup", ok))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=duplicate_writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(ok for name, ok in outcomes if name == "dup") == [False, True]
    assert all(ok for name, ok in outcomes if name != "dup")
    table = open_table(store, REL)
    assert table.version() == 6 + 1  # version 0 is the creation
    assert read_table(store, REL).num_rows == 6 * 10 + 10
    assert {w: table.transaction_version(f"w{w}") for w in range(3)} == {0: 2, 1: 2, 2: 2}


def test_a_stale_writer_cannot_overwrite_a_commit(store: Store) -> None:
    """Log entries are created with put-if-absent (S3: If-None-Match), never overwritten."""
    ensure_table(store, REL, METER)
    first, second = open_table(store, REL), open_table(store, REL)
    no_retry = CommitProperties(max_commit_retries=0)
    files = write_batch(store, "s1", PARTS[:1], 5)
    first.create_write_transaction(
        [f.to_add_action() for f in files],
        mode="append",
        schema=first.schema(),
        partition_by=["branch_id", "event_month"],
        commit_properties=no_retry,
    )
    other = write_batch(store, "s2", PARTS[1:2], 5)
    with pytest.raises(CommitFailedError):
        second.create_write_transaction(  # still at version 0: its version 1 exists
            [f.to_add_action() for f in other],
            mode="append",
            schema=second.schema(),
            partition_by=["branch_id", "event_month"],
            commit_properties=no_retry,
        )
    assert open_table(store, REL).version() == 1
    assert read_table(store, REL).num_rows == 5


def test_write_data_file_checks_its_input(local_store: Store) -> None:
    ensure_table(local_store, REL, METER)
    table = readings("blr-001", "2026-05", 10)
    values = {"branch_id": "blr-001", "event_month": "2026-05"}
    with pytest.raises(LakeError, match="branch_id"):
        write_data_file(local_store, REL, table, {**values, "branch_id": "maa-002"}, "x.parquet")
    with pytest.raises(LakeError, match="file name"):
        write_data_file(local_store, REL, table, values, "../x.parquet")
    with pytest.raises(LakeError, match="file name"):
        write_data_file(local_store, REL, table, values, "x.csv")
    with pytest.raises(LakeError, match="empty partition value"):
        write_data_file(local_store, REL, table, {**values, "branch_id": ""}, "x.parquet")
    wrong = write_data_file(local_store, REL, table, {"branch_id": "blr-001"}, "y.parquet")
    with pytest.raises(LakeError, match="partition"):
        commit_files(local_store, REL, METER, [wrong], app_id="a", version=1, metadata={})
    with pytest.raises(LakeError, match="operation"):
        commit_files(
            local_store, REL, METER, [], app_id="a", version=1, metadata={"operation": "x"}
        )


def test_rewriting_a_file_replaces_it(local_store: Store) -> None:
    values = {"branch_id": "blr-001", "event_month": "2026-05"}
    first = write_data_file(local_store, REL, readings(*PARTS[0], 10), values, "same.parquet")
    second = write_data_file(local_store, REL, readings(*PARTS[0], 20), values, "same.parquet")
    assert first.path == second.path
    assert second.num_records == 20
    assert local_store.list(REL) == [f"{REL}/{second.path}"]
    assert pq.read_metadata(local_store.url(f"{REL}/{second.path}")).num_rows == 20


def test_data_file_round_trips_through_json(local_store: Store) -> None:
    values = {"branch_id": "blr 001/ü", "event_month": "2026-05"}
    table = readings("blr 001/ü", "2026-05", 5)
    data_file = write_data_file(local_store, REL, table, values, "odd.parquet")
    # a value that is not URL-safe gets a hashed directory name: the path stays URL-safe
    assert re.fullmatch(
        r"branch_id=_h[0-9a-f]{24}/event_month=2026-05/odd\.parquet", data_file.path
    )
    assert local_store.exists(f"{REL}/{data_file.path}")
    assert DataFile.from_json(data_file.to_json()) == data_file
    assert json.loads(data_file.to_json())["partition_values"] == values
    ensure_table(local_store, REL, METER)
    commit_files(local_store, REL, METER, [data_file], app_id="a", version=1, metadata={})
    assert read_table(local_store, REL).column("branch_id").to_pylist() == ["blr 001/ü"] * 5
    assert polars_count(local_store, REL) == 5


# ---------------------------------------------------------------------------- statistics


def test_file_stats_are_conservative() -> None:
    schema = pa.schema(
        [
            pa.field("ts", pa.timestamp("us", tz="UTC")),
            pa.field("day", pa.date32()),
            pa.field("x", pa.float64()),
            pa.field("bad", pa.float64()),
            pa.field("inf", pa.float64()),
            pa.field("both", pa.float64()),
            pa.field("n", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("flags", pa.list_(pa.string())),
            pa.field("phone", pa.string(), metadata={"classification": "personal"}),
        ]
    )
    table = pa.table(
        {
            "ts": [
                datetime(2026, 5, 1, 0, 0, 0, 123456, tzinfo=UTC),
                datetime(2026, 5, 1, 0, 0, 1, 999999, tzinfo=UTC),
            ],
            "day": [date(2026, 5, 1), None],
            "x": [1.5, -2.0],
            "bad": [1.0, float("nan")],
            "inf": [1.0, float("inf")],
            "both": [float("-inf"), float("inf")],
            "n": [3, 9],
            "text": ["a" * 40, "b" * 40],
            "flags": [["x"], None],
            "phone": ["+91 98", "+91 99"],
        },
        schema=schema,
    )
    stats = json.loads(file_stats(table))
    assert stats["numRecords"] == 2
    assert stats["minValues"]["ts"] == "2026-05-01T00:00:00.123Z"  # rounded down
    assert stats["maxValues"]["ts"] == "2026-05-01T00:00:02.000Z"  # rounded up
    assert stats["minValues"]["day"] == stats["maxValues"]["day"] == "2026-05-01"
    assert stats["nullCount"]["day"] == 1
    assert (stats["minValues"]["x"], stats["maxValues"]["x"]) == (-2.0, 1.5)
    for unbounded in ("bad", "inf", "both"):
        assert unbounded not in stats["minValues"]
        assert unbounded not in stats["maxValues"]
    assert (stats["minValues"]["n"], stats["maxValues"]["n"]) == (3, 9)
    assert stats["minValues"]["text"] == "a" * 32
    assert "text" not in stats["maxValues"]
    assert "flags" not in stats["nullCount"]
    assert "phone" not in stats["minValues"]
    assert "phone" not in stats["maxValues"]
    assert "+91" not in file_stats(table)


@pytest.mark.slow
def test_statistics_prune_files_and_never_drop_rows(
    store: Store, duckdb_for: Callable[[Store], Any]
) -> None:
    ensure_table(store, REL, METER)
    values = {"branch_id": "blr-001", "event_month": "2026-05"}
    early = readings(*PARTS[0], 100, first_seq=0)
    late = readings(*PARTS[0], 100, first_seq=100_000)
    other = readings(*PARTS[2], 100)
    files = [
        write_data_file(store, REL, early, values, "early.parquet"),
        write_data_file(store, REL, late, values, "late.parquet"),
        write_data_file(
            store, REL, other, {"branch_id": "maa-002", "event_month": "2026-05"}, "o.parquet"
        ),
    ]
    commit_files(store, REL, METER, files, app_id="a", version=1, metadata={})
    table = open_table(store, REL)

    by_partition = table.file_uris(file_pruning_predicate=[("branch_id", "=", "maa-002")])
    assert [u.rsplit("/", 1)[1] for u in by_partition] == ["o.parquet"]
    # the last reading of "early" is at 00:01:39.000250: a stats max cut down to
    # 00:01:39.000 would prune the file wrongly for this predicate
    last = pc.max(early.column("ts")).as_py()
    assert last.microsecond == 250
    cut = "2026-05-01T00:01:39.000100Z"
    pruned = table.file_uris(
        file_pruning_predicate=[("branch_id", "=", "blr-001"), ("ts", ">=", cut)]
    )
    assert sorted(u.rsplit("/", 1)[1] for u in pruned) == ["early.parquet", "late.parquet"]
    later = table.file_uris(file_pruning_predicate=[("ts", ">=", "2026-05-02T00:00:00Z")])
    assert [u.rsplit("/", 1)[1] for u in later] == ["late.parquet"]

    con = duckdb_for(store)
    rows = duckdb_rows(
        con,
        store,
        REL,
        f"SELECT count(*) FROM TABLE WHERE ts >= TIMESTAMPTZ '{cut}'",
    )
    assert rows == [(1 + 100 + 1,)]  # early's last row, all of late, other's seq 99
    frame = pl.scan_delta(store.url(REL), storage_options=store.storage_options() or None)
    cut_at = datetime(2026, 5, 1, 0, 1, 39, 100, tzinfo=UTC)
    assert frame.filter(pl.col("ts") >= cut_at).select(pl.len()).collect().item() == 102


# ---------------------------------------------------------------------------- maintenance


@pytest.mark.slow
def test_files_per_partition_and_compaction(store: Store) -> None:
    ensure_table(store, REL, METER)
    for version in range(1, 4):
        files = write_batch(store, f"b{version}", PARTS, 50, first_seq=1000 * version)
        commit_files(store, REL, METER, files, app_id="ingest", version=version, metadata={})
    extra = write_batch(store, "single", [("del-003", "2026-05")], 50)
    commit_files(store, REL, METER, extra, app_id="ingest", version=4, metadata={})
    before = read_table(store, REL, columns=["branch_id", "event_month", "seq"])
    assert files_per_partition(store, REL) == {
        ("blr-001", "2026-05"): 3,
        ("blr-001", "2026-06"): 3,
        ("maa-002", "2026-05"): 3,
        ("del-003", "2026-05"): 1,
    }

    only = compact(store, REL, partitions=[{"branch_id": "maa-002", "event_month": "2026-05"}])
    assert only.partitions == [{"branch_id": "maa-002", "event_month": "2026-05"}]
    assert (only.files_removed, only.files_added) == (3, 1)

    report = compact(store, REL, min_files=2)
    assert report.files_removed == 6
    assert report.files_added == 2
    assert report.partitions == [
        {"branch_id": "blr-001", "event_month": "2026-05"},
        {"branch_id": "blr-001", "event_month": "2026-06"},
    ]
    assert len(report.versions) == 2
    assert set(files_per_partition(store, REL).values()) == {1}
    after = read_table(store, REL, columns=["branch_id", "event_month", "seq"])
    order = [("branch_id", "ascending"), ("event_month", "ascending"), ("seq", "ascending")]
    assert after.sort_by(order).equals(before.sort_by(order))
    assert app_txn_version(store, REL, "ingest") == 4  # compaction keeps the app transactions

    nothing = compact(store, REL)
    assert (nothing.files_removed, nothing.partitions) == (0, [])


@pytest.mark.slow
def test_readers_see_a_consistent_table_during_compaction(store: Store) -> None:
    ensure_table(store, REL, METER)
    parts = [(f"b{i:02d}", "2026-05") for i in range(4)]
    for version in range(1, 5):
        files = write_batch(store, f"b{version}", parts, 40, first_seq=1000 * version)
        commit_files(store, REL, METER, files, app_id="ingest", version=version, metadata={})
    expected = 4 * 4 * 40
    seen: list[int] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set() or len(seen) < 3:
                seen.append(dataset(store, REL).count_rows())
                seen.append(read_table(store, REL, columns=["seq"]).num_rows)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        report = compact(store, REL)
    finally:
        done.set()
        thread.join(timeout=60)
    assert not failures, failures
    assert report.files_removed == 16
    assert len(seen) >= 3
    assert set(seen) == {expected}
    assert read_table(store, REL).num_rows == expected


def test_quarantine_of_unknown_tenants_has_a_null_partition(store: Store) -> None:
    rel = table_rel(UNASSIGNED_TENANT, "quarantine")
    ensure_table(store, rel, QUARANTINE)
    files = []
    for i in range(3):
        row: dict[str, Any] = {f.name: None for f in QUARANTINE.fields}
        row.update(
            quarantine_id=f"q-{i}",
            received_at=T0,
            reason_code="unknown_device",
            detail="device not in the registry",
            pipeline_step="enforce",
            source="mqtt",
            topic="t/x",
            segment="seg-1",
            offset_bytes=i * 100,
            payload_size_bytes=100,
            payload_sha256="0" * 64,
            batch_id="b1",
        )
        table = pa.Table.from_pylist([row], schema=QUARANTINE.arrow_schema())
        files.append(write_data_file(store, rel, table, {"branch_id": None}, f"q{i}.parquet"))
    assert files[0].path == f"branch_id={NULL_PARTITION}/q0.parquet"
    commit_files(store, rel, QUARANTINE, files, app_id="ingest", version=1, metadata={})
    assert files_per_partition(store, rel) == {(None,): 3}
    assert read_table(store, rel).column("branch_id").null_count == 3
    report = compact(store, rel)
    assert report.partitions == [{"branch_id": None}]
    assert files_per_partition(store, rel) == {(None,): 1}
    assert read_table(store, rel).num_rows == 3
    assert polars_count(store, rel) == 3


def test_open_table_of_nothing_is_a_lake_error(local_store: Store) -> None:
    with pytest.raises(LakeError, match="no Delta table"):
        open_table(local_store, "tenants/acme/nothing")


def test_time_travel(local_store: Store) -> None:
    ensure_table(local_store, REL, METER)
    for version in (1, 2):
        files = write_batch(local_store, f"t{version}", PARTS[:1], 10, first_seq=10 * version)
        commit_files(local_store, REL, METER, files, app_id="a", version=version, metadata={})
    assert read_table(local_store, REL, version=1).num_rows == 10
    assert read_table(local_store, REL).num_rows == 20
