"""``energylake status``: what the platform holds and owes, from the lake and the landing log.

- **Backlog**: closed landing segments not yet processed (count, bytes, age of the oldest),
  and open segments a gateway is still writing.
- **Last batch**: its number, when it finished, what it wrote.
- **Sequence gaps**: per device, the seqs sent and held nowhere (``analytics.gaps.seq_gaps``
  says how they are counted).
- **Broker drops**: episodes in which the broker dropped messages queued for one of the
  gateway's sessions (its queue was full), read from the broker's log, by session and
  tenant. Those messages were acknowledged to their devices and are lost.

The same figures go to a Prometheus textfile (``write_metrics``) that ``process --follow``
refreshes, for node_exporter's textfile collector.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from analytics.gaps import (
    SILENT_CADENCES,
    SILENT_MIN_S,
    seq_gaps,
    silent_devices,
    undecoded_topics,
)
from batch.state import BatchState
from contracts import load_registry
from durable.files import atomic_write
from gateway.brokerlog import read_drops
from gateway.sessions import SessionBookError, read_session_book
from lake.storage import Store
from landing.reader import closed_segments
from pipelines.settings import Settings

__all__ = [
    "Backlog",
    "BrokerDrops",
    "Status",
    "backlog",
    "broker_drops",
    "collect_status",
    "write_metrics",
]


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
    # active registered devices that sent nothing for 3 cadences (at least 15 min)
    silent: list[dict[str, Any]] = field(default_factory=list)
    # messages on topics no decoder reads (quarantined UNDECODED_TOPIC), by device and topic
    undecoded: list[dict[str, Any]] = field(default_factory=list)
    # the Modbus poller's status file (DATA_DIR/modbus/status.json), if it has run
    modbus: dict[str, Any] | None = None

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
    silent = silent_devices(store, now - window, now, registry=registry)
    undecoded = undecoded_topics(store, now - window, now)
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
        silent=silent.sort("silent_s", descending=True).to_dicts(),
        undecoded=undecoded.to_dicts(),
        modbus=_modbus(settings.data_dir / "modbus" / "status.json"),
    )


def _modbus(path: Path) -> dict[str, Any] | None:
    """The Modbus poller's status file (gateway/modbus.py documents it); None when it has
    never run; ``{"unreadable": reason}`` when it cannot be read."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"unreadable": str(exc)[:200]}
    return data if isinstance(data, dict) else {"unreadable": "not a JSON object"}


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

    def per_device(name: str, doc: str, rows: list[dict[str, Any]], value: str) -> None:
        g = Gauge(name, doc, ["pipeline", "tenant", "device_id"], registry=registry)
        for row in rows:
            g.labels(pid, row["tenant"], row["device_id"]).set(row[value])

    per_device(
        "energylake_seq_missing_by_device",
        "Sequence numbers missing per device (devices with gaps only).",
        status.gaps,
        "missing",
    )
    gauge(
        "energylake_devices_silent",
        f"Active registered devices that sent nothing for {SILENT_CADENCES} cadences (at least"
        f" {SILENT_MIN_S} s), looking back {status.window_hours:g} h.",
        len(status.silent),
    )
    per_device(
        "energylake_device_silent_seconds",
        "Seconds since a silent device's last message (or since the window's start).",
        status.silent,
        "silent_s",
    )
    gauge(
        "energylake_undecoded_messages",
        f"Messages on topics no decoder reads (quarantined UNDECODED_TOPIC) over the last "
        f"{status.window_hours:g} h.",
        sum(int(r["messages"]) for r in status.undecoded),
    )
    polled = (status.modbus or {}).get("devices") or {}
    gauge(
        "energylake_modbus_devices_failing",
        "Modbus devices whose last poll failed (the poller's status file).",
        sum(1 for d in polled.values() if d.get("state") == "failing"),
    )
    if status.broker is not None:
        drops = Gauge(
            "energylake_broker_drop_episodes",
            f"Broker drop episodes per gateway session over the last {status.window_hours:g} h.",
            ["pipeline", "session"],
            registry=registry,
        )
        for row in status.broker.sessions:
            drops.labels(pid, row["session"]).set(row["episodes"])
    atomic_write(path, generate_latest(registry))
