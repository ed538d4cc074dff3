"""What a batch reads of the committed table (``read_committed``): per device, the hour
before its first reading, and up to two days only for a device with too little history
there. A real Delta table written by our writer, several commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

from contracts import load_registry
from lake.delta import commit_files, data_file_name, ensure_table, latest_version, write_data_file
from lake.layout import table_rel
from lake.storage import Store
from transforms.beam import LOOKBACK, RECENT, read_committed
from transforms.series import STUCK_RUN, committed_columns

METER = load_registry().get("meter_readings")
REL = table_rel("acme", "meter_readings")
BRANCH = "blr-001"
END = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)  # the batch starts after this


def _rows(device: str, every: timedelta, count: int) -> pa.Table:
    """``count`` readings of ``device`` every ``every``, the last one at END."""
    times = [END - every * (count - 1 - i) for i in range(count)]
    columns: dict[str, list[object]] = {}
    for field in METER.fields:
        kind = field.arrow_type
        if field.name == "device_id":
            columns[field.name] = [device] * count
        elif field.name == "branch_id":
            columns[field.name] = [BRANCH] * count
        elif field.name == "client_id":
            columns[field.name] = ["acme"] * count
        elif field.name == "event_month":
            columns[field.name] = [t.strftime("%Y-%m") for t in times]
        elif field.name == "seq":
            columns[field.name] = list(range(count))
        elif pa.types.is_timestamp(kind):
            columns[field.name] = times
        elif pa.types.is_list(kind):
            columns[field.name] = [[] for _ in times]
        elif pa.types.is_floating(kind):
            columns[field.name] = [float(i) for i in range(count)]
        elif pa.types.is_integer(kind):
            columns[field.name] = list(range(count))
        else:
            columns[field.name] = [f"{field.name}-{i}" for i in range(count)]
    return pa.table(columns, schema=METER.arrow_schema())


@pytest.fixture
def committed(local_store: Store) -> Store:
    ensure_table(local_store, REL, METER)
    # one commit per 6 hours of data, as batches would land it
    fast = _rows("em-fast", timedelta(minutes=1), 6 * 60)  # every minute, 6 h
    slow = _rows("em-slow", timedelta(minutes=40), 3 * 36)  # every 40 min, 3 days
    for n, table in enumerate([fast, slow]):
        for k, part in enumerate(table.to_batches(max_chunksize=90)):
            values = {"branch_id": BRANCH, "event_month": "2026-05"}
            data = pa.Table.from_batches([part])
            name = data_file_name(f"t{n}-{k}", values)
            files = [write_data_file(local_store, REL, data, values, name)]
            commit_files(
                local_store, REL, METER, files, app_id="test", version=10 * n + k + 1, metadata={}
            )
    return local_store


def _batch(*rows: tuple[str, datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [d for d, _ in rows],
            "ts": [t for _, t in rows],
            "branch_id": [BRANCH] * len(rows),
            "event_month": [t.strftime("%Y-%m") for _, t in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_a_busy_device_reads_its_last_hour_and_a_sparse_one_reads_two_days(
    committed: Store,
) -> None:
    version = latest_version(committed, REL)
    assert version is not None
    first_fast = END + timedelta(minutes=1)
    first_slow = END + timedelta(minutes=40)
    batch = _batch(
        ("em-fast", first_fast),
        ("em-fast", END - timedelta(minutes=10)),  # a duplicate of a committed reading
        ("em-slow", first_slow),
    )
    got = read_committed(committed, REL, version, committed_columns(METER), batch)
    fast = got.filter(pl.col("device_id") == "em-fast")
    slow = got.filter(pl.col("device_id") == "em-slow")
    # the busy device: from the hour before its first batch reading (hour-aligned), which
    # holds its duplicate's original and far more than a STUCK run
    oldest_fast = fast["ts"].min()
    assert isinstance(oldest_fast, datetime)
    assert oldest_fast >= (END - timedelta(minutes=10) - RECENT).replace(minute=0)
    assert fast.height < 6 * 60
    assert fast.filter(pl.col("ts") == END - timedelta(minutes=10)).height == 1
    assert fast.filter(pl.col("ts") < END - timedelta(minutes=10)).height >= STUCK_RUN
    # the sparse device: an hour holds too few of its readings, so two days of them
    oldest_slow = slow["ts"].min()
    assert isinstance(oldest_slow, datetime)
    assert oldest_slow < first_slow - RECENT * 2
    assert oldest_slow >= (first_slow - LOOKBACK).replace(minute=0)
    assert slow.height > STUCK_RUN
    assert slow.height == slow.select("seq").n_unique()
    expected = 1 + (LOOKBACK // timedelta(minutes=40))
    assert abs(slow.height - expected) <= 2


def test_nothing_committed_reads_nothing(local_store: Store) -> None:
    got = read_committed(local_store, REL, None, committed_columns(METER), _batch(("em-fast", END)))
    assert got.height == 0


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/Los_Angeles"])
def test_file_pruning_by_time_never_drops_a_matching_row(
    committed: Store, tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files kept by ``("ts", ">=", t)`` (log statistics) hold every row at or after t,
    whatever the process's local time zone, for cut-offs inside and at the edges of files."""
    import time as _time

    from lake.delta import dataset, read_table

    monkeypatch.setenv("TZ", tz)
    _time.tzset()
    try:
        everything = pl.from_arrow(read_table(committed, REL, columns=["device_id", "ts"]))
        assert isinstance(everything, pl.DataFrame)
        for minutes in (0, 1, 89, 90, 91, 200, 359):
            cut = END - timedelta(minutes=minutes)
            pruned = dataset(committed, REL, files=[("ts", ">=", cut)])
            kept = pl.from_arrow(pruned.to_table(columns=["device_id", "ts"]))
            assert isinstance(kept, pl.DataFrame)
            want = everything.filter(pl.col("ts") >= cut).height
            assert kept.filter(pl.col("ts") >= cut).height == want, (tz, minutes)
            assert kept.height < everything.height  # it did prune
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()


def test_a_table_made_again_at_the_same_path_is_not_read_through_the_old_handle(
    local_store: Store,
) -> None:
    """The cached reading handle follows the table at a path; a table deleted and created
    again there (another lake in the same process, a test, a restore) is opened afresh."""
    import shutil

    ensure_table(local_store, REL, METER)
    values = {"branch_id": BRANCH, "event_month": "2026-05"}
    for k in range(3):
        data = _rows("em-a", timedelta(minutes=1), 10)
        files = [write_data_file(local_store, REL, data, values, data_file_name(f"a{k}", values))]
        commit_files(local_store, REL, METER, files, app_id="t", version=k + 1, metadata={})
    assert latest_version(local_store, REL) == 3
    shutil.rmtree(local_store.url(REL))
    assert latest_version(local_store, REL) is None
    ensure_table(local_store, REL, METER)
    assert latest_version(local_store, REL) == 0
    shutil.rmtree(local_store.url(REL))  # again, without asking in between
    ensure_table(local_store, REL, METER)
    data = _rows("em-b", timedelta(minutes=1), 5)
    files = [write_data_file(local_store, REL, data, values, data_file_name("b", values))]
    commit_files(local_store, REL, METER, files, app_id="t", version=1, metadata={})
    assert latest_version(local_store, REL) == 1
    rows = read_committed(
        local_store, REL, 1, committed_columns(METER), _batch(("em-b", END + timedelta(1)))
    )
    assert set(rows["device_id"].to_list()) <= {"em-b"}
