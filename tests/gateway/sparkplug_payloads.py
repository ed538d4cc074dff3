"""Sparkplug B payloads as the specification describes them, for the gateway's tests.

Built with the classes compiled from the vendored ``sparkplug_b.proto``, field by field as
Sparkplug B 3.0 (section 6.4) says an edge node fills them: an NBIRTH with seq 0 and a
``bdSeq`` metric (Int64), every BIRTH metric with its name, alias and datatype, DATA
metrics by alias only; integers in ``int_value`` (uint32: Int8/16/32 as two's complement)
or ``long_value`` (uint64). ``wire_ddata_int32`` encodes one DDATA by hand on the
protobuf wire format (no generated code), so the decoder is not only checked against the
encoder it shares a .proto with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import simulator.sparkplug as wire
from gateway.sparkplug import sparkplug_b_pb2 as pb

__all__ = ["EdgeNode", "Metric", "wire_ddata_int32"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    alias: int
    datatype: int
    value: Any = None  # None: is_null


def _set_value(metric: Any, datatype: int, value: Any) -> None:
    if value is None:
        metric.is_null = True
    elif datatype in (pb.Int8, pb.Int16, pb.Int32):
        metric.int_value = value & 0xFFFFFFFF  # two's complement in the uint32 field
    elif datatype in (pb.UInt8, pb.UInt16, pb.UInt32):
        metric.int_value = value
    elif datatype == pb.Int64:
        metric.long_value = value & 0xFFFFFFFFFFFFFFFF
    elif datatype in (pb.UInt64, pb.DateTime):
        metric.long_value = value
    elif datatype == pb.Float:
        metric.float_value = value
    elif datatype == pb.Double:
        metric.double_value = value
    elif datatype == pb.Boolean:
        metric.boolean_value = value
    elif datatype in (pb.String, pb.Text, pb.UUID):
        metric.string_value = value
    elif datatype in (pb.Bytes, pb.File) or datatype >= pb.Int8Array:
        metric.bytes_value = value
    elif datatype == pb.DataSet:
        metric.dataset_value.num_of_columns = 1
        metric.dataset_value.columns.append("c")
        metric.dataset_value.types.append(pb.Int32)
    elif datatype == pb.Template:
        metric.template_value.template_ref = "T"
    else:
        raise AssertionError(f"no test encoding for datatype {datatype}")


@dataclass
class EdgeNode:
    """An edge node that numbers its messages as the specification says: seq 0 at NBIRTH,
    then +1 per message (DBIRTH, NDATA, DDATA, DDEATH) modulo 256; bdSeq +1 per
    connection; a timestamp per message (ms, strictly increasing)."""

    group: str
    name: str
    bd_seq: int = 0
    seq: int = 0
    clock_ms: int = 1_795_000_000_000
    metrics: list[Metric] = field(default_factory=list)
    devices: dict[str, list[Metric]] = field(default_factory=dict)

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.name}"
        return base if device is None else f"{base}/{device}"

    def _payload(self, *, seq: int | None) -> Any:
        self.clock_ms += 1
        payload = pb.Payload(timestamp=self.clock_ms)
        if seq is not None:
            payload.seq = seq
        return payload

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def nbirth(self) -> tuple[str, bytes]:
        self.seq = 0
        payload = self._payload(seq=0)
        bd = payload.metrics.add()
        bd.name, bd.datatype, bd.long_value = "bdSeq", pb.Int64, self.bd_seq
        rebirth = payload.metrics.add()
        rebirth.name, rebirth.datatype = "Node Control/Rebirth", pb.Boolean
        rebirth.boolean_value = False
        self._add_birth_metrics(payload, self.metrics)
        return self.topic("NBIRTH"), payload.SerializeToString()

    def dbirth(self, device: str) -> tuple[str, bytes]:
        payload = self._payload(seq=self._next_seq())
        self._add_birth_metrics(payload, self.devices[device])
        return self.topic("DBIRTH", device), payload.SerializeToString()

    @staticmethod
    def _add_birth_metrics(payload: Any, metrics: list[Metric]) -> None:
        for m in metrics:
            metric = payload.metrics.add()
            metric.name, metric.alias, metric.datatype = m.name, m.alias, m.datatype
            _set_value(metric, m.datatype, m.value)

    def data(
        self,
        device: str | None,
        values: dict[int, Any],
        *,
        by_name: bool = False,
        seq: int | None = None,
    ) -> tuple[str, bytes]:
        """NDATA (device None) or DDATA with ``alias -> value`` (by name if ``by_name``)."""
        payload = self._payload(seq=self._next_seq() if seq is None else seq)
        table = self.metrics if device is None else self.devices[device]
        types = {m.alias: m for m in table}
        for alias, value in values.items():
            metric = payload.metrics.add()
            known = types.get(alias)
            if by_name and known is not None:
                metric.name = known.name
            else:
                metric.alias = alias
            metric.timestamp = self.clock_ms
            _set_value(metric, known.datatype if known else pb.Int32, value)
        kind = "NDATA" if device is None else "DDATA"
        return self.topic(kind, device), payload.SerializeToString()

    def ndeath(self, bd_seq: int | None = None) -> tuple[str, bytes]:
        """The Will registered at connect: no seq, the bdSeq of its NBIRTH."""
        payload = pb.Payload(timestamp=self.clock_ms)
        bd = payload.metrics.add()
        bd.name, bd.datatype = "bdSeq", pb.Int64
        bd.long_value = self.bd_seq if bd_seq is None else bd_seq
        return self.topic("NDEATH"), payload.SerializeToString()

    def ddeath(self, device: str) -> tuple[str, bytes]:
        payload = self._payload(seq=self._next_seq())
        return self.topic("DDEATH", device), payload.SerializeToString()


def wire_ddata_int32(*, timestamp_ms: int, seq: int, alias: int, value: int) -> bytes:
    """A DDATA payload on the wire, by hand: Payload{timestamp=1, metrics=2, seq=3} and one
    Metric{alias=2, int_value=10} holding ``value`` as the uint32 two's complement (the
    simulator's own encoder, which shares no code with the generated classes)."""
    return wire.payload(
        timestamp_ms, seq, [wire.metric(alias=alias, value=value, as_type=wire.INT32)]
    )
