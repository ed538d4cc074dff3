"""Modbus register maps: YAML data files that say where a device keeps each reading.

A map (``gateway/registers/<name>.yaml``, shipped as package data) names the device kind it
serves (``meter``, ``dg``, ``solar``: the readings contract it fills) and, per contract
field, where the value lives and how to turn registers into the contract's number::

    name: eastron_sdm630
    kind: meter
    max_gap: 8            # optional: unread registers a single request may span (default 8)
    max_registers: 100    # optional: registers per request (default 100, Modbus allows 125)
    fields:
      power_kw: {function: input, address: 0x34, type: float32, word_order: big,
                 scale: 0.001, unit: kW}
      battery_voltage_v: {function: holding, address: 1029, type: uint16, scale: 1/10,
                          unit: V, sentinel: u16}
      status: {function: holding, address: 1408, type: uint16,
               values: {0: stopped, 3: running}}

``function``: ``input`` (function code 4) or ``holding`` (3). ``address``: the wire address
(0-based, as in the request PDU). ``type``: ``uint16``, ``int16``, ``uint32``, ``int32``,
``float32``, ``uint64``, ``int64``, ``float64``. ``word_order``: ``big`` (most significant
word first, the default) or ``little``; bytes within a word are always big-endian. ``scale``:
a number or ``1/N`` (exact division, as the contracts' sentinel specs divide); the value is
``raw * scale`` and must then be in ``unit``, which must be the contract field's unit (the
map converts, the pipeline does not). ``sentinel``: the register's "not available" codes,
``u16``/``s16``/``u32``/``s32`` (the GenComm top eight codes) or a list of raw integers; the
poller passes such a value through scaled, and the pipeline stores it as NULL with the
SENTINEL flag, so these codes times ``scale`` must be codes the contract declares.
``values``: for a string field, raw code -> contract value.

``lint_map`` checks a map file against the contracts and returns every problem with its
file, YAML path and reason (``energylake modbus lint``); ``load_map`` refuses a map with one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pymodbus.client.mixin import ModbusClientMixin

from contracts import ContractRegistry, load_registry
from contracts.errors import EXIT_CONFIG, EnergylakeError, LintIssue
from contracts.model import sentinel_values

__all__ = [
    "MAPS_DIR",
    "TYPES",
    "GarbageError",
    "MapError",
    "ReadBlock",
    "RegisterField",
    "RegisterMap",
    "available_maps",
    "decode_field",
    "lint_map",
    "load_map",
    "map_path",
    "parse_map",
]

MAPS_DIR: Final = Path(__file__).parent / "registers"

Function = Literal["input", "holding"]
WordOrder = Literal["big", "little"]

_DT = ModbusClientMixin.DATATYPE
# type name -> (pymodbus data type, registers, is a float)
TYPES: Final[dict[str, tuple[ModbusClientMixin.DATATYPE, int, bool]]] = {
    "uint16": (_DT.UINT16, 1, False),
    "int16": (_DT.INT16, 1, False),
    "uint32": (_DT.UINT32, 2, False),
    "int32": (_DT.INT32, 2, False),
    "float32": (_DT.FLOAT32, 2, True),
    "uint64": (_DT.UINT64, 4, False),
    "int64": (_DT.INT64, 4, False),
    "float64": (_DT.FLOAT64, 4, True),
}
_SENTINEL_NAME = re.compile(r"(u16|s16|u32|s32)")
_NAME = re.compile(r"[a-z][a-z0-9_]{1,63}")
_SCALE = re.compile(r"\s*1\s*/\s*([1-9][0-9]*)\s*")
_MAX_REQUEST = 125  # registers one Modbus read may ask for
_FIELD_KEYS = frozenset(
    {"function", "address", "type", "word_order", "scale", "unit", "sentinel", "values"}
)
_MAP_KEYS = frozenset(
    {"name", "kind", "description", "source", "max_gap", "max_registers", "fields"}
)


class MapError(EnergylakeError):
    """A register map that cannot be used: unknown name, or a file the lint rejects."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, issues: list[LintIssue] | None = None) -> None:
        self.issues = issues or []
        lines = "".join(f"\n  {issue}" for issue in self.issues)
        super().__init__(message + lines)


class GarbageError(EnergylakeError, ValueError):
    """Registers that do not hold a value of their field (NaN, an unlisted code, the wrong
    count): the device or the map is wrong; the poller counts the poll as ``garbage``."""


@dataclass(frozen=True, slots=True)
class RegisterField:
    """Where one contract field lives on the device and how to read it."""

    name: str
    function: Function
    address: int
    type: str
    word_order: WordOrder
    scale: Fraction | float
    unit: str | None
    sentinels: frozenset[int]
    values: dict[int, str] | None

    @property
    def count(self) -> int:
        return TYPES[self.type][1]

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count

    def scaled(self, raw: int | float) -> float:
        if isinstance(self.scale, Fraction):
            return (
                float(Fraction(raw) * self.scale)
                if isinstance(raw, int)
                else raw * float(self.scale)
            )
        return raw * self.scale


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` with ``function``."""

    function: Function
    address: int
    count: int
    fields: tuple[RegisterField, ...]


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A parsed map: its name, the device kind, its fields and the requests that read them."""

    name: str
    kind: str
    fields: tuple[RegisterField, ...]
    max_gap: int = 8
    max_registers: int = 100
    description: str = ""
    source: str = ""

    def blocks(self) -> tuple[ReadBlock, ...]:
        """The fields grouped into as few requests as the gap and size limits allow."""
        out: list[ReadBlock] = []
        for function in ("input", "holding"):
            fields = sorted(
                (f for f in self.fields if f.function == function), key=lambda f: f.address
            )
            group: list[RegisterField] = []
            for f in fields:
                if group and (
                    f.address - max(g.end for g in group) > self.max_gap
                    or f.end - group[0].address > self.max_registers
                ):
                    out.append(_block(function, group))
                    group = []
                group.append(f)
            if group:
                out.append(_block(function, group))
        return tuple(out)


def _block(function: Function, group: list[RegisterField]) -> ReadBlock:
    start = group[0].address
    return ReadBlock(function, start, max(g.end for g in group) - start, tuple(group))


def decode_field(f: RegisterField, registers: list[int]) -> float | str | None:
    """The field's value from its registers: a number scaled to the contract's unit (a
    sentinel code passes through, scaled), a ``values`` string, or None for a string field
    whose register holds a sentinel. ``GarbageError`` when the registers hold garbage (a
    float that is NaN or infinite, a code ``values`` does not list, the wrong length)."""
    if len(registers) != f.count:
        raise GarbageError(f"{f.name}: {len(registers)} registers, expected {f.count}")
    data_type, _, is_float = TYPES[f.type]
    raw = ModbusClientMixin.convert_from_registers(registers, data_type, word_order=f.word_order)
    if not isinstance(raw, int | float):
        raise GarbageError(f"{f.name}: not a number ({raw!r})")
    if is_float and not math.isfinite(raw):
        raise GarbageError(f"{f.name}: {raw} is not a finite number")
    if f.values is not None:
        if isinstance(raw, int) and raw in f.values:
            return f.values[raw]
        if isinstance(raw, int) and raw in f.sentinels:
            return None
        raise GarbageError(f"{f.name}: code {raw} is none of {sorted(f.values)}")
    value = f.scaled(raw)
    if not math.isfinite(value):
        raise GarbageError(f"{f.name}: {value} is not a finite number")
    return value


# --------------------------------------------------------------------------- files


def map_path(name: str) -> Path:
    """The shipped map file of ``name``."""
    return MAPS_DIR / f"{name}.yaml"


def available_maps() -> list[str]:
    """The names of the shipped maps."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.yaml"))


def load_map(name_or_path: str | Path, registry: ContractRegistry | None = None) -> RegisterMap:
    """A shipped map by name (or a map file by path), linted against the contracts."""
    path = Path(name_or_path) if isinstance(name_or_path, Path) else map_path(name_or_path)
    if not path.is_file():
        shipped = ", ".join(available_maps()) or "none"
        raise MapError(f"register map {str(name_or_path)!r} not found (shipped: {shipped})")
    registry = registry or load_registry()
    parsed, issues = _read(path)
    issues += _semantic(str(path), parsed, registry) if parsed is not None else []
    if parsed is None or issues:
        raise MapError(f"register map {path} has problems (energylake modbus lint)", issues)
    return parsed


def lint_map(path: Path, registry: ContractRegistry | None = None) -> list[LintIssue]:
    """Every problem of a map file: structure, then the fields against the kind's readings
    contract (unknown field, unit, sentinel codes, overlapping registers, request size)."""
    parsed, issues = _read(path)
    if parsed is not None:
        issues += _semantic(str(path), parsed, registry or load_registry())
    return issues


def _read(path: Path) -> tuple[RegisterMap | None, list[LintIssue]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [LintIssue(str(path), "(root)", "M001", f"not readable YAML: {exc}")]
    return parse_map(data, str(path), default_name=path.stem)


def parse_map(
    data: Any, file: str, *, default_name: str | None = None
) -> tuple[RegisterMap | None, list[LintIssue]]:
    """A map from its YAML data, and the structural problems found (the map is None when
    there is one)."""
    issues: list[LintIssue] = []

    def bad(path: str, code: str, message: str) -> None:
        issues.append(LintIssue(file, path, code, message))

    if not isinstance(data, dict):
        bad("(root)", "M002", "a map is a mapping with kind and fields")
        return None, issues
    for key in sorted(set(data) - _MAP_KEYS, key=str):
        bad(str(key), "M003", f"unknown key (known: {', '.join(sorted(_MAP_KEYS))})")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        bad("name", "M004", f"name {name!r} must match {_NAME.pattern}")
    if default_name is not None and name != default_name:
        bad("name", "M004", f"name {name!r} differs from the file name {default_name!r}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        bad("kind", "M005", "kind (the device kind this map serves: meter, dg, solar) is missing")
    limits = {}
    for key, default, top in (("max_gap", 8, _MAX_REQUEST), ("max_registers", 100, _MAX_REQUEST)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            bad(key, "M006", f"{key} must be an integer from 0 to {top}")
            value = default
        limits[key] = value
    if limits["max_registers"] < 4:
        bad("max_registers", "M006", "max_registers must be at least 4 (a 64-bit value)")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        bad("fields", "M007", "fields must be a non-empty mapping of contract field -> register")
        raw_fields = {}
    fields = []
    for fname, spec in raw_fields.items():
        parsed = _field(str(fname), spec, f"fields.{fname}", bad)
        if parsed is not None:
            fields.append(parsed)
    if issues:
        return None, issues
    return (
        RegisterMap(
            name=str(name),
            kind=str(kind),
            fields=tuple(fields),
            max_gap=limits["max_gap"],
            max_registers=limits["max_registers"],
            description=str(data.get("description", "")),
            source=str(data.get("source", "")),
        ),
        issues,
    )


def _field(name: str, spec: Any, at: str, bad: Any) -> RegisterField | None:
    ok = True

    def fail(key: str, code: str, message: str) -> None:
        nonlocal ok
        ok = False
        bad(f"{at}.{key}" if key else at, code, message)

    if not isinstance(spec, dict):
        fail("", "M010", "a field is a mapping (function, address, type, ...)")
        return None
    for key in sorted(set(spec) - _FIELD_KEYS, key=str):
        fail(str(key), "M011", f"unknown key (known: {', '.join(sorted(_FIELD_KEYS))})")
    function = spec.get("function")
    if function not in ("input", "holding"):
        fail("function", "M012", f"function {function!r} is not input or holding")
    address = spec.get("address")
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        fail("address", "M013", f"address {address!r} is not a register address 0..65535")
        address = 0
    type_ = spec.get("type")
    if type_ not in TYPES:
        fail("type", "M014", f"type {type_!r} is not one of {', '.join(TYPES)}")
        type_ = "uint16"
    elif address + TYPES[type_][1] > 0x10000:
        fail("address", "M013", "the value runs past register 65535")
    word_order = spec.get("word_order", "big")
    if word_order not in ("big", "little"):
        fail("word_order", "M015", f"word_order {word_order!r} is not big or little")
    scale = _scale(spec.get("scale", 1))
    if scale is None:
        fail("scale", "M016", f"scale {spec.get('scale')!r} is not a non-zero number or 1/N")
    unit = spec.get("unit")
    if unit is not None and not isinstance(unit, str):
        fail("unit", "M017", "unit must be a string")
    sentinels = _sentinels(spec.get("sentinel"))
    if sentinels is None:
        fail("sentinel", "M018", "sentinel is u16, s16, u32, s32 or a list of raw integers")
    values = spec.get("values")
    if values is not None and not (
        isinstance(values, dict)
        and values
        and all(isinstance(k, int) and isinstance(v, str) for k, v in values.items())
    ):
        fail("values", "M019", "values maps raw integer codes to the contract's strings")
    if values is not None and TYPES[type_][2]:
        fail("values", "M019", "values need an integer type")
    if not ok:
        return None
    assert scale is not None
    assert sentinels is not None
    return RegisterField(
        name=name,
        function="input" if function == "input" else "holding",
        address=address,
        type=type_,
        word_order=word_order,
        scale=scale,
        unit=unit,
        sentinels=sentinels,
        values=dict(values) if values is not None else None,
    )


def _scale(value: Any) -> Fraction | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value != 0:
        return Fraction(value)
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return value
    if isinstance(value, str) and (match := _SCALE.fullmatch(value)):
        return Fraction(1, int(match.group(1)))
    return None


def _sentinels(value: Any) -> frozenset[int] | None:
    if value is None:
        return frozenset()
    if isinstance(value, str) and _SENTINEL_NAME.fullmatch(value):
        spec = sentinel_values(value)  # raw codes: the spec without a divisor
        return frozenset(int(v) for v in spec)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return frozenset(value)
    return None


def _semantic(file: str, m: RegisterMap, registry: ContractRegistry) -> list[LintIssue]:
    issues: list[LintIssue] = []

    def bad(path: str, code: str, message: str) -> None:
        issues.append(LintIssue(file, path, code, message))

    dataset = registry.dataset_of_kind.get(m.kind)
    if dataset is None:
        kinds = ", ".join(sorted(registry.dataset_of_kind))
        bad("kind", "M020", f"kind {m.kind!r} has no readings contract (kinds: {kinds})")
        return issues
    contract = {f.name: f for f in registry.get(dataset).fields}
    for f in m.fields:
        at = f"fields.{f.name}"
        field = contract.get(f.name)
        if field is None or f.name in ("client_id", "branch_id", "device_id", "seq", "ts"):
            bad(at, "M021", f"{f.name!r} is not a reading of {dataset}")
            continue
        is_string = field.physical_type == "string"
        if is_string and f.values is None:
            bad(at, "M022", f"{f.name} is a string in {dataset}: give values (code -> string)")
        if not is_string and f.values is not None:
            bad(f"{at}.values", "M022", f"{f.name} is a number in {dataset}, not a string")
        allowed = {str(v) for v in field.allowed_values or ()}
        if f.values is not None and allowed:
            for code, text in f.values.items():
                if text not in allowed:
                    bad(f"{at}.values.{code}", "M023", f"{text!r} is not one of {sorted(allowed)}")
        if not is_string and (field.unit or None) != (f.unit or None):
            bad(
                f"{at}.unit",
                "M024",
                f"unit {f.unit!r} is not {dataset}.{f.name}'s {field.unit!r}: the map "
                "converts (scale) to the contract's unit; no other is convertible here",
            )
        bad_codes = _unknown_sentinels(f, field.sentinels)
        if bad_codes:
            bad(
                f"{at}.sentinel",
                "M025",
                f"codes {bad_codes} times scale {f.scale} are not sentinels of "
                f"{dataset}.{f.name} (the pipeline would store them as numbers)",
            )
        if field.sentinels and not f.sentinels:
            bad(
                f"{at}.sentinel",
                "M026",
                f"{dataset}.{f.name} declares sentinels: the map must name the register's "
                "codes and use a type and scale that give them",
            )
        if f.sentinels and not f.values and not _codes_fit(f):
            bad(f"{at}.sentinel", "M027", f"sentinel codes do not fit type {f.type}")
    for i, a in enumerate(sorted(m.fields, key=lambda f: (f.function, f.address))):
        for b in sorted(m.fields, key=lambda f: (f.function, f.address))[i + 1 :]:
            if a.function == b.function and a.address < b.end and b.address < a.end:
                bad(
                    f"fields.{b.name}.address",
                    "M028",
                    f"registers {b.address}..{b.end - 1} overlap {a.name}'s "
                    f"{a.address}..{a.end - 1} ({a.function})",
                )
    return issues


def _codes_fit(f: RegisterField) -> bool:
    bits = 16 * f.count
    low, high = (
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        if f.type.startswith("int")
        else (
            0,
            (1 << bits) - 1,
        )
    )
    return all(low <= c <= high for c in f.sentinels) and not TYPES[f.type][2]


def _unknown_sentinels(f: RegisterField, declared: tuple[float, ...]) -> list[int]:
    if f.values is not None or not f.sentinels:
        return []
    out = []
    for code in sorted(f.sentinels):
        value = f.scaled(code)
        slack = max(1e-9, 1e-7 * abs(value))
        if not any(abs(value - d) <= slack for d in declared):
            out.append(code)
    return out
