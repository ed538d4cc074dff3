"""``energylake status``: what the platform holds and owes, from the lake and the landing log.

- **Backlog**: closed landing segments not yet processed (count, bytes, age of the oldest),
  and open segments a gateway is still writing.
- **Last batch**: its number, when it finished, what it wrote.
- **Sequence gaps**: every device numbers its messages (``seq``). The broker can lose a
  message it acknowledged (its queues are bounded), so the lake is checked, not trusted.
  Per device, readings are ordered by event time and cut into *epochs*, as deduplication
  cuts them
  (``transforms.series.epoch_starts``: a new boot number, or seq falling by more than 10 %;
  here also a jump forward by more than ``MAX_GAP``, a reflashed device, so one bad counter
  cannot report millions missing); each epoch after the first is a *restart*. A seq inside
  an epoch's range is accounted for when the lake holds it, or the quarantine holds it (a
  quarantined reading is not a lost one). A quarantined message of the device whose seq
  could not be read (malformed JSON, say) may be any of the rest: those are counted against
  them. What is left is *missing*: sent, and nowhere. Late messages that arrive in a later
  batch close their gap: the figure is always computed from what the lake holds now.

- **Broker drops**: episodes in which the broker dropped messages queued for one of the
  gateway's sessions (its queue was full), read from the broker's log, by session and
  tenant. Those messages were acknowledged to their devices and are lost.

The same figures go to a Prometheus textfile (``write_metrics``) that ``process --follow``
refreshes, for node_exporter's textfile collector.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from batch.state import BatchState
from contracts import ContractRegistry, load_registry
from gateway.brokerlog import read_drops
from gateway.landing import closed_segments
from gateway.sessions import SessionBookError, read_session_book
from lake.delta import dataset as lake_dataset
from lake.delta import read_table, table_exists
from lake.layout import months_between, table_rel, tenants
from lake.storage import Store
from pipelines.batch_commit import HELD_FOLDER
from pipelines.settings import Settings
from transforms.series import epoch_starts

__all__ = [
    "MAX_GAP",
    "Backlog",
    "BrokerDrops",
    "Status",
    "backlog",
    "broker_drops",
    "collect_status",
    "seq_gaps",
    "write_metrics",
]

MAX_GAP = 100_000  # a larger forward jump of seq is a restart of the numbering, not a gap


@dataclass(frozen=True, slots=True)
class Backlog:
    closed_segments: int
    closed_bytes: int
    oldest_closed_age_s: float | None
    open_segments: int


def backlog(landing: Path, now: float | None = None) -> Backlog:
    """What the processor has not taken yet (closed/) and what is still open (open/)."""
    now = time.time() if now is None else now
    closed = closed_segments(landing)
    sizes, ages = [], []
    for path in closed:
        try:
            stat = path.stat()
        except FileNotFoundError:  # taken by the processor meanwhile
            continue
        sizes.append(stat.st_size)
        ages.append(now - stat.st_mtime)
    open_dir = landing / "open"
    opened = len(list(open_dir.glob("*.seg"))) if open_dir.is_dir() else 0
    return Backlog(len(sizes), sum(sizes), max(ages) if ages else None, opened)


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


def _quarantined(
    store: Store, tenant_list: list[str], since: datetime, until: datetime | None
) -> pl.DataFrame:
    """tenant, device_id (the authenticated device), seq (null: unreadable), received_at of
    the tenants' quarantined messages received from a little before the window."""
    frames = []
    start = pa.scalar(since - _RECEIVED_BEFORE, pa.timestamp("us", "UTC"))
    for tenant in tenant_list:
        rel = table_rel(tenant, "quarantine")
        if not table_exists(store, rel):
            continue
        table = read_table(
            store,
            rel,
            columns=["device_id", "seq", "received_at"],
            filter=pc.field("received_at") >= start,
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame.with_columns(pl.lit(tenant).alias("tenant")))
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


# --- broker-side drops (issue 12, MQTT) ------------------------------------------------
@dataclass(frozen=True, slots=True)
class BrokerDrops:
    """Drop episodes in the broker's log since a time, per gateway session."""

    log: str
    readable: bool
    episodes: int
    sessions: list[dict[str, Any]]  # {session, tenant, episodes, last}, most episodes first
    configured: bool = False  # a broker writes this log: unreadable means drops unseen


def broker_drops(
    log_path: Path, session_book: Path | None, since: datetime, *, configured: bool = False
) -> BrokerDrops:
    """Episodes of ``log_path`` at or after ``since`` (undated ones count), with each
    session's tenant from the gateway's session book when it can be read. ``configured``:
    a broker is set up to write this log (so an unreadable one hides drops)."""
    episodes = read_drops(log_path)
    tenants: dict[str, str | None] = {}
    if session_book is not None:
        with contextlib.suppress(SessionBookError):  # tenants stay unknown; drops do not
            book = read_session_book(session_book)
            tenants = {s.username: s.tenant for s in (*book.sessions, *book.retired)}
    per: dict[str, dict[str, Any]] = {}
    for episode in episodes or []:
        if episode.at is not None and episode.at < since:
            continue
        row = per.setdefault(
            episode.client,
            {"session": episode.client, "tenant": tenants.get(episode.client), "episodes": 0},
        )
        row["episodes"] += 1
        row["last"] = episode.at.isoformat() if episode.at else None
    rows = sorted(per.values(), key=lambda r: (-r["episodes"], r["session"]))
    return BrokerDrops(
        str(log_path), episodes is not None, sum(r["episodes"] for r in rows), rows, configured
    )


@dataclass
class Status:
    at: str
    pipeline_id: str
    backlog: Backlog
    last_batch: dict[str, Any] | None
    window_hours: float
    devices: int
    devices_with_gaps: int
    missing_total: int
    restarts_total: int
    quarantined_total: int = 0  # gap seqs the quarantine holds (not missing)
    unreadable_total: int = 0  # quarantined without a readable seq, counted against gaps
    held_total: int = 0  # gap seqs the quality gate holds, or a decision kept out
    gaps: list[dict[str, Any]] = field(default_factory=list)  # devices with gaps, worst first
    broker: BrokerDrops | None = None  # drops at the broker in the window (issue 12)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["backlog"] = asdict(self.backlog)
        return out


def _last_batch(store: Store, pipeline_id: str) -> dict[str, Any] | None:
    state = BatchState(store, pipeline_id)
    n = state.last_done()
    if not n:
        return None
    done = state.done(n)
    report = done.to_dict() if done is not None else {}
    return {"batch_no": n, **{k: v for k, v in report.items() if k != "segments"}}


def collect_status(settings: Settings, *, window: timedelta = timedelta(hours=24)) -> Status:
    store = Store.from_uri(settings.lake)
    now = datetime.now(UTC)
    registry = load_registry(settings.contracts_dir) if settings.contracts_dir else None
    gaps = seq_gaps(store, now - window, registry=registry)
    gateway_dir = settings.data_dir / "gateway"
    broker = broker_drops(
        settings.gateway_mqtt_broker_log or gateway_dir / "mosquitto.log",
        settings.gateway_mqtt_credentials or gateway_dir / "gateway-mqtt.json",
        now - window,
        # set explicitly, or the provisioned broker config writes it
        configured=settings.gateway_mqtt_broker_log is not None
        or (gateway_dir / "mosquitto.conf").exists(),
    )
    worst = gaps.filter(pl.col("missing") > 0).sort("missing", descending=True)
    return Status(
        at=now.isoformat(timespec="seconds"),
        pipeline_id=settings.pipeline_id,
        backlog=backlog(settings.landing),
        last_batch=_last_batch(store, settings.pipeline_id),
        window_hours=window.total_seconds() / 3600,
        devices=gaps.height,
        devices_with_gaps=worst.height,
        missing_total=int(gaps["missing"].sum()),
        restarts_total=int(gaps["restarts"].sum()),
        quarantined_total=int(gaps["quarantined"].sum()),
        unreadable_total=int(gaps["unreadable"].sum()),
        held_total=int(gaps["held"].sum()),
        gaps=worst.to_dicts(),
        broker=broker,
    )


def write_metrics(status: Status, path: Path) -> None:
    """The status as a Prometheus textfile (written atomically, for the textfile collector)."""
    registry = CollectorRegistry()
    labels = ["pipeline"]
    pid = status.pipeline_id

    def gauge(name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> None:
        names = labels + sorted(extra or {})
        g = Gauge(name, doc, names, registry=registry)
        g.labels(pid, *[v for _, v in sorted((extra or {}).items())]).set(value)

    b = status.backlog
    gauge(
        "energylake_landing_closed_segments",
        "Closed segments not yet processed.",
        b.closed_segments,
    )
    gauge(
        "energylake_landing_closed_bytes",
        "Bytes in closed segments not yet processed.",
        b.closed_bytes,
    )
    gauge(
        "energylake_landing_oldest_closed_age_seconds",
        "Age of the oldest unprocessed closed segment (0 when none).",
        b.oldest_closed_age_s or 0.0,
    )
    last = status.last_batch or {}
    gauge(
        "energylake_last_batch_number",
        "Number of the last finished batch.",
        last.get("batch_no", 0),
    )
    gauge(
        "energylake_seq_missing",
        f"Sequence numbers in neither the lake nor the quarantine over the last "
        f"{status.window_hours:g} h.",
        status.missing_total,
    )
    gauge(
        "energylake_seq_quarantined",
        "Sequence numbers absent from the lake that the quarantine holds (not missing).",
        status.quarantined_total,
    )
    gauge(
        "energylake_seq_held",
        "Sequence numbers absent from the lake that the quality gate holds (not missing).",
        status.held_total,
    )
    gauge(
        "energylake_seq_devices_with_gaps",
        "Devices with at least one sequence gap in the window.",
        status.devices_with_gaps,
    )
    per_device = Gauge(
        "energylake_seq_missing_by_device",
        "Sequence numbers missing per device (devices with gaps only).",
        ["pipeline", "tenant", "device_id"],
        registry=registry,
    )
    for row in status.gaps:
        per_device.labels(pid, row["tenant"], row["device_id"]).set(row["missing"])
    if status.broker is not None:
        drops = Gauge(
            "energylake_broker_drop_episodes",
            f"Broker drop episodes per gateway session over the last {status.window_hours:g} h.",
            ["pipeline", "session"],
            registry=registry,
        )
        for row in status.broker.sessions:
            drops.labels(pid, row["session"]).set(row["episodes"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".prom", dir=path.parent)
    os.close(fd)
    try:
        write_to_textfile(tmp, registry)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
