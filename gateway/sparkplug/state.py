"""What the gateway knows of each Sparkplug B edge node, kept across restarts: its birth,
aliases, seq and the recent messages it landed.

Per (group, edge node): the bdSeq of the current NBIRTH, ``boot`` (a birth session number
the gateway counts, +1 at each NBIRTH), the alias tables (alias -> name, name -> datatype)
of the NBIRTH and of each device's DBIRTH, the last Sparkplug seq (0-255, wrapping), a
pending gap (from a seq gap until the next NBIRTH), the next lake ``seq`` per device in
this boot, and a bounded window of recent messages (a digest of topic and payload ->
the ``boot`` and ``seq`` they were landed with).

The window is what makes a redelivery land with the same (boot, seq): the gateway acks a
message only after its landing fsync and after this state was written (``persist``, from
the committer's callback), so a message the broker sends again was either not in the
state written (processed again from the state before it, in the broker's order: the same
numbers) or is in its window (the numbers recorded). The window holds the last
``WINDOW_MESSAGES`` messages of an edge node, more than the broker keeps in flight to the
gateway (``max_inflight_messages`` in infra/mosquitto/mosquitto.conf).

Thread-safe: paho's threads translate, the committer's thread persists. One JSON file
per edge node, ``<folder>/<group>/<edge node>.json``, written atomically (fsync of the
file and the folder) only when it changed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from contracts.errors import EnergylakeError
from durable.files import atomic_write, is_temp
from gateway.sparkplug import sparkplug_b_pb2 as pb
from gateway.sparkplug.codec import (
    SparkplugTopic,
    UnsupportedValue,
    metric_value,
    ncmd_topic,
    rebirth_payload,
)

__all__ = [
    "STATE_VERSION",
    "WINDOW_MESSAGES",
    "MetricTable",
    "NodeState",
    "SparkplugState",
    "SparkplugStateError",
    "Translation",
]

log = logging.getLogger(__name__)

STATE_VERSION = 1
WINDOW_MESSAGES = 1024  # > the broker's max_inflight_messages (1000)
UNKNOWN_ALIAS = "UNKNOWN_ALIAS"
SEQ_GAP = "SEQ_GAP"
STALE_DEATH = "STALE_DEATH"
_BD_SEQ = "bdSeq"


class SparkplugStateError(EnergylakeError):
    """An edge node's state file is not one this gateway writes (moved aside at start)."""


@dataclass(slots=True)
class MetricTable:
    """The metrics one BIRTH declared: name -> datatype, alias -> name."""

    types: dict[str, int] = field(default_factory=dict)
    aliases: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"types": self.types, "aliases": {str(a): n for a, n in self.aliases.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MetricTable:
        return cls(
            {str(n): int(t) for n, t in raw["types"].items()},
            {int(a): str(n) for a, n in raw["aliases"].items()},
        )


# digest -> (boot, seq, bd_seq, problem code, problem detail)
_Seen = tuple[int, int, int | None, str | None, str | None]


@dataclass(slots=True)
class NodeState:
    """One edge node (see the module docstring)."""

    group: str
    edge_node: str
    boot: int
    bd_seq: int | None = None
    alive: bool = False  # an NBIRTH was seen and no NDEATH of its bdSeq since
    gap: str | None = None  # a seq gap seen since the last NBIRTH (a rebirth is awaited)
    last_seq: int | None = None
    node: MetricTable = field(default_factory=MetricTable)
    devices: dict[str, MetricTable] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)  # device ("" = the node) -> next seq
    recent: OrderedDict[str, _Seen] = field(default_factory=OrderedDict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "group": self.group,
            "edge_node": self.edge_node,
            "boot": self.boot,
            "bd_seq": self.bd_seq,
            "alive": self.alive,
            "gap": self.gap,
            "last_seq": self.last_seq,
            "node": self.node.to_json(),
            "devices": {d: t.to_json() for d, t in self.devices.items()},
            "seqs": self.seqs,
            "recent": [[k, *v] for k, v in self.recent.items()],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NodeState:
        if raw.get("version") != STATE_VERSION:
            raise SparkplugStateError(
                f"Sparkplug state version {raw.get('version')!r}, expected {STATE_VERSION}"
            )
        recent: OrderedDict[str, _Seen] = OrderedDict()
        for digest, boot, seq, bd_seq, code, detail in raw["recent"]:
            recent[str(digest)] = (int(boot), int(seq), bd_seq, code, detail)
        return cls(
            group=str(raw["group"]),
            edge_node=str(raw["edge_node"]),
            boot=int(raw["boot"]),
            bd_seq=None if raw["bd_seq"] is None else int(raw["bd_seq"]),
            alive=bool(raw["alive"]),
            gap=raw["gap"],
            last_seq=None if raw["last_seq"] is None else int(raw["last_seq"]),
            node=MetricTable.from_json(raw["node"]),
            devices={str(d): MetricTable.from_json(t) for d, t in raw["devices"].items()},
            seqs={str(d): int(s) for d, s in raw["seqs"].items()},
            recent=recent,
        )


@dataclass(frozen=True, slots=True)
class Translation:
    """What to land for one Sparkplug message, and what else to do.

    ``payload``: the JSON document (docs/SPARKPLUG.md), or the bytes as received when they
    are not a Sparkplug payload (``decoded`` False). ``rebirth``: an NCMD (topic, payload)
    to publish now (rate-limited per edge node). ``problem``: its code, if any.
    ``duplicate``: a redelivery, landed with the (boot, seq) of its first landing.
    """

    payload: bytes
    decoded: bool
    problem: str | None = None
    rebirth: tuple[str, bytes] | None = None
    duplicate: bool = False


class SparkplugState:
    """Translates Sparkplug B messages to the landed JSON and keeps the edge nodes' state.

    ``folder`` None keeps the state in memory only (tests of the state machine). A node
    first seen (no state file) starts its boot counter at the current Unix time in seconds,
    so a node whose state file was lost still lands boots above every boot it landed
    before (unless it was reborn more than once a second on average).
    """

    def __init__(
        self,
        folder: Path | None,
        *,
        rebirth_interval_s: float = 5.0,
        window_messages: int = WINDOW_MESSAGES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self._rebirth_interval_s = rebirth_interval_s
        self._window = window_messages
        self._clock = clock
        self._wall_clock_s = wall_clock_s
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._nodes: dict[tuple[str, str], NodeState] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._last_rebirth: dict[tuple[str, str], float] = {}
        if folder is not None:
            self._load(folder)

    # -- persistence

    def _path(self, key: tuple[str, str]) -> Path:
        assert self.folder is not None
        return self.folder / key[0] / f"{key[1]}.json"

    def _load(self, folder: Path) -> None:
        for path in sorted(folder.glob("*/*.json")):
            if is_temp(path.name):
                continue
            try:
                node = NodeState.from_json(orjson.loads(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError, SparkplugStateError) as exc:
                aside = path.with_name(f"{path.name}.unreadable-{time.time_ns()}")
                log.error(
                    "Sparkplug state %s unreadable (%s): moved to %s; the edge node starts "
                    "afresh (its boots continue from the current time)",
                    path,
                    exc,
                    aside.name,
                )
                path.rename(aside)
                continue
            self._nodes[(node.group, node.edge_node)] = node

    @property
    def dirty(self) -> bool:
        """Some edge node's state changed since it was last written."""
        return bool(self._dirty)

    def persist(self) -> int:
        """Write the state files of the edge nodes that changed (atomically, fsynced);
        the number written. Called before the messages that changed them are acked."""
        if self.folder is None:
            self._dirty.clear()
            return 0
        with self._write_lock:
            with self._lock:
                todo = [(k, orjson.dumps(self._nodes[k].to_json())) for k in self._dirty]
                self._dirty.clear()
            try:
                for key, data in todo:
                    atomic_write(self._path(key), data, mode=0o600)
            except OSError:
                with self._lock:
                    self._dirty.update(k for k, _ in todo)
                raise
        return len(todo)

    def node(self, group: str, edge_node: str) -> NodeState | None:
        """The state of one edge node (for tests and status), None when never seen."""
        with self._lock:
            return self._nodes.get((group, edge_node))

    # -- translation

    def translate(self, topic: SparkplugTopic, topic_name: str, raw: bytes) -> Translation:
        """The landed form of one message on ``topic_name`` (parsed as ``topic``), in the
        order the broker delivered it; updates the edge node's state."""
        try:
            payload = pb.Payload.FromString(raw)
        except (DecodeError, ValueError):
            return Translation(raw, decoded=False, problem="MALFORMED_PAYLOAD")
        digest = hashlib.blake2b(
            topic_name.encode("utf-8", "surrogatepass") + b"\x00" + raw, digest_size=12
        ).hexdigest()
        key = (topic.group, topic.edge_node)
        with self._lock:
            node = self._nodes.get(key)
            if node is None:
                node = NodeState(topic.group, topic.edge_node, boot=int(self._wall_clock_s()))
                self._nodes[key] = node
            seen = node.recent.get(digest)
            duplicate = seen is not None
            rebirth = False
            if seen is None:
                code, detail, rebirth = self._apply(node, topic, payload)
                device = topic.device or ""
                seq = node.seqs.get(device, 0)
                node.seqs[device] = seq + 1
                bd_seq = _bd_seq(payload) if topic.type == "NDEATH" else node.bd_seq
                seen = (node.boot, seq, bd_seq, code, detail)
                node.recent[digest] = seen
                while len(node.recent) > self._window:
                    node.recent.popitem(last=False)
                self._dirty.add(key)
            boot, seq, bd_seq, code, detail = seen
            birth = topic.type in ("NBIRTH", "DBIRTH")
            table = node.node if topic.device is None else node.devices.get(topic.device)
            metrics, stamps, skipped, unknown = _decode(payload, table, birth=birth)
            if unknown and code is None and topic.type in ("NDATA", "DDATA") and not duplicate:
                code = UNKNOWN_ALIAS
                detail = f"alias(es) {', '.join(unknown)} not in the {_birth_of(topic)}"
                node.recent[digest] = (boot, seq, bd_seq, code, detail)
                rebirth = True
            ncmd = self._rebirth(key, topic) if rebirth else None
        document = {
            "sparkplug": "B",
            "group": topic.group,
            "type": topic.type,
            "edge_node": topic.edge_node,
            "device": topic.device,
            "bd_seq": bd_seq,
            "boot": boot,
            "seq": seq,
            "sp_seq": int(payload.seq) if payload.HasField("seq") else None,
            "timestamp": int(payload.timestamp) if payload.HasField("timestamp") else None,
            "metrics": metrics,
            "metric_timestamps": stamps,
            "skipped": skipped,
            "problem": None if code is None else {"code": code, "detail": detail},
            "raw": base64.b64encode(raw).decode("ascii"),
        }
        return Translation(orjson.dumps(document), True, code, ncmd, duplicate)

    def _rebirth(self, key: tuple[str, str], topic: SparkplugTopic) -> tuple[str, bytes] | None:
        """The NCMD to publish, unless one went to this edge node within the interval."""
        now = self._clock()
        last = self._last_rebirth.get(key)
        if last is not None and now - last < self._rebirth_interval_s:
            return None
        self._last_rebirth[key] = now
        ms = int(self._wall_clock_s() * 1000)
        return ncmd_topic(topic.group, topic.edge_node), rebirth_payload(ms)

    def _apply(
        self, node: NodeState, topic: SparkplugTopic, payload: Any
    ) -> tuple[str | None, str | None, bool]:
        """Update ``node`` for a new message: (problem code, detail, rebirth wanted)."""
        kind = topic.type
        sp_seq = int(payload.seq) if payload.HasField("seq") else None
        if kind == "NBIRTH":
            node.boot += 1
            node.bd_seq = _bd_seq(payload)
            node.alive = True
            node.gap = None
            node.last_seq = sp_seq if sp_seq is not None and sp_seq <= 255 else None
            node.node = _table(payload)
            node.devices = {}
            node.seqs = {}
            return None, None, False
        if kind == "NDEATH":
            bd_seq = _bd_seq(payload)
            if node.bd_seq is not None and bd_seq == node.bd_seq:
                node.alive = False
                return None, None, False
            return (
                STALE_DEATH,
                f"NDEATH bdSeq {bd_seq} is not the current NBIRTH's ({node.bd_seq})",
                False,
            )
        # DBIRTH, NDATA, DDATA, DDEATH carry the edge node's seq
        code: str | None = None
        detail: str | None = None
        if not node.alive:
            code, detail = UNKNOWN_ALIAS, "no NBIRTH of this edge node since the gateway's "
            detail += "state began or since its NDEATH"
            node.last_seq = sp_seq
        else:
            detail = _check_seq(node, sp_seq)
            if detail is not None:
                code = SEQ_GAP
        if kind == "DBIRTH":
            node.devices[str(topic.device)] = _table(payload)
        elif kind == "DDATA" and topic.device not in node.devices and code is None:
            code, detail = UNKNOWN_ALIAS, f"no DBIRTH of device {topic.device} in this boot"
        return code, detail, code is not None


def _check_seq(node: NodeState, sp_seq: int | None) -> str | None:
    """Advance the node's seq; a problem's detail when the message is not trusted."""
    if sp_seq is None or sp_seq > 255:
        node.gap = "no seq in the payload" if sp_seq is None else f"seq {sp_seq} outside 0-255"
        return node.gap
    last = node.last_seq
    node.last_seq = sp_seq
    if last is not None and sp_seq != (last + 1) % 256:
        node.gap = f"seq {sp_seq} after {last} (expected {(last + 1) % 256})"
        return node.gap
    if node.gap is not None:
        return f"awaiting the rebirth requested after a gap: {node.gap}"
    return None


def _birth_of(topic: SparkplugTopic) -> str:
    return "NBIRTH" if topic.device is None else f"DBIRTH of device {topic.device}"


def _bd_seq(payload: Any) -> int | None:
    for metric in payload.metrics:
        if metric.name == _BD_SEQ:
            kind = metric.WhichOneof("value")
            if kind in ("int_value", "long_value"):
                return int(getattr(metric, kind))
    return None


def _table(payload: Any) -> MetricTable:
    """The metric table a BIRTH declares (metrics with a name and a datatype)."""
    table = MetricTable()
    for metric in payload.metrics:
        if not metric.name or not metric.HasField("datatype"):
            continue
        table.types[metric.name] = int(metric.datatype)
        if metric.HasField("alias"):
            table.aliases[int(metric.alias)] = metric.name
    return table


def _decode(
    payload: Any, table: MetricTable | None, *, birth: bool
) -> tuple[dict[str, Any], dict[str, int], list[dict[str, Any]], list[str]]:
    """(metrics by name, their timestamps, skipped metrics with why, unknown aliases)."""
    metrics: dict[str, Any] = {}
    stamps: dict[str, int] = {}
    skipped: list[dict[str, Any]] = []
    unknown: list[str] = []
    for metric in payload.metrics:
        alias = int(metric.alias) if metric.HasField("alias") else None
        name: str | None = metric.name or None
        if name is None and alias is not None and table is not None:
            name = table.aliases.get(alias)
        if name is None:
            if alias is None:
                why = "no name and no alias"
            else:
                why = "unknown alias"
                unknown.append(str(alias))
            skipped.append({"name": None, "alias": alias, "reason": why})
            continue
        datatype = None if birth or table is None else table.types.get(name)
        if datatype is None and metric.HasField("datatype"):
            datatype = int(metric.datatype)
        if datatype is None:
            unknown.append(name)
            skipped.append({"name": name, "alias": alias, "reason": "no datatype, not in BIRTH"})
            continue
        try:
            value = metric_value(metric, datatype)
        except UnsupportedValue as exc:
            skipped.append({"name": name, "alias": alias, "reason": str(exc)})
            continue
        if name in metrics:
            why = "repeated in the payload: the last value is landed"
            skipped.append({"name": name, "alias": alias, "reason": why})
        metrics[name] = value
        if metric.HasField("timestamp"):
            stamps[name] = int(metric.timestamp)
    return metrics, stamps, skipped, unknown
