"""Sparkplug B on the wire: topics, metric values by datatype, the rebirth command.

Pure functions over the compiled ``sparkplug_b.proto`` (``sparkplug_b_pb2``); the state
that ties DATA to its BIRTH is in ``gateway/sparkplug/state.py``.

Integers travel unsigned: Int8, Int16 and Int32 in ``int_value`` (uint32) and Int64 in
``long_value`` (uint64), in two's complement. A value is read with the datatype its BIRTH
declared and sign-extended from that width, so an Int8 of -1 sent as ``0xFF`` or as
``0xFFFFFFFF`` (both seen in the field) reads -1.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from contracts.errors import EnergylakeError
from gateway.sparkplug import sparkplug_b_pb2 as pb

__all__ = [
    "DATA_TYPES",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "SparkplugTopic",
    "UnsupportedValue",
    "metric_value",
    "ncmd_topic",
    "parse_topic",
    "rebirth_payload",
    "type_name",
]

NAMESPACE = "spBv1.0"
NODE_TYPES = ("NBIRTH", "NDATA", "NDEATH")
DEVICE_TYPES = ("DBIRTH", "DDATA", "DDEATH")
MESSAGE_TYPES = NODE_TYPES + DEVICE_TYPES
REBIRTH_METRIC = "Node Control/Rebirth"

_SIGNED_BITS: dict[int, int] = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}
_UNSIGNED_BITS: dict[int, int] = {pb.UInt8: 8, pb.UInt16: 16, pb.UInt32: 32, pb.UInt64: 64}
_STRINGS = (pb.String, pb.Text, pb.UUID)
_INTEGER_FIELDS = ("int_value", "long_value")
# The datatypes whose values are landed (the others are skipped with a note).
DATA_TYPES = frozenset(
    {*_SIGNED_BITS, *_UNSIGNED_BITS, pb.Float, pb.Double, pb.Boolean, *_STRINGS, pb.DateTime}
)


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """``spBv1.0/<group>/<type>/<edge node>[/<device>]``: device is None for N* types."""

    group: str
    type: str
    edge_node: str
    device: str | None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """The parts of a Sparkplug B topic of one of the six types the gateway decodes (BIRTH,
    DATA, DEATH of a node or device); None for any other topic (NCMD, DCMD, STATE, ...)."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE or len(parts) not in (4, 5):
        return None
    kind = parts[2]
    if len(parts) == 4 and kind in NODE_TYPES:
        return SparkplugTopic(parts[1], kind, parts[3], None)
    if len(parts) == 5 and kind in DEVICE_TYPES:
        return SparkplugTopic(parts[1], kind, parts[3], parts[4])
    return None


def ncmd_topic(group: str, edge_node: str) -> str:
    return f"{NAMESPACE}/{group}/NCMD/{edge_node}"


def rebirth_payload(timestamp_ms: int) -> bytes:
    """An NCMD payload asking the edge node for a rebirth (``Node Control/Rebirth`` =
    true, a Boolean), as a host application sends it."""
    payload = pb.Payload(timestamp=timestamp_ms)
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = timestamp_ms
    metric.datatype = pb.Boolean
    metric.boolean_value = True
    data: bytes = payload.SerializeToString()
    return data


def type_name(datatype: int) -> str:
    """The DataType's name in the .proto, or ``#<number>`` for a number it does not define."""
    try:
        return str(pb.DataType.Name(datatype))
    except ValueError:
        return f"#{datatype}"


class UnsupportedValue(EnergylakeError):  # noqa: N818 - a reason to skip, caught by the caller
    """A metric whose value is not landed (unsupported type, a value field that does not
    fit its datatype, out of range, not finite): the message says why."""


def _float32(value: float) -> float:
    """A float32 as the shortest decimal that reads back as the same float32 (1.1, not
    1.100000023841858)."""
    if not math.isfinite(value):
        return value
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == value:
            return short
    return value


def metric_value(metric: Any, datatype: int) -> Any:
    """The JSON value of ``metric`` read as ``datatype`` (the BIRTH's); None for a null
    metric. Raises ``UnsupportedValue`` for a value that is not landed."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        raise UnsupportedValue("no value and not is_null")
    bits = _SIGNED_BITS.get(datatype)
    if bits is not None:
        if kind not in _INTEGER_FIELDS:
            raise UnsupportedValue(f"{type_name(datatype)} sent in {kind}")
        raw = int(getattr(metric, kind)) & ((1 << bits) - 1)
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    bits = _UNSIGNED_BITS.get(datatype)
    if bits is not None:
        if kind not in _INTEGER_FIELDS:
            raise UnsupportedValue(f"{type_name(datatype)} sent in {kind}")
        value = int(getattr(metric, kind))
        if value >> bits:
            raise UnsupportedValue(f"{value} out of range for {type_name(datatype)}")
        return value
    if datatype == pb.DateTime:
        if kind not in _INTEGER_FIELDS:
            raise UnsupportedValue(f"DateTime sent in {kind}")
        return int(getattr(metric, kind))
    if datatype in (pb.Float, pb.Double):
        if kind not in ("float_value", "double_value"):
            raise UnsupportedValue(f"{type_name(datatype)} sent in {kind}")
        number = float(getattr(metric, kind))
        if not math.isfinite(number):
            raise UnsupportedValue(f"{number} is not a finite number (no JSON for it)")
        return _float32(number) if kind == "float_value" else number
    if datatype == pb.Boolean:
        if kind != "boolean_value":
            raise UnsupportedValue(f"Boolean sent in {kind}")
        return bool(metric.boolean_value)
    if datatype in _STRINGS:
        if kind != "string_value":
            raise UnsupportedValue(f"{type_name(datatype)} sent in {kind}")
        return str(metric.string_value)
    raise UnsupportedValue(f"unsupported datatype {type_name(datatype)}")
