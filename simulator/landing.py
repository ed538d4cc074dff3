"""Simulated telemetry written as a landing log, as the gateway would have written it.

``LandingSink`` is a ``sink`` for ``simulator.run.simulate``: it takes each branch's
messages, spools their payloads to a temporary file (memory holds only small columns),
and on ``finish()`` writes every message to landing segments in reception order
(received_at, then seq) with source ``mqtt``, the message's topic, and the device id as
identity (the MQTT username the device authenticates with). Segments roll on simulated
reception time (default every 900 s) and at ``roll_bytes``; all of them end closed.
``ledger`` then lists every injected fault with the landing address of its record
(segment and offset), in landing order.
"""

from __future__ import annotations

import json
import mmap
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from contracts import ContractRegistry
from contracts.errors import ConfigError
from landing.format import MIB, Envelope, LandingError
from landing.writer import LandingWriter
from simulator.config import SimConfig
from simulator.run import LEDGER_NAME, SimResult, ledger_entry, simulate
from simulator.stream import Message

__all__ = ["LANDING_SUMMARY_NAME", "LandingSink", "LandingSummary", "simulate_to_landing"]

LANDING_SUMMARY_NAME = "landing.json"
_BATCH = 4096


@dataclass(frozen=True, slots=True)
class LandingSummary:
    """What a ``LandingSink`` wrote."""

    root: Path
    writer_id: str
    segments: tuple[str, ...]
    records: int
    bytes: int
    first_received_at_us: int | None
    last_received_at_us: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "writer_id": self.writer_id,
            "segments": list(self.segments),
            "records": self.records,
            "bytes": self.bytes,
            "first_received_at_us": self.first_received_at_us,
            "last_received_at_us": self.last_received_at_us,
        }


class LandingSink:
    """Collects the simulator's messages; ``finish()`` writes them as closed segments.

    ``root`` must hold no segments yet unless ``replace=True`` (which deletes the
    ``*.seg`` files under ``open/`` and ``closed/`` first). ``fsync`` defaults to False:
    simulated data can be made again; pass True for a crash-safe log.
    """

    def __init__(
        self,
        root: Path,
        *,
        writer_id: str = "simulator",
        roll_seconds: float = 900.0,
        roll_bytes: int = 64 * MIB,
        fsync: bool = False,
        replace: bool = False,
        spool_dir: Path | None = None,
    ) -> None:
        self.root = Path(root)
        existing = [p for d in ("open", "closed") for p in (self.root / d).glob("*.seg")]
        if existing and not replace:
            raise LandingError(
                f"{self.root} already holds {len(existing)} landing segment(s); "
                "pass replace=True to delete them first"
            )
        for path in existing:
            path.unlink()
        self.writer_id = writer_id
        self.roll_seconds = roll_seconds
        self.roll_bytes = roll_bytes
        self.fsync = fsync
        self._spool: IO[bytes] | None = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        self._spooled = 0
        self._received: list[npt.NDArray[np.float64]] = []
        self._seq: list[npt.NDArray[np.int64]] = []
        self._topic: list[npt.NDArray[np.int32]] = []
        self._device: list[npt.NDArray[np.int32]] = []
        self._length: list[npt.NDArray[np.int64]] = []
        self._topics: dict[str, int] = {}
        self._devices: dict[str, int] = {}
        self._faults: dict[int, dict[str, Any]] = {}  # message index -> ledger entry
        self.summary: LandingSummary | None = None
        self.ledger: list[dict[str, Any]] = []

    def __call__(self, messages: list[Message], seed: int) -> None:
        """Take one branch's messages (``seed`` is unused: payloads use ``msg.seq``)."""
        if self._spool is None:
            raise LandingError("landing sink is already finished")
        payloads = [msg.payload(msg.seq) for msg in messages]
        topics, devices = self._topics, self._devices
        self._received.append(np.array([m.received_at for m in messages], dtype=np.float64))
        self._seq.append(np.array([m.seq for m in messages], dtype=np.int64))
        self._topic.append(
            np.array([topics.setdefault(m.topic, len(topics)) for m in messages], dtype=np.int32)
        )
        self._device.append(
            np.array(
                [devices.setdefault(m.device_id, len(devices)) for m in messages], dtype=np.int32
            )
        )
        self._length.append(np.array([len(p) for p in payloads], dtype=np.int64))
        self._spool.write(b"".join(payloads))
        for i, msg in enumerate(messages):
            if msg.fault:
                self._faults[self._spooled + i] = ledger_entry(msg)
        self._spooled += len(messages)

    def __enter__(self) -> LandingSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.discard()

    def discard(self) -> None:
        """Drop what was collected without writing segments."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def finish(self) -> LandingSummary:
        """Write every collected message, close all segments; idempotent."""
        if self.summary is not None:
            return self.summary
        if self._spool is None:
            raise LandingError("landing sink was discarded")
        spool, self._spool = self._spool, None
        try:
            self.summary = self._write(spool)
        finally:
            spool.close()
        return self.summary

    close = finish

    def _write(self, spool: IO[bytes]) -> LandingSummary:
        segments: list[str] = []
        written = first = last = 0
        with LandingWriter(
            self.root,
            self.writer_id,
            roll_bytes=self.roll_bytes,
            roll_seconds=self.roll_seconds,
            fsync=self.fsync,
            clock=None,
        ) as writer:
            if self._spooled:
                received = np.concatenate(self._received)
                order = np.lexsort((np.concatenate(self._seq), received))
                us = np.rint(received[order] * 1e6).astype(np.int64)
                del received
                lengths = np.concatenate(self._length)
                starts = (np.cumsum(lengths) - lengths)[order]
                stops = starts + lengths[order]
                del lengths
                topic_ix = np.concatenate(self._topic)[order]
                device_ix = np.concatenate(self._device)[order]
                # Where each faulty message lands in writing order, to find its record.
                position = np.empty_like(order)
                position[order] = np.arange(len(order))
                faulty = sorted((int(position[i]), entry) for i, entry in self._faults.items())
                wanted = np.array([pos for pos, _ in faulty], dtype=np.int64)
                del order, position
                topic_names = list(self._topics)
                device_names = list(self._devices)
                spool.flush()
                with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    for i in range(0, len(us), _BATCH):
                        part = slice(i, i + _BATCH)
                        batch = [
                            Envelope(at, "mqtt", topic_names[t], device_names[d], buf[a:b])
                            for at, t, d, a, b in zip(
                                us[part].tolist(),
                                topic_ix[part].tolist(),
                                device_ix[part].tolist(),
                                starts[part].tolist(),
                                stops[part].tolist(),
                                strict=True,
                            )
                        ]
                        refs = writer.append_many(batch)
                        for ref in refs:
                            if not segments or segments[-1] != ref.segment:
                                segments.append(ref.segment)
                        lo, hi = np.searchsorted(wanted, [i, i + len(batch)])
                        for pos, entry in faulty[lo:hi]:
                            ref = refs[pos - i]
                            self.ledger.append(
                                {**entry, "segment": ref.segment, "offset": ref.offset}
                            )
                written, first, last = len(us), int(us[0]), int(us[-1])
        size = sum((self.root / "closed" / name).stat().st_size for name in segments)
        return LandingSummary(
            root=self.root,
            writer_id=self.writer_id,
            segments=tuple(segments),
            records=written,
            bytes=size,
            first_received_at_us=first if written else None,
            last_received_at_us=last if written else None,
        )


def simulate_to_landing(
    config: SimConfig,
    out: Path,
    landing_root: Path,
    registry: ContractRegistry | None = None,
    **kw: Any,
) -> SimResult:
    """Simulate into ``out`` (reference data, manifest) with telemetry as a landing log.

    ``kw`` goes to ``LandingSink``. The sink's summary is written to ``out/landing.json``,
    the fault ledger (each fault's record by segment and offset) to ``out/faults.ndjson``.
    No telemetry NDJSON is written on this route, nor vendor devices: what the gateway lands
    for them (a Sparkplug B document, an identity by MQTT name) is the gateway's work.
    """
    if config.vendor_devices:
        raise ConfigError(
            "vendor devices are published through the broker and the gateway, not written "
            "to landing segments directly",
            setting="vendor_devices",
            value=list(config.vendor_devices),
        )
    sink = LandingSink(landing_root, **kw)
    try:
        result = simulate(config, out, registry=registry, sink=sink)
    except BaseException:
        sink.discard()
        raise
    summary = sink.finish()
    (out / LANDING_SUMMARY_NAME).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    (out / LEDGER_NAME).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in sink.ledger))
    return result
