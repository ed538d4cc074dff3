"""Decode: raw payload bytes to typed reading columns, by the decoder catalogue.

Each message's topic picks a stream of the catalogue (``transforms/catalogue.py``: one YAML
file per vendor format, first match wins); a topic no stream reads is quarantined
UNDECODED_TOPIC with the topic in the detail (a gateway's bad-topic marker,
MALFORMED_PAYLOAD). The shipped decoders: ``canonical`` (the energylake envelope on
``emaas/v1/<client>/<branch>/<device>/telemetry``), ``tasmota``, ``shelly_pro3em`` and
``thingsboard``; vendor streams are mapped record by record (``transforms/mapping.py``).

The canonical envelope is ``{"device_id", "seq", "ts", "readings": {...}, "units": {...}}``
(and ``boot``, optional: the device's boot number), or a JSON array of such envelopes
(batched uploads). Its path is columnar: each payload is checked for well-formed JSON by
orjson (C, one call per payload, nothing kept), then all good payloads are parsed in one go
by Arrow's strict JSON reader against an explicit schema built from the contracts
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from contracts import ContractRegistry
from contracts.model import READING_SYSTEM_FIELDS
from transforms import ndjson
from transforms.catalogue import Catalogue, Stream, load_catalogue
from transforms.frames import ELEM, ROW, Chunk, reject_frame
from transforms.mapping import Refused, map_payload

__all__ = [
    "CANONICAL_TOPIC",
    "DecodeSchema",
    "decode_chunk",
]

CANONICAL_TOPIC = re.compile(
    r"^emaas/v1/([a-z0-9][a-z0-9-]{1,31})/([a-z0-9][a-z0-9-]{1,47})/([a-z0-9][a-z0-9-]{1,63})"
    r"/telemetry$"
)
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
    """What any decoder may produce (the union of the readings contracts' value fields), and
    the catalogue of decoders."""

    numeric: tuple[str, ...]
    strings: tuple[str, ...]
    by_dataset: dict[str, frozenset[str]]
    catalogue: Catalogue
    reasons: frozenset[str] = frozenset()  # the quarantine contract's reason codes

    @classmethod
    def from_registry(
        cls, registry: ContractRegistry, catalogue: Catalogue | None = None
    ) -> DecodeSchema:
        numeric: list[str] = []
        strings: list[str] = []
        by_dataset: dict[str, frozenset[str]] = {}
        for dataset in registry.readings_datasets:
            names = []
            for f in registry.get(dataset).fields:
                if f.name in READING_SYSTEM_FIELDS:
                    continue
                names.append(f.name)
                bucket = strings if f.physical_type == "string" else numeric
                if f.name not in bucket:
                    bucket.append(f.name)
            by_dataset[dataset] = frozenset(names)
        reasons = registry.get("quarantine").field("reason_code").allowed_values or ()
        return cls(
            tuple(numeric),
            tuple(strings),
            by_dataset,
            catalogue if catalogue is not None else load_catalogue(registry=registry),
            frozenset(str(r) for r in reasons),
        )

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
            "stream": pl.String,
            "claim_client": pl.String,
            "claim_branch": pl.String,
            "claim_device": pl.String,
            "claim_edge": pl.String,
            "device_id": pl.String,
            "seq": pl.Float64,
            "ts": pl.Float64,
            "boot": pl.Float64,
            "ts_local": pl.String,
            "_ts_received": pl.Boolean,
            "_seq_unit_s": pl.Float64,
            "_seq_received": pl.Boolean,
            "_unknown": pl.String,
        }
        schema.update({n: pl.Float64 for n in self.numeric})
        schema.update({n: pl.String for n in self.strings})
        for column in self.catalogue.by_kind_columns:
            name = column.split("@", 1)[1]
            schema[column] = pl.String if name in self.strings else pl.Float64
        schema.update({f"unit__{n}": pl.String for n in _UNIT_FIELDS})
        return pl.DataFrame(schema=schema)


def decode_chunk(chunk: Chunk, schema: DecodeSchema, *, payload_limit: int) -> None:
    """Fill ``chunk.rows`` with decoded readings and add rejects for what cannot be decoded."""
    env = chunk.envelopes
    topics = Topics.of(env.column("topic"), schema.catalogue)
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
    unknown_topic = np.flatnonzero(kind == _UNKNOWN)
    if unknown_topic.size:
        _reject_undecoded(chunk, unknown_topic, topics, env.column("topic"))
    frames = [schema.empty_rows()]
    streams = topics.streams
    wanted = [k for k in range(len(streams)) if (kind == _FIRST_STREAM + k).any()]
    payloads: list[bytes] = env.column("payload").to_pylist() if wanted else []
    for k in wanted:
        idx = np.flatnonzero(kind == _FIRST_STREAM + k).tolist()
        stream = streams[k]
        if stream.layout == "envelope":
            frame = _decode_canonical(chunk, schema, idx, payloads, topics)
        else:
            frame = _decode_mapping(chunk, schema, stream, idx, payloads, topics)
        frames.append(
            frame.with_columns(
                pl.lit(stream.decoder).alias("decoder"), pl.lit(stream.key).alias("stream")
            )
        )
    rows = pl.concat(frames, how="diagonal_relaxed")
    chunk.rows = rows.select(schema.empty_rows().columns)


def _reject_undecoded(
    chunk: Chunk, rows: npt.NDArray[np.int64], topics: Topics, column: pa.ChunkedArray
) -> None:
    """No stream reads these topics: a gateway marker (MALFORMED_PAYLOAD) or a topic the
    catalogue does not decode (UNDECODED_TOPIC, naming it and whose namespace it is in)."""
    names = column.take(pa.array(rows)).to_pylist()
    codes, details = [], []
    for topic in names:
        if topic.startswith(_BAD_TOPIC_PREFIX):
            codes.append("MALFORMED_PAYLOAD")
            details.append(f"no decoder for this topic (refused by the gateway: {topic[:120]})")
            continue
        codes.append("UNDECODED_TOPIC")
        found = topics.catalogue.namespace_of(topic)
        shown = topic if len(topic) <= 200 else topic[:200] + "…"
        if found is not None:
            decoder = found[0]
            details.append(
                f"topic {shown!r} is in the {decoder.name} namespace, which decodes only "
                + ", ".join(repr(s.topic) for s in decoder.streams)
            )
        else:
            details.append(f"no decoder of the catalogue reads topic {shown!r}")
    _reject_lines(chunk, rows.tolist(), [0] * len(names), codes, details)


# A gateway's landed marker for a topic it refused (gateway/topics.py BAD_TOPIC_PREFIX).
_BAD_TOPIC_PREFIX = "!bad-topic/"
_UNKNOWN, _TOO_LARGE, _FIRST_STREAM = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Topics:
    """A chunk's topics, worked out once per distinct topic (a fleet sends on a few
    hundred topics, a chunk holds tens of thousands of messages): for each row, which
    stream of the catalogue reads it, and what client, branch and device the topic claims."""

    kind: npt.NDArray[np.int16]  # per row: _UNKNOWN, or _FIRST_STREAM + the stream's index
    code: npt.NDArray[np.int32]  # per row: index into the distinct topics
    client: pa.StringArray  # per distinct topic
    branch: pa.StringArray
    device: pa.StringArray
    edge: pa.StringArray
    streams: tuple[Stream, ...]
    catalogue: Catalogue

    @classmethod
    def of(cls, topics: pa.ChunkedArray | pa.Array, catalogue: Catalogue) -> Topics:
        if isinstance(topics, pa.ChunkedArray):
            topics = topics.combine_chunks()
        encoded = pc.dictionary_encode(topics)
        streams = catalogue.streams
        position = {s.key: k for k, s in enumerate(streams)}
        kinds: list[int] = []
        claims: list[tuple[str | None, ...]] = []
        for topic in encoded.dictionary.to_pylist():
            found = catalogue.match(topic)
            if found is None:
                kinds.append(_UNKNOWN)
                claims.append((None, None, None, None))
                continue
            stream, claim = found
            kinds.append(_FIRST_STREAM + position[stream.key])
            claims.append(claim)
        code = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        return cls(
            kind=np.array(kinds, dtype=np.int16)[code] if kinds else np.zeros(0, np.int16),
            code=code,
            client=pa.array([c[0] for c in claims], pa.string()),
            branch=pa.array([c[1] for c in claims], pa.string()),
            device=pa.array([c[2] for c in claims], pa.string()),
            edge=pa.array([c[3] for c in claims], pa.string()),
            streams=streams,
            catalogue=catalogue,
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
            pl.Series("claim_edge", self.edge.take(at), dtype=pl.String),
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


# --- vendor formats -----------------------------------------------------------------------


def _decode_mapping(
    chunk: Chunk,
    schema: DecodeSchema,
    stream: Stream,
    idx: list[int],
    payloads: list[bytes],
    topics: Topics,
) -> pl.DataFrame:
    """A vendor stream, payload by payload (low-rate formats), by its mapping rules."""
    records: list[dict[str, Any]] = []
    bad_rows: list[int] = []
    bad_elems: list[int] = []
    bad_codes: list[str] = []
    bad_details: list[str] = []
    numeric = frozenset(schema.numeric)
    strings = frozenset(schema.strings)
    reasons = schema.reasons
    for i in idx:
        payload = payloads[i]
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            code, detail = _explain_unparsable(payload, exc)
            bad_rows.append(i)
            bad_elems.append(0)
            bad_codes.append(code)
            bad_details.append(detail)
            continue
        device = topics.device_claim(i)
        for result in map_payload(stream, obj, numeric=numeric, strings=strings, reasons=reasons):
            if isinstance(result, Refused):
                bad_rows.append(i)
                bad_elems.append(result.elem)
                bad_codes.append(result.code)
                bad_details.append(result.detail)
                continue
            record = result.columns
            record[ROW] = i
            record[ELEM] = result.elem
            record["claim_device"] = device
            records.append(record)
    if bad_rows:
        _reject_lines(chunk, bad_rows, bad_elems, bad_codes, bad_details)
    if not records:
        return schema.empty_rows()
    frame = pl.from_dicts(records, infer_schema_length=None)
    claims = topics.claims(frame[ROW].cast(pl.Int64).to_numpy())
    return pl.concat(
        [schema.empty_rows(), frame.drop("claim_device").with_columns(*claims)],
        how="diagonal_relaxed",
    )
