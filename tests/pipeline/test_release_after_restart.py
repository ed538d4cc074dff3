"""A held batch released after the table received the same seqs from the device's earlier
numbering (before a restart, at other event times): the held readings are all published.
The release used to drop every held row whose (device_id, seq) the table held.

The release decides as a batch does (``transforms.series.dedupe_against``): the earlier
numbering is another boot (the device sent its boot number), so the held readings are in
another epoch and kept. Without a boot number, the same seqs two days apart with no fall of
seq between them are resends with other content: SEQ_CONFLICT, as a batch would say."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from typer.testing import CliRunner

from analytics.queries import read_frame
from cli.app import app
from lake.layout import table_rel
from tests.pipeline.conftest import CONFIG
from tests.quality.conftest import firmware_fault, process_day


@pytest.mark.slow
def test_release_keeps_readings_whose_seq_the_table_holds_from_before_a_restart(
    tmp_path: Path,
) -> None:
    day = process_day(tmp_path, CONFIG, None, gate=False)  # to learn the fleet's branches
    by_tenant = day.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [(str(t[0]), str(part["branch_id"][0])) for t, part in by_tenant]
    (tenant, zero_branch), (_, silent_branch) = firsts[0], firsts[1]
    day = process_day(
        tmp_path / "held", CONFIG, firmware_fault(zero_branch, silent_branch), gate=True
    )
    rel = table_rel(tenant, "meter_readings")
    plan = json.loads(
        (Path(day.settings.lake) / "_state/main/batches/0000000001/plan.json").read_text()
    )
    held_files = plan["tables"][rel]["held_files"]
    held = sum(f["num_records"] for f in held_files)
    assert held > 0
    published = sum(f["num_records"] for f in plan["tables"][rel]["files"])
    assert read_frame(day.store, tenant, "meter_readings").height == published
    # The table gets the same devices and seqs from an earlier numbering: two days before.
    fs_root = Path(day.settings.lake)
    held_rows = pl.concat(
        [
            pl.read_parquet(fs_root / rel / f["path"]).with_columns(
                *[pl.lit(v).alias(k) for k, v in f["partition_values"].items()]
            )
            for f in held_files
        ],
        how="diagonal_relaxed",
    )
    earlier = held_rows.with_columns(
        pl.col("ts") - timedelta(days=2),
        pl.col("received_at") - timedelta(days=2),
        pl.lit(1, pl.Int64).alias("boot"),  # the boot before the held readings' (none sent)
    )
    schema = day.frame(tenant, "meter_readings").to_arrow().schema
    write_deltalake(
        day.store.url(rel),
        earlier.select(schema.names).to_arrow().cast(schema),
        mode="append",
        storage_options=day.store.storage_options(),
    )
    args = ["quality", "release", "1", "--by", "ops", "--reason", "fixed", "--apply"]
    done = CliRunner().invoke(app, [*args, "--data-dir", str(day.settings.data_dir)])
    assert done.exit_code == 0, done.output
    rows = read_frame(day.store, tenant, "meter_readings")
    assert rows.height == published + 2 * held  # the earlier numbering's and the held ones
    assert rows.select("device_id", "seq", "ts").is_unique().all()
