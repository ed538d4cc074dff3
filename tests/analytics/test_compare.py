"""``analytics.compare``: two lakes built from the same segments are identical, and one
changed flag in a copy is reported with its table and row (and a non-zero exit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake

from analytics.compare import compare_lakes, freeze, main
from contracts import load_registry
from lake.delta import read_table
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import process_once
from pipelines.settings import Settings, load_settings
from simulator.config import SimConfig
from simulator.landing import simulate_to_landing

CONFIG = SimConfig(clients=1, branches=2, days=1, seed=5)  # default faults: flags, quarantine
TABLE = "meter_readings"


def _process(settings: Settings, reference: Path) -> Settings:
    load_reference(Store.from_uri(settings.lake), reference, load_registry())
    while process_once(settings) is not None:
        pass
    return settings


@pytest.fixture(scope="module")
def two_lakes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """The simulated day processed twice: from its segments, and from a byte-for-byte copy
    of them taken before the first run archived them (a second simulation names its
    segments anew)."""
    first = load_settings(data_dir=tmp_path_factory.mktemp("lake-a"))
    second = load_settings(data_dir=tmp_path_factory.mktemp("lake-b"))
    result = simulate_to_landing(CONFIG, first.sim_dir, first.landing)
    shutil.copytree(first.landing / "closed", second.landing / "closed")
    return _process(first, result.reference_dir), _process(second, result.reference_dir)


@pytest.mark.slow
def test_two_lakes_from_the_same_segments_are_identical(
    two_lakes: tuple[Settings, Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_lakes
    diff = compare_lakes(Store.from_uri(a.lake), Store.from_uri(b.lake))
    names = {t.table.rsplit("/", 1)[-1] for t in diff.tables}
    # Readings, quarantine (of a tenant and the unassigned one), quality results, reference.
    assert {TABLE, "quarantine", "quality_results", "devices"} <= names
    assert any(t.table == "tenants/_unassigned/quarantine" for t in diff.tables)
    assert all(t.rows_a == t.rows_b for t in diff.tables), [
        (t.table, t.rows_a, t.rows_b) for t in diff.tables
    ]
    assert all(t.rows_a > 0 for t in diff.tables if not t.table.endswith("/quality_results"))
    assert diff.identical, [t for t in diff.tables if not t.identical]
    assert main([str(a.lake), str(b.lake)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"identical: {len(diff.tables)} tables")


@pytest.mark.slow
def test_a_changed_flag_is_reported_with_its_table_and_row(
    two_lakes: tuple[Settings, Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = two_lakes
    copy = tmp_path / "lake-c"
    shutil.copytree(b.lake, copy)
    store = Store.from_uri(copy)
    rel = next(
        r
        for r in sorted({t.table for t in compare_lakes(store, store).tables})
        if r.endswith(f"/{TABLE}")
    )
    table = read_table(store, rel)
    # The first clean row (no flags) gets the flag STUCK, written back with deltalake.
    flags = table.column("quality_flags").to_pylist()
    row = next(i for i, f in enumerate(flags) if not f)
    flags[row] = ["STUCK"]
    changed = table.set_column(
        table.schema.get_field_index("quality_flags"),
        table.schema.field("quality_flags"),
        pa.array(flags, table.schema.field("quality_flags").type),
    )
    write_deltalake(store.url(rel), changed, mode="overwrite")
    assert pc.sum(pc.list_value_length(changed.column("quality_flags")).fill_null(0)).as_py() > 0

    diff = compare_lakes(Store.from_uri(a.lake), store)
    different = [t for t in diff.tables if not t.identical]
    assert [t.table for t in different] == [rel]
    (t,) = different
    assert (t.rows_a, t.rows_b, t.only_a, t.only_b) == (table.num_rows, table.num_rows, 1, 1)
    (was,), (now,) = t.examples_a, t.examples_b
    assert was["quality_flags"] in ((), None)
    assert now["quality_flags"] == ("STUCK",)
    original = table.slice(row, 1).to_pylist()[0]
    assert was["device_id"] == now["device_id"] == original["device_id"]
    assert was["seq"] == now["seq"] == original["seq"]

    assert main([str(a.lake), str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"DIFFERENT {rel}: rows A {table.num_rows}, B {table.num_rows}; " in out
    assert "only in A 1, only in B 1" in out
    assert f"'seq': {original['seq']}" in out
    assert "DIFFERENT: 1 of" in out


def test_freeze_makes_cells_hashable_and_nan_equal() -> None:
    assert freeze(float("nan")) == freeze(float("nan"))
    assert freeze([1, [2]]) == (1, (2,))
    assert freeze({"b": 1, "a": [2]}) == (("a", (2,)), ("b", 1))
    assert hash(freeze({"a": [1]})) == hash((("a", (1,)),))


def test_a_folder_without_a_lake_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "no Delta table under tenants/ or platform/" in capsys.readouterr().err


def test_only_the_clock_cells_of_quality_results_are_left_out(
    two_lakes: tuple[Settings, Settings], tmp_path: Path
) -> None:
    """A later run's gate time and freshness figure are not differences; any other rule's
    observed figure is."""
    a, b = two_lakes
    copy = tmp_path / "lake-d"
    shutil.copytree(b.lake, copy)
    store = Store.from_uri(copy)
    rel = next(
        r for r in compare_lakes(store, store).tables if r.table.endswith("/quality_results")
    ).table
    table = read_table(store, rel)
    rules = table.column("rule").to_pylist()
    assert "freshness" in rules
    later = pc.add(table.column("ts"), pa.scalar(3_600_000_000, pa.duration("us")))
    observed = [
        "observed 9.999e+06" if rule == "freshness" else value
        for rule, value in zip(rules, table.column("observed").to_pylist(), strict=True)
    ]

    def write(observed: list[str | None]) -> None:
        out = table.set_column(table.schema.get_field_index("ts"), table.schema.field("ts"), later)
        out = out.set_column(
            out.schema.get_field_index("observed"),
            out.schema.field("observed"),
            pa.array(observed, out.schema.field("observed").type),
        )
        write_deltalake(store.url(rel), out, mode="overwrite")

    write(observed)
    assert compare_lakes(Store.from_uri(a.lake), store).identical

    other = next(i for i, rule in enumerate(rules) if rule != "freshness")
    observed[other] = "observed something else"
    write(observed)
    diff = compare_lakes(Store.from_uri(a.lake), store)
    assert [(t.table, t.only_a, t.only_b) for t in diff.tables if not t.identical] == [(rel, 1, 1)]
