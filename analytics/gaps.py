"""Sequence gaps: per device, the ``seq`` numbers sent and held nowhere; the silent devices
(active, nothing for 3 cadences); and the messages on topics no decoder reads.

Every device numbers its messages (``seq``). The broker can lose a message it acknowledged
(its queues are bounded), so the lake is checked, not trusted. Per device, readings are
ordered by event time and cut into *epochs*, as deduplication cuts them
(``lake.series.epoch_starts``; here also a jump forward by more than ``MAX_GAP``, a
reflashed device, so one bad counter cannot report millions missing); each epoch after the
first is a *restart*. A seq inside an epoch's range is accounted for when the lake holds it,
the quarantine holds it (a quarantined reading is not a lost one) or the quality gate holds
it. A quarantined message of the device whose seq could not be read (malformed JSON, say)
may be any of the rest: those are counted against them. What is left is *missing*: sent,
and nowhere. Late messages that arrive in a later batch close their gap: the figure is
always computed from what the lake holds now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from contracts import ContractRegistry, load_registry
from lake.delta import dataset as lake_dataset
from lake.delta import read_table, table_exists
from lake.layout import HELD_FOLDER, months_between, table_rel, tenants
from lake.series import epoch_starts
from lake.storage import Store

__all__ = [
    "MAX_GAP",
    "SILENT_CADENCES",
    "SILENT_MIN_S",
    "seq_gaps",
    "silent_devices",
    "undecoded_topics",
]

MAX_GAP = 100_000  # a larger forward jump of seq is a restart of the numbering, not a gap
SILENT_CADENCES = 3  # a device that sent nothing for this many cadences is silent...
SILENT_MIN_S = 900  # ...and for at least this long (a missed beat or two is not silence)

_GAP_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "tenant": pl.String,
    "dataset": pl.String,
    "branch_id": pl.String,
    "device_id": pl.String,
    "readings": pl.UInt32,
    "first_seq": pl.Int64,
    "last_seq": pl.Int64,
    "missing": pl.Int64,
    "quarantined": pl.Int64,
    "held": pl.Int64,
    "unreadable": pl.Int64,
    "restarts": pl.UInt32,
}
# How long before the window a quarantined message of a reading in it may have been
# received (a reading's event time may be up to 10 minutes after its reception).
_RECEIVED_BEFORE = timedelta(minutes=10)


def _readings(
    store: Store, since: datetime, until: datetime | None, registry: ContractRegistry
) -> pl.DataFrame:
    """tenant, dataset, branch_id, device_id, ts, seq, boot of the readings in the window."""
    frames = []
    for tenant in tenants(store):
        for dataset in registry.readings_datasets:
            rel = table_rel(tenant, dataset)
            if not table_exists(store, rel):
                continue
            expr = pc.field("ts") >= pa.scalar(since, pa.timestamp("us", "UTC"))
            if until is not None:
                expr = expr & (pc.field("ts") < pa.scalar(until, pa.timestamp("us", "UTC")))
            # Partition pruning on the month keeps this a scan of recent files only.
            expr = expr & pc.field("event_month").isin(
                months_between(since, until or datetime.now(UTC))
            )
            files = lake_dataset(store, rel)
            columns = ["branch_id", "device_id", "ts", "seq"]
            columns += ["boot"] if "boot" in files.schema.names else []
            table = files.to_table(columns=columns, filter=expr)
            if table.num_rows == 0:
                continue
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            if "boot" not in frame.columns:  # a table written before the boot column
                frame = frame.with_columns(pl.lit(None, pl.Int64).alias("boot"))
            frames.append(
                frame.with_columns(pl.lit(tenant).alias("tenant"), pl.lit(dataset).alias("dataset"))
            )
    return pl.concat(frames) if frames else pl.DataFrame()


def _held_rows(
    store: Store, tables: list[tuple[str, str]], since: datetime, until: datetime | None
) -> pl.DataFrame:
    """tenant, dataset, device_id, seq of the readings in the window that the quality gate
    holds (or a decision kept out): the files under each table's held folder."""
    fs, base = store.filesystem()
    frames = []
    for tenant, dataset in tables:
        folder = f"{table_rel(tenant, dataset)}/{HELD_FOLDER}"
        if not store.list(folder):
            continue
        files = pads.dataset(f"{base}/{folder}", filesystem=fs, format="parquet")
        expr = pc.field("ts") >= pa.scalar(since, pa.timestamp("us", "UTC"))
        if until is not None:
            expr = expr & (pc.field("ts") < pa.scalar(until, pa.timestamp("us", "UTC")))
        frame = pl.from_arrow(files.to_table(columns=["device_id", "seq"], filter=expr))
        assert isinstance(frame, pl.DataFrame)
        frames.append(
            frame.with_columns(pl.lit(tenant).alias("tenant"), pl.lit(dataset).alias("dataset"))
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "device_id": pl.String,
                "seq": pl.Int64,
                "tenant": pl.String,
                "dataset": pl.String,
            }
        )
    return pl.concat(frames, how="vertical_relaxed").unique()


def _quarantine_rows(
    store: Store, tenant_list: list[str], columns: list[str], where: pc.Expression
) -> list[pl.DataFrame]:
    """Each tenant's quarantine rows matching ``where`` (``columns`` and ``tenant``)."""
    frames = []
    for tenant in tenant_list:
        rel = table_rel(tenant, "quarantine")
        if not table_exists(store, rel):
            continue
        frame = pl.from_arrow(read_table(store, rel, columns=columns, filter=where))
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame.with_columns(pl.lit(tenant).alias("tenant")))
    return frames


def _quarantined(
    store: Store, tenant_list: list[str], since: datetime, until: datetime | None
) -> pl.DataFrame:
    """tenant, device_id (the authenticated device), seq (null: unreadable), received_at of
    the tenants' quarantined messages received from a little before the window."""
    start = pa.scalar(since - _RECEIVED_BEFORE, pa.timestamp("us", "UTC"))
    frames = _quarantine_rows(
        store, tenant_list, ["device_id", "seq", "received_at"], pc.field("received_at") >= start
    )
    if not frames:
        return pl.DataFrame(
            schema={
                "device_id": pl.String,
                "seq": pl.Int64,
                "received_at": pl.Datetime("us", "UTC"),
                "tenant": pl.String,
            }
        )
    out = pl.concat(frames)
    if until is not None:
        out = out.filter(pl.col("received_at") < until)
    return out


def undecoded_topics(store: Store, since: datetime, until: datetime | None = None) -> pl.DataFrame:
    """Messages of provisioned devices on topics no decoder reads (quarantined
    UNDECODED_TOPIC) received since ``since``: tenant, device_id, topic, messages,
    last_seen; most messages first."""
    start = pa.scalar(since, pa.timestamp("us", "UTC"))
    frames = _quarantine_rows(
        store,
        tenants(store),
        ["device_id", "topic", "received_at"],
        (pc.field("received_at") >= start) & (pc.field("reason_code") == "UNDECODED_TOPIC"),
    )
    schema: dict[str, Any] = {
        "tenant": pl.String(),
        "device_id": pl.String(),
        "topic": pl.String(),
        "messages": pl.UInt32(),
        "last_seen": pl.Datetime("us", "UTC"),
    }
    if not frames:
        return pl.DataFrame(schema=schema)
    rows = pl.concat(frames)
    if until is not None:
        rows = rows.filter(pl.col("received_at") < until)
    return (
        rows.group_by("tenant", "device_id", "topic")
        .agg(pl.len().alias("messages"), pl.col("received_at").max().alias("last_seen"))
        .sort(["messages", "tenant", "device_id", "topic"], descending=[True, False, False, False])
        .cast(pl.Schema(schema))
    )


def seq_gaps(
    store: Store,
    since: datetime,
    *,
    until: datetime | None = None,
    registry: ContractRegistry | None = None,
) -> pl.DataFrame:
    """Per device with readings in [since, until): readings, seq range, missing (sent and
    nowhere), quarantined (gaps the quarantine holds), unreadable (quarantined without a
    readable seq, counted against the gaps) and restarts. Over the registry's readings
    datasets (the packaged contracts by default)."""
    rows = _readings(store, since, until, registry or load_registry())
    if rows.is_empty():
        return pl.DataFrame(schema=pl.Schema(_GAP_SCHEMA))
    device = ["tenant", "dataset", "device_id"]
    jump = (pl.col("seq") - pl.col("seq").shift(1)) > MAX_GAP
    rows = rows.sort(*device, "ts", "seq").with_columns(
        (epoch_starts() | jump.fill_null(False)).cum_sum().alias("_epoch")
    )
    epochs = rows.group_by(*device, "_epoch").agg(
        pl.col("seq").min().alias("_lo"),
        pl.col("seq").max().alias("_hi"),
        pl.col("seq").n_unique().alias("_held"),
    )
    quarantine = _quarantined(store, rows["tenant"].unique().to_list(), since, until)
    # Quarantined seqs inside an epoch's range that the lake does not hold there.
    found = (
        epochs.join(
            quarantine.filter(pl.col("seq").is_not_null())
            .select("tenant", "device_id", "seq")
            .unique(),
            on=["tenant", "device_id"],
        )
        .filter(pl.col("seq").is_between(pl.col("_lo"), pl.col("_hi")))
        .join(rows.select("_epoch", "seq"), on=["_epoch", "seq"], how="anti")
        .group_by("_epoch")
        .agg(pl.len().alias("_quarantined"))
    )
    # Held seqs inside an epoch's range that neither the lake nor the quarantine holds.
    tables = rows.select("tenant", "dataset").unique().sort("tenant", "dataset").rows()
    held = (
        epochs.join(
            _held_rows(store, tables, since, until),
            on=["tenant", "dataset", "device_id"],
        )
        .filter(pl.col("seq").is_between(pl.col("_lo"), pl.col("_hi")))
        .join(rows.select("_epoch", "seq"), on=["_epoch", "seq"], how="anti")
        .join(
            quarantine.filter(pl.col("seq").is_not_null()).select("tenant", "device_id", "seq"),
            on=["tenant", "device_id", "seq"],
            how="anti",
        )
        .group_by("_epoch")
        .agg(pl.len().alias("_kept_out"))
    )
    unreadable = (
        quarantine.filter(pl.col("seq").is_null() & (pl.col("received_at") >= since))
        .group_by("tenant", "device_id")
        .agg(pl.len().cast(pl.Int64).alias("unreadable"))
    )
    per_epoch = (
        epochs.join(found, on="_epoch", how="left")
        .join(held, on="_epoch", how="left")
        .with_columns(
            pl.col("_quarantined").fill_null(0),
            pl.col("_kept_out").fill_null(0),
        )
        .with_columns(
            (
                pl.col("_hi")
                - pl.col("_lo")
                + 1
                - pl.col("_held")
                - pl.col("_quarantined")
                - pl.col("_kept_out")
            ).alias("_unaccounted")
        )
    )
    sums = per_epoch.group_by(device).agg(
        pl.col("_unaccounted").sum().alias("_unaccounted"),
        pl.col("_quarantined").sum().cast(pl.Int64).alias("quarantined"),
        pl.col("_kept_out").sum().cast(pl.Int64).alias("held"),
        (pl.len() - 1).alias("restarts"),
    )
    out = (
        rows.group_by(device)
        .agg(
            pl.col("branch_id").last(),
            pl.len().alias("readings"),
            pl.col("seq").first().alias("first_seq"),
            pl.col("seq").last().alias("last_seq"),
        )
        .join(sums, on=device)
        .join(unreadable, on=["tenant", "device_id"], how="left")
        .with_columns(pl.col("unreadable").fill_null(0))
        .with_columns(
            (pl.col("_unaccounted") - pl.col("unreadable")).clip(lower_bound=0).alias("missing")
        )
    )
    return out.select(list(_GAP_SCHEMA)).cast(pl.Schema(_GAP_SCHEMA)).sort(device)


def silent_devices(
    store: Store, since: datetime, now: datetime, *, registry: ContractRegistry | None = None
) -> pl.DataFrame:
    """The active devices of the registry, installed by ``now``, that sent nothing for
    ``SILENT_CADENCES`` of their cadences (at least ``SILENT_MIN_S``): tenant, device_id,
    branch_id, kind, cadence_s, last_seen (the newest reading in the lake or message in
    the quarantine since ``since``; null: nothing since then), silent_s (from last_seen,
    or from ``since``). A device whose messages are all quarantined is not silent: it
    sends, and the quarantine says why nothing lands."""
    registry = registry or load_registry()
    frames = []
    for tenant in tenants(store):
        rel = table_rel(tenant, "devices")
        if not table_exists(store, rel):
            continue
        devices = pl.from_arrow(
            read_table(
                store,
                rel,
                columns=["device_id", "branch_id", "kind", "cadence_s", "status", "installed_on"],
            )
        )
        assert isinstance(devices, pl.DataFrame)
        frames.append(devices.with_columns(pl.lit(tenant).alias("tenant")))
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "tenant": pl.String,
        "device_id": pl.String,
        "branch_id": pl.String,
        "kind": pl.String,
        "cadence_s": pl.Int64,
        "last_seen": pl.Datetime("us", "UTC"),
        "silent_s": pl.Float64,
    }
    if not frames:
        return pl.DataFrame(schema=schema)
    active = (
        pl.concat(frames, how="vertical_relaxed")
        .filter((pl.col("status") == "active") & (pl.col("installed_on") <= now.date()))
        .unique(["tenant", "device_id"], keep="last")
    )
    rows = _readings(store, since, None, registry)
    seen = [
        rows.group_by("tenant", "device_id").agg(pl.col("ts").max().alias("_at"))
        if not rows.is_empty()
        else pl.DataFrame(
            schema={"tenant": pl.String, "device_id": pl.String, "_at": pl.Datetime("us", "UTC")}
        ),
        _quarantined(store, active["tenant"].unique().to_list(), since, None)
        .filter(pl.col("device_id").is_not_null())
        .group_by("tenant", "device_id")
        .agg(pl.col("received_at").max().alias("_at")),
    ]
    last = (
        pl.concat([f.cast({"_at": pl.Datetime("us", "UTC")}) for f in seen])
        .group_by("tenant", "device_id")
        .agg(pl.col("_at").max().alias("last_seen"))
    )
    moment = pl.lit(now, dtype=pl.Datetime("us", "UTC"))
    quiet = moment - pl.coalesce(pl.col("last_seen"), pl.lit(since, dtype=pl.Datetime("us", "UTC")))
    allowed = pl.max_horizontal(
        pl.col("cadence_s").cast(pl.Float64) * SILENT_CADENCES, SILENT_MIN_S
    )
    return (
        active.join(last, on=["tenant", "device_id"], how="left")
        .with_columns(quiet.dt.total_seconds().cast(pl.Float64).alias("silent_s"))
        .filter(pl.col("silent_s") > allowed)
        .select(list(schema))
        .cast(pl.Schema(schema))
        .sort("tenant", "device_id")
    )
