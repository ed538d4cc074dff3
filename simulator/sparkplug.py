"""A simulated Sparkplug B edge node: NBIRTH, DBIRTH and DDATA (report by exception) encoded
on the protobuf wire format by hand, as Sparkplug B 3.0 (section 6.4) says an edge node
fills them.

The simulator may not import the gateway (tests/test_layout.py), whose generated classes of
the vendored ``sparkplug_b.proto`` decode these payloads; the few fields an edge node writes
are encoded here instead (``Payload{timestamp=1, metrics=2, seq=3}``, ``Metric{name=1,
alias=2, timestamp=3, datatype=4, long_value=11, double_value=13, boolean_value=14}``), so
the gateway's decoder is checked against an encoder it does not share.

Numbering: the NBIRTH has seq 0 and a ``bdSeq`` metric (Int64); every later message of the
node takes seq + 1 modulo 256. A DBIRTH names every metric with an alias and a datatype
(Double: the contract's numbers); a DDATA carries by alias only the metrics whose value
changed since the device's last message, and is not sent when none did.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["BOOLEAN", "DOUBLE", "INT32", "INT64", "EdgeNode", "metric", "payload"]

INT32 = 3
INT64 = 4
DOUBLE = 10
BOOLEAN = 11


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _uint(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(value)


def _bytes(number: int, body: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(body)) + body


def metric(
    *,
    name: str | None = None,
    alias: int | None = None,
    datatype: int | None = None,
    value: float | int | bool,
    as_type: int | None = None,
) -> bytes:
    """One ``Metric`` message (a Double, an Int32, an Int64 or a Boolean by ``datatype``;
    ``as_type`` picks the value field when the datatype is not sent, as in DATA by alias).
    An Int32 travels in the uint32 ``int_value``, as its two's complement."""
    kind = datatype if datatype is not None else as_type
    body = b""
    if name is not None:
        body += _bytes(1, name.encode())
    if alias is not None:
        body += _uint(2, alias)
    if datatype is not None:
        body += _uint(4, datatype)
    if isinstance(value, bool):
        body += _uint(14, int(value))
    elif kind == INT32:
        body += _uint(10, int(value) & 0xFFFFFFFF)
    elif kind == INT64:
        body += _uint(11, int(value) & 0xFFFFFFFFFFFFFFFF)
    else:
        body += _tag(13, 1) + struct.pack("<d", float(value))
    return body


def payload(timestamp_ms: int, seq: int | None, metrics: list[bytes]) -> bytes:
    """A ``Payload`` with its timestamp, metrics and seq (none for an NDEATH)."""
    body = _uint(1, timestamp_ms) + b"".join(_bytes(2, m) for m in metrics)
    return body + (_uint(3, seq) if seq is not None else b"")


@dataclass
class EdgeNode:
    """An edge node (its MQTT account is ``name``) in group ``group``."""

    group: str
    name: str
    bd_seq: int = 0
    seq: int = 0
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> name -> alias
    last: dict[str, dict[str, float]] = field(default_factory=dict)  # device -> last values

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.name}"
        return base if device is None else f"{base}/{device}"

    def _next(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def nbirth(self, timestamp_ms: int) -> tuple[str, bytes]:
        self.seq = 0
        metrics = [
            metric(name="bdSeq", datatype=INT64, value=self.bd_seq),
            metric(name="Node Control/Rebirth", datatype=BOOLEAN, value=False),
        ]
        return self.topic("NBIRTH"), payload(timestamp_ms, 0, metrics)

    def dbirth(self, device: str, values: dict[str, float], timestamp_ms: int) -> tuple[str, bytes]:
        aliases = {n: i + 1 for i, n in enumerate(values)}
        self.aliases[device] = aliases
        self.last[device] = dict(values)
        metrics = [
            metric(name=n, alias=aliases[n], datatype=DOUBLE, value=v) for n, v in values.items()
        ]
        rebirth = len(aliases) + 1
        metrics.append(
            metric(name="Device Control/Rebirth", alias=rebirth, datatype=BOOLEAN, value=False)
        )
        return self.topic("DBIRTH", device), payload(timestamp_ms, self._next(), metrics)

    def ddata(
        self, device: str, values: dict[str, float], timestamp_ms: int
    ) -> tuple[tuple[str, bytes], dict[str, float]] | None:
        """The DDATA of what changed, and the changed values; None when nothing did."""
        last = self.last[device]
        changed = {n: v for n, v in values.items() if last.get(n) != v}
        if not changed:
            return None
        last.update(changed)
        aliases = self.aliases[device]
        metrics = [metric(alias=aliases[n], value=v) for n, v in changed.items()]
        return (self.topic("DDATA", device), payload(timestamp_ms, self._next(), metrics)), changed
