"""A Modbus TCP device on loopback: pymodbus's own server serving a register map's values
from given readings, with hooks to delay, drop, answer exception codes and serve garbage.

The poller's tests use it, and the simulator's Modbus devices (with their truth manifest)
can. A register map is taken structurally (``RegisterSpec``: anything with the fields of
``gateway.modbus_maps.RegisterField``), so the simulator does not import the gateway.

    server = RegisterServer()
    server.add_device(1, load_map("dse_gencomm").fields, {"engine_speed_rpm": 1500.0, ...})
    port = await server.start()            # a free loopback port
    server.fault(1).delay_s = 0.5          # answers come late
    server.set_raw(1, {"oil_pressure_kpa": 0xFFFF})   # a register's raw code (a sentinel)
    await server.stop()

Faults, per unit id (``Fault``): ``delay_s`` before answering; ``drop`` never answers (the
client times out); ``exception_code`` answers that Modbus exception (2 illegal address, 4
device failure, 6 busy, ...); ``garbage`` ``"nan"`` serves every register as a float32 NaN
pattern (0x7FC0), ``"short"`` answers one register fewer than asked. ``stop()`` closes the
listener and its connections (the device disappears); ``start()`` again on the same port
brings it back. ``on_request`` sees each read before it is answered: ``simulator/live.py``
serves the next reading of a simulated meter at the first request of each poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["Fault", "RegisterServer", "RegisterSpec", "encode_value"]

_TYPES: dict[str, tuple[ModbusClientMixin.DATATYPE, int, bool]] = {
    "uint16": (ModbusClientMixin.DATATYPE.UINT16, 1, False),
    "int16": (ModbusClientMixin.DATATYPE.INT16, 1, False),
    "uint32": (ModbusClientMixin.DATATYPE.UINT32, 2, False),
    "int32": (ModbusClientMixin.DATATYPE.INT32, 2, False),
    "float32": (ModbusClientMixin.DATATYPE.FLOAT32, 2, True),
    "uint64": (ModbusClientMixin.DATATYPE.UINT64, 4, False),
    "int64": (ModbusClientMixin.DATATYPE.INT64, 4, False),
    "float64": (ModbusClientMixin.DATATYPE.FLOAT64, 4, True),
}
_FC_FUNCTION = {3: "holding", 4: "input"}
_NAN_WORD = 0x7FC0


class RegisterSpec(Protocol):
    """What the server needs of a register map's field."""

    @property
    def name(self) -> str: ...
    @property
    def function(self) -> str: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def word_order(self) -> Literal["big", "little"]: ...
    @property
    def scale(self) -> Fraction | float: ...
    @property
    def values(self) -> dict[int, str] | None: ...


@dataclass
class Fault:
    """What a unit does wrong now (all off by default)."""

    delay_s: float = 0.0
    drop: bool = False
    exception_code: int | None = None
    garbage: Literal["nan", "short"] | None = None


def encode_value(spec: RegisterSpec, value: float | str | int, *, raw: bool = False) -> list[int]:
    """The registers of one field holding ``value`` (in the contract's unit, or the raw
    register value with ``raw=True``)."""
    data_type, _, is_float = _TYPES[spec.type]
    number: float | int
    if isinstance(value, str):
        codes = {text: code for code, text in (spec.values or {}).items()}
        number = codes[value]
    elif raw:
        number = value
    else:
        scaled = Fraction(value) / Fraction(spec.scale) if math.isfinite(value) else value
        number = float(scaled) if is_float else round(scaled)
    if not is_float:
        number = int(number)
    return ModbusClientMixin.convert_to_registers(number, data_type, word_order=spec.word_order)


@dataclass
class _Unit:
    specs: dict[str, RegisterSpec]
    registers: dict[str, dict[int, int]] = field(
        default_factory=lambda: {"input": {}, "holding": {}}
    )
    fault: Fault = field(default_factory=Fault)


class RegisterServer:
    """pymodbus's TCP server on ``host`` serving units (see the module doc)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[int, str, int, int], None] | None = None,
    ) -> None:
        """``on_request(unit_id, function, address, count)`` runs before each read request is
        answered (on the server's loop): it may change the unit's values for this answer."""
        self.host = host
        self.port = port
        self.on_request = on_request
        self._units: dict[int, _Unit] = {}
        self._server: ModbusTcpServer | None = None
        self.requests = 0

    def add_device(
        self,
        unit_id: int,
        fields: Iterable[RegisterSpec],
        readings: Mapping[str, float | str] | None = None,
    ) -> None:
        """Serve a unit with a map's fields (before ``start``)."""
        self._units[unit_id] = _Unit({f.name: f for f in fields})
        self.set_readings(unit_id, readings or {})

    def fault(self, unit_id: int) -> Fault:
        return self._units[unit_id].fault

    def set_readings(self, unit_id: int, readings: Mapping[str, float | str]) -> None:
        """The registers of these fields hold these values (in the contract's units)."""
        unit = self._units[unit_id]
        for name, value in readings.items():
            self._put(unit, unit.specs[name], encode_value(unit.specs[name], value))

    def set_raw(self, unit_id: int, raw: Mapping[str, int | float]) -> None:
        """The registers of these fields hold these raw values (before scale: a sentinel)."""
        unit = self._units[unit_id]
        for name, value in raw.items():
            self._put(unit, unit.specs[name], encode_value(unit.specs[name], value, raw=True))

    @staticmethod
    def _put(unit: _Unit, spec: RegisterSpec, words: list[int]) -> None:
        table = unit.registers[spec.function]
        for i, word in enumerate(words):
            table[spec.address + i] = word

    def _simdevice(self, unit_id: int, unit: _Unit) -> SimDevice:
        blocks: list[list[SimData]] = []
        for function in ("holding", "input"):
            specs = [s for s in unit.specs.values() if s.function == function]
            if specs:
                lo = min(s.address for s in specs)
                hi = max(s.address + _TYPES[s.type][1] for s in specs)
                blocks.append([SimData(lo, values=[0] * (hi - lo), datatype=DataType.REGISTERS)])
            else:
                blocks.append([SimData(0, values=[0], datatype=DataType.REGISTERS)])
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            self.requests += 1
            fault = unit.fault
            if fault.drop:
                await asyncio.sleep(3600)
            if fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault.exception_code is not None:
                return ExcCodes(fault.exception_code)
            function = _FC_FUNCTION.get(func_code, "")
            if self.on_request is not None and function:
                self.on_request(unit_id, function, address, count)
            table = unit.registers.get(function, {})
            for i in range(len(registers)):
                registers[i] = table.get(start_address + i, 0)
            if fault.garbage == "nan":
                registers[:] = [_NAN_WORD] * len(registers)
            return None

        return SimDevice(
            id=unit_id, simdata=(bits, list(bits), blocks[0], blocks[1]), action=action
        )

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        unit = self._units.get(pdu.dev_id)
        if sending and unit is not None and unit.fault.garbage == "short":
            registers: Any = getattr(pdu, "registers", None)
            if registers:
                pdu.registers = list(registers)[:-1]
        return pdu

    async def start(self) -> int:
        """Listen (on a free port the first time when ``port`` was 0); returns the port."""
        devices = [self._simdevice(uid, unit) for uid, unit in sorted(self._units.items())]
        server = ModbusTcpServer(
            context=devices, address=(self.host, self.port), trace_pdu=self._trace_pdu
        )
        await server.serve_forever(background=True)
        self._server = server
        if self.port == 0:
            transport: Any = server.transport
            self.port = int(transport.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close the listener and every connection: the device disappears."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> RegisterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
