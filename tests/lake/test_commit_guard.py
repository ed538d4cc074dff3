"""One commit discipline for every writer (lake.guard), on local disk and on S3 (moto).

A writer checks its rows against the table at some version, then commits; another writer
commits the same readings in between. Plain commits (the old discipline, kept here as the
control) publish both copies: 30 rows for 15 keys. Guarded commits publish one.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from lake.delta import commit_files, ensure_table, latest_version, read_table
from lake.guard import READING_KEY, DuplicateKeysError, KeyGuard, commit_guarded
from lake.layout import table_rel
from lake.storage import Store
from tests.lake.test_delta import METER, PARTS, write_batch

REL = table_rel("acme", "meter_readings")


def _keys(store: Store, rel: str = REL) -> pl.DataFrame:
    frame = pl.from_arrow(read_table(store, rel, columns=list(READING_KEY)))
    assert isinstance(frame, pl.DataFrame)
    return frame


@pytest.mark.slow
def test_plain_commits_interleaved_publish_a_reading_twice(store: Store) -> None:
    """The control: what the old discipline did (check, another writer commits, commit)."""
    ensure_table(store, REL, METER)
    held = write_batch(store, "release-1", [PARTS[0]], 15)
    assert _keys(store).height == 0  # the release's duplicate check: nothing there yet
    batch = write_batch(store, "main-2", [PARTS[0]], 15)
    commit_files(store, REL, METER, batch, app_id="main", version=2, metadata={})
    commit_files(store, REL, METER, held, app_id="main-release-1", version=1, metadata={})
    keys = _keys(store)
    assert (keys.height, keys.unique().height) == (30, 15)


def test_a_guarded_commit_leaves_out_what_another_writer_committed_since_its_check(
    store: Store,
) -> None:
    ensure_table(store, REL, METER)
    checked = latest_version(store, REL)
    held = write_batch(store, "release-1", [PARTS[0]], 20)  # seqs 0..19
    # Another writer commits 15 of the same readings (seqs 5..19) and 5 of its own.
    batch = write_batch(store, "main-2", [PARTS[0]], 20, first_seq=5)
    commit_files(store, REL, METER, batch, app_id="main", version=2, metadata={})
    done = commit_guarded(
        store,
        REL,
        METER,
        held,
        app_id="main-release-1",
        version=1,
        metadata={},
        checked_version=checked,
    )
    assert done.committed
    assert done.dropped.height == 15
    assert set(done.dropped.columns) == {"branch_id", "event_month", "ts"}
    assert done.dropped["branch_id"].unique().to_list() == [PARTS[0][0]]
    keys = _keys(store)
    assert (keys.height, keys.unique().height) == (25, 25)
    # The rewritten file holds the 5 readings only the release had, under a new name.
    (rewritten,) = done.files
    assert rewritten.num_records == 5
    assert rewritten.path.endswith(f"-v{latest_version(store, REL) - 1}.zstd.parquet")
    # A replay commits nothing (the app transaction is recorded).
    again = commit_guarded(
        store,
        REL,
        METER,
        held,
        app_id="main-release-1",
        version=1,
        metadata={},
        checked_version=checked,
    )
    assert not again.committed
    assert _keys(store).height == 25


def test_nothing_can_commit_between_the_check_and_the_commit(store: Store) -> None:
    """The other writer commits right after the guard's check, inside the commit's loop: the
    attempt fails (the version is taken), the loop starts over and the check catches it."""
    ensure_table(store, REL, METER)
    checked = latest_version(store, REL)
    held = write_batch(store, "release-1", [PARTS[0]], 15)
    batch = write_batch(store, "main-2", [PARTS[0]], 15)
    guard = KeyGuard(store, REL, held, checked)
    calls: list[int] = []

    def check_then_interleave(table: DeltaTable) -> Any:
        calls.append(int(table.version()))
        guard(table)
        if len(calls) == 1:  # a second writer, its own Store object, commits now
            other = Store.from_uri(store.url())  # another writer: its own Store object
            commit_files(other, REL, METER, batch, app_id="main", version=2, metadata={})

    with pytest.raises(DuplicateKeysError) as caught:
        commit_files(
            store,
            REL,
            METER,
            held,
            app_id="main-release-1",
            version=1,
            metadata={},
            precheck=check_then_interleave,
        )
    assert calls == [checked, checked + 1]
    assert caught.value.keys.height == 15
    keys = _keys(store)
    assert (keys.height, keys.unique().height) == (15, 15)


def test_no_other_writer_no_reads(local_store: Store) -> None:
    """When nobody committed since the check, the guard reads no file."""
    ensure_table(local_store, REL, METER)
    files = write_batch(local_store, "main-1", PARTS, 10)
    checked = latest_version(local_store, REL)
    guard = KeyGuard(local_store, REL, files, checked)
    commit_files(
        local_store, REL, METER, files, app_id="main", version=1, metadata={}, precheck=guard
    )
    assert guard._ours is None  # our own keys were never read
    assert _keys(local_store).height == 30
