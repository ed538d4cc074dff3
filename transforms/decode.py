"""Decode: raw payload bytes to typed reading columns, one decoder per topic pattern.

Decoders (chosen by topic or path, first match wins):

- ``canonical``: ``emaas/v1/<client>/<branch>/<device>/telemetry`` carrying the energylake
  envelope ``{"device_id", "seq", "ts", "readings": {...}, "units": {...}}`` (and ``boot``,
  optional: the device's boot number), or a JSON array of such envelopes (batched uploads).
- ``tasmota``: ``tele/<device>/SENSOR`` with Tasmota's ``{"Time", "ENERGY": {...}}``.

The canonical path is columnar: each payload is checked for well-formed JSON by orjson (C,
one call per payload, nothing kept), then all good payloads are parsed in one go by Arrow's
strict JSON reader against an explicit schema built from the contracts
(``transforms/ndjson.py``). Arrow rejects a string where a number belongs, a boolean, a
number too large for a double and a key given twice, and names the row; that row is
quarantined and the rest parsed again. Keys the contracts do not know are skipped by the
reader, found by counting colons, named in ``_unknown`` and quarantined by ``enforce`` as
SCHEMA_MISMATCH (a reading with more than ``ndjson.MAX_KEYS`` keys already here). Only
rejected payloads take the slow path that explains them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from contracts import ContractRegistry
from transforms import ndjson
from transforms.frames import ELEM, ROW, Chunk, reject_frame

__all__ = [
    "CANONICAL_TOPIC",
    "TASMOTA_TOPIC",
    "DecodeSchema",
    "decode_chunk",
]

CANONICAL_TOPIC = re.compile(
    r"^emaas/v1/([a-z0-9][a-z0-9-]{1,31})/([a-z0-9][a-z0-9-]{1,47})/([a-z0-9][a-z0-9-]{1,63})"
    r"/telemetry$"
)
TASMOTA_TOPIC = re.compile(r"^tele/([a-z0-9][a-z0-9-]{1,63})/SENSOR$")
_NON_FINITE_TOKEN = re.compile(rb"(?<![\w\"])-?(?:NaN|Infinity)(?![\w\"])")
# orjson's message for a number that overflows a double (1e400): NON_FINITE, as over HTTP.
_BEYOND_DOUBLE = "number is infinity when parsed as double"
# Reading fields whose unit a device may declare in "units" (power and energy only).
_UNIT_FIELDS = (
    "power_kw",
    "power_l1_kw",
    "power_l2_kw",
    "power_l3_kw",
    "apparent_power_kva",
    "reactive_power_kvar",
    "energy_import_kwh",
    "energy_export_kwh",
    "energy_generated_kwh",
)
_STRING_READINGS = ("status",)


@dataclass(frozen=True, slots=True)
class DecodeSchema:
    """What any decoder may produce: the union of the readings contracts' value fields."""

    numeric: tuple[str, ...]
    strings: tuple[str, ...]
    by_dataset: dict[str, frozenset[str]]

    @classmethod
    def from_registry(cls, registry: ContractRegistry) -> DecodeSchema:
        numeric: list[str] = []
        strings: list[str] = []
        by_dataset: dict[str, frozenset[str]] = {}
        for dataset in registry.readings_datasets:
            names = []
            for f in registry.get(dataset).fields:
                if f.name in _SYSTEM_COLUMNS:
                    continue
                names.append(f.name)
                bucket = strings if f.physical_type == "string" else numeric
                if f.name not in bucket:
                    bucket.append(f.name)
            by_dataset[dataset] = frozenset(names)
        return cls(tuple(numeric), tuple(strings), by_dataset)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.numeric + self.strings

    def arrow_schema(self) -> pa.Schema:
        readings = pa.struct(
            [pa.field(n, pa.float64()) for n in self.numeric]
            + [pa.field(n, pa.string()) for n in self.strings]
        )
        units = pa.struct([pa.field(n, pa.string()) for n in _UNIT_FIELDS])
        return pa.schema(
            [
                pa.field("device_id", pa.string()),
                pa.field("seq", pa.float64()),
                pa.field("ts", pa.float64()),
                pa.field("boot", pa.float64()),
                pa.field("readings", readings),
                pa.field("units", units),
            ]
        )

    def empty_rows(self) -> pl.DataFrame:
        schema: dict[str, Any] = {
            ROW: pl.Int64,
            ELEM: pl.Int32,
            "decoder": pl.String,
            "claim_client": pl.String,
            "claim_branch": pl.String,
            "claim_device": pl.String,
            "device_id": pl.String,
            "seq": pl.Float64,
            "ts": pl.Float64,
            "boot": pl.Float64,
            "ts_local": pl.String,
            "_unknown": pl.String,
        }
        schema.update({n: pl.Float64 for n in self.numeric})
        schema.update({n: pl.String for n in self.strings})
        schema.update({f"unit__{n}": pl.String for n in _UNIT_FIELDS})
        return pl.DataFrame(schema=schema)


_SYSTEM_COLUMNS = frozenset(
    {
        "client_id",
        "branch_id",
        "device_id",
        "seq",
        "ts",
        "boot",
        "received_at",
        "event_month",
        "quality_flags",
    }
)


def decode_chunk(chunk: Chunk, schema: DecodeSchema, *, payload_limit: int) -> None:
    """Fill ``chunk.rows`` with decoded readings and add rejects for what cannot be decoded."""
    env = chunk.envelopes
    topics = Topics.of(env.column("topic"))
    sizes = pc.binary_length(env.column("payload")).to_numpy(zero_copy_only=False)
    too_large = sizes > payload_limit
    if too_large.any():
        chunk.reject(
            reject_frame(
                _rows(np.flatnonzero(too_large).tolist()),
                "PAYLOAD_TOO_LARGE",
                f"payload larger than the {payload_limit}-byte limit",
                "decode",
            )
        )
    kind = np.where(too_large, _TOO_LARGE, topics.kind)
    unknown_topic = np.flatnonzero(kind == _UNKNOWN).tolist()
    if unknown_topic:
        chunk.reject(
            reject_frame(
                _rows(unknown_topic), "MALFORMED_PAYLOAD", "no decoder for this topic", "decode"
            )
        )
    canonical = np.flatnonzero(kind == _CANONICAL).tolist()
    tasmota = np.flatnonzero(kind == _TASMOTA).tolist()
    payloads: list[bytes] = env.column("payload").to_pylist() if canonical or tasmota else []
    frames = [schema.empty_rows()]
    if canonical:
        frames.append(_decode_canonical(chunk, schema, canonical, payloads, topics))
    if tasmota:
        frames.append(_decode_tasmota(chunk, schema, tasmota, payloads, topics))
    rows = pl.concat(frames, how="diagonal_relaxed")
    chunk.rows = rows.select(schema.empty_rows().columns)


_UNKNOWN, _CANONICAL, _TASMOTA, _TOO_LARGE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Topics:
    """A chunk's topics, worked out once per distinct topic (a fleet sends on a few
    hundred topics, a chunk holds tens of thousands of messages): for each row, which
    decoder applies, and what client, branch and device the topic claims."""

    kind: npt.NDArray[np.int8]  # per row: _UNKNOWN, _CANONICAL or _TASMOTA
    code: npt.NDArray[np.int32]  # per row: index into the distinct topics
    client: pa.StringArray  # per distinct topic
    branch: pa.StringArray
    device: pa.StringArray

    @classmethod
    def of(cls, topics: pa.ChunkedArray | pa.Array) -> Topics:
        if isinstance(topics, pa.ChunkedArray):
            topics = topics.combine_chunks()
        encoded = pc.dictionary_encode(topics)
        kinds: list[int] = []
        claims: list[tuple[str | None, str | None, str | None]] = []
        for topic in encoded.dictionary.to_pylist():
            m = CANONICAL_TOPIC.match(topic)
            if m:
                kinds.append(_CANONICAL)
                claims.append((m.group(1), m.group(2), m.group(3)))
                continue
            t = TASMOTA_TOPIC.match(topic)
            kinds.append(_TASMOTA if t else _UNKNOWN)
            claims.append((None, None, t.group(1) if t else None))
        code = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        return cls(
            kind=np.array(kinds, dtype=np.int8)[code] if kinds else np.zeros(0, np.int8),
            code=code,
            client=pa.array([c[0] for c in claims], pa.string()),
            branch=pa.array([c[1] for c in claims], pa.string()),
            device=pa.array([c[2] for c in claims], pa.string()),
        )

    def device_claim(self, row: int) -> str | None:
        value = self.device[int(self.code[row])].as_py()
        return None if value is None else str(value)

    def claims(self, rows: npt.NDArray[np.int64]) -> list[pl.Series]:
        """The claim columns for these chunk rows."""
        at = pa.array(self.code[rows])
        return [
            pl.Series("claim_client", self.client.take(at), dtype=pl.String),
            pl.Series("claim_branch", self.branch.take(at), dtype=pl.String),
            pl.Series("claim_device", self.device.take(at), dtype=pl.String),
        ]


def _rows(idx: Sequence[int], elems: Sequence[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {ROW: list(idx), ELEM: list(elems) if elems is not None else [0] * len(idx)},
        schema={ROW: pl.Int64, ELEM: pl.Int32},
    )


def _explain_unparsable(payload: bytes, error: Exception) -> tuple[str, str]:
    """Why orjson refused a payload: NON_FINITE when the only problem is a NaN / Infinity
    token or a number beyond the double range (``1e400``; the HTTP edge answers both
    ``non_finite``), else MALFORMED_PAYLOAD."""
    message = str(error).split("\n", 1)[0]
    beyond = _BEYOND_DOUBLE in message
    if beyond or _NON_FINITE_TOKEN.search(payload):
        try:
            json.loads(payload)  # accepts both, so it tells whether anything else is wrong
        except (ValueError, RecursionError):
            pass
        else:
            if beyond:
                return "NON_FINITE", f"number out of the double range: {message}"[:300]
            return "NON_FINITE", "a number is NaN or Infinity"
    return "MALFORMED_PAYLOAD", f"not valid UTF-8 JSON: {message}"[:300]


def _decode_canonical(
    chunk: Chunk,
    schema: DecodeSchema,
    idx: list[int],
    payloads: list[bytes],
    topics: Topics,
) -> pl.DataFrame:
    lines: list[bytes] = []
    line_rows: list[int] = []
    line_elems: list[int] = []
    bad_rows: list[int] = []
    bad_codes: list[str] = []
    bad_details: list[str] = []
    loads = orjson.loads
    dumps = orjson.dumps
    parser = ndjson.BlockParser(lines, schema.arrow_schema())
    block = ndjson.PARSE_BLOCK
    next_block = block
    for i in idx:
        payload = payloads[i]
        try:
            obj = loads(payload)
        except orjson.JSONDecodeError as exc:
            code, detail = _explain_unparsable(payload, exc)
            bad_rows.append(i)
            bad_codes.append(code)
            bad_details.append(detail)
            continue
        kind = type(obj)
        if kind is dict:
            # Arrow reads one object per line: re-serialise the rare pretty-printed payload.
            lines.append(payload if b"\n" not in payload and b"\r" not in payload else dumps(obj))
            line_rows.append(i)
            line_elems.append(0)
        elif kind is list and obj and all(type(o) is dict for o in obj):
            for j, element in enumerate(obj):
                lines.append(dumps(element))
                line_rows.append(i)
                line_elems.append(j)
        else:
            bad_rows.append(i)
            bad_codes.append("MALFORMED_PAYLOAD")
            bad_details.append("payload is not a JSON object or a non-empty array of objects")
            continue
        if len(lines) >= next_block:
            # A full block is parsed on the pool (Arrow releases the GIL) while this loop
            # goes on screening the next.
            parser.submit_upto(next_block)
            next_block += block
    if bad_rows:
        _reject_lines(chunk, bad_rows, [0] * len(bad_rows), bad_codes, bad_details)
    if not lines:
        return schema.empty_rows()
    parser.submit_upto(len(lines))
    parsed = parser.result()
    failed = parsed.failed
    if failed:
        _reject_lines(
            chunk,
            [line_rows[k] for k, _, _ in failed],
            [line_elems[k] for k, _, _ in failed],
            [code for _, code, _ in failed],
            [detail for _, _, detail in failed],
        )
    keep = parsed.lines  # ascending line numbers of the table's rows
    rows_col = pa.array(np.asarray(line_rows, dtype=np.int64)[keep])
    elems_col = pa.array(np.asarray(line_elems, dtype=np.int32)[keep])
    names = pa.nulls(len(keep), pa.string())
    if parsed.unknown:
        unknown: list[str | None] = [None] * len(keep)
        at = np.searchsorted(keep, list(parsed.unknown))
        for pos, (line, text) in zip(at.tolist(), parsed.unknown.items(), strict=True):
            if pos < len(keep) and keep[pos] == line:  # not if it failed after all
                unknown[pos] = text
        names = pa.array(unknown, pa.string())
    return _flatten(parsed.table, schema, rows_col, elems_col, names, topics)


def _reject_lines(
    chunk: Chunk, rows: list[int], elems: list[int], codes: list[str], details: list[str]
) -> None:
    frame = pl.DataFrame(
        {ROW: rows, ELEM: elems, "reason_code": codes, "detail": details},
        schema={ROW: pl.Int64, ELEM: pl.Int32, "reason_code": pl.String, "detail": pl.String},
    )
    for (reason,), part in frame.group_by("reason_code"):
        chunk.reject(reject_frame(part, str(reason), pl.col("detail"), "decode"))


def _flatten(
    table: pa.Table,
    schema: DecodeSchema,
    rows_col: pa.Array,
    elems_col: pa.Array,
    unknown: pa.Array,
    topics: Topics,
) -> pl.DataFrame:
    """The parsed table (only the schema's keys: unknown ones were taken out by the parser
    and are named in ``unknown``) as flat columns."""
    readings = table.column("readings").combine_chunks()
    units = table.column("units").combine_chunks()
    data: dict[str, Any] = {
        ROW: rows_col,
        ELEM: elems_col,
        "device_id": table.column("device_id"),
        "seq": table.column("seq"),
        "ts": table.column("ts"),
        "boot": table.column("boot"),
        "_unknown": unknown,
    }
    readings_type: pa.StructType = readings.type
    for k in range(readings_type.num_fields):
        data[readings_type.field(k).name] = readings.field(k)
    units_type: pa.StructType = units.type
    for k in range(units_type.num_fields):
        data[f"unit__{units_type.field(k).name}"] = units.field(k)
    # A struct child stays null when the parent is null: readings null means "no readings".
    frame = pl.from_arrow(pa.table(data))
    assert isinstance(frame, pl.DataFrame)
    claims = topics.claims(frame[ROW].to_numpy())
    return frame.with_columns(pl.lit("canonical").alias("decoder"), *claims)


# --- Tasmota -------------------------------------------------------------------------------
# ENERGY keys to contract fields. A three-phase monitor sends lists [L1, L2, L3] for the
# per-phase quantities; a single-phase one sends numbers. Power is in W, energy in kWh.
_TASMOTA_SINGLE: dict[str, tuple[str, float]] = {
    "Power": ("power_kw", 0.001),
    "Voltage": ("voltage_v", 1.0),
    "Current": ("current_a", 1.0),
    "Frequency": ("frequency_hz", 1.0),
    "Total": ("energy_generated_kwh", 1.0),
}
_TASMOTA_PHASES: dict[str, tuple[str, float]] = {
    "Voltage": ("voltage_l{}_v", 1.0),
    "Current": ("current_l{}_a", 1.0),
    "Power": ("power_l{}_kw", 0.001),
}


def _tasmota_reading(energy: dict[str, Any]) -> dict[str, Any]:
    """One Tasmota ENERGY object to contract fields (units already the contract's)."""
    out: dict[str, Any] = {}
    three_phase = isinstance(energy.get("Voltage"), list)
    if three_phase:
        for key, (pattern, scale) in _TASMOTA_PHASES.items():
            values = energy.get(key)
            if isinstance(values, list) and len(values) == 3:
                for k, v in enumerate(values, start=1):
                    out[pattern.format(k)] = _scaled(v, scale)
        totals = {
            "Power": ("power_kw", 0.001),
            "ApparentPower": ("apparent_power_kva", 0.001),
            "ReactivePower": ("reactive_power_kvar", 0.001),
        }
        for key, (name, scale) in totals.items():
            value = energy.get(key)
            out[name] = (
                _scaled(sum(value), scale)
                if isinstance(value, list) and all(_is_number(v) for v in value)
                else _scaled(value, scale)
            )
        factor = energy.get("Factor")
        power, apparent = out.get("power_kw"), out.get("apparent_power_kva")
        if isinstance(factor, list) and isinstance(power, float) and isinstance(apparent, float):
            out["power_factor"] = round(abs(power) / apparent, 3) if apparent else None
        else:
            out["power_factor"] = factor
        out["frequency_hz"] = energy.get("Frequency")
        out["energy_import_kwh"] = energy.get("Total")
        out["energy_export_kwh"] = energy.get("ExportActive")
        return out
    for key, (name, scale) in _TASMOTA_SINGLE.items():
        out[name] = _scaled(energy.get(key), scale)
    return out


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _scaled(value: Any, scale: float) -> Any:
    if type(value) in (int, float):
        return value * scale
    return value


def _decode_tasmota(
    chunk: Chunk,
    schema: DecodeSchema,
    idx: list[int],
    payloads: list[bytes],
    topics: Topics,
) -> pl.DataFrame:
    """Tasmota is a low-rate format (300 s by default): decoded payload by payload."""
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str]] = []
    known = set(schema.fields)
    for i in idx:
        payload = payloads[i]
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            bad.append((i, *_explain_unparsable(payload, exc)))
            continue
        energy = obj.get("ENERGY") if isinstance(obj, dict) else None
        when = obj.get("Time") if isinstance(obj, dict) else None
        if not isinstance(energy, dict) or not isinstance(when, str):
            bad.append((i, "MALFORMED_PAYLOAD", "Tasmota SENSOR payload without Time and ENERGY"))
            continue
        try:
            datetime.fromisoformat(when)
        except ValueError:
            bad.append((i, "SCHEMA_MISMATCH", f"Tasmota Time {when[:40]!r} is not ISO 8601"))
            continue
        reading = _tasmota_reading(energy)
        wrong = [k for k, v in reading.items() if v is not None and not _is_number(v)]
        if wrong:
            bad.append((i, "SCHEMA_MISMATCH", f"ENERGY values not numbers: {', '.join(wrong)}"))
            continue
        device = topics.device_claim(i)
        assert device is not None
        record: dict[str, Any] = {
            ROW: i,
            ELEM: 0,
            "device_id": device,
            "ts_local": when,
            "decoder": "tasmota",
            "claim_device": device,
        }
        record.update({k: float(v) for k, v in reading.items() if k in known and v is not None})
        records.append(record)
    if bad:
        frame = pl.DataFrame(
            {
                ROW: [b[0] for b in bad],
                ELEM: [0] * len(bad),
                "reason_code": [b[1] for b in bad],
                "detail": [b[2] for b in bad],
            },
            schema={ROW: pl.Int64, ELEM: pl.Int32, "reason_code": pl.String, "detail": pl.String},
        )
        for (reason,), part in frame.group_by("reason_code"):
            chunk.reject(reject_frame(part, str(reason), pl.col("detail"), "decode"))
    if not records:
        return schema.empty_rows()
    return pl.concat(
        [schema.empty_rows(), pl.from_dicts(records, infer_schema_length=None)],
        how="diagonal_relaxed",
    )


Decoder = Callable[[Chunk, DecodeSchema, list[int], list[bytes], list[str]], pl.DataFrame]
