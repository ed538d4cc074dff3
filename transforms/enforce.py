"""Enforce the contract on a chunk's normalised rows, vectorised, one reason per rejected row.

Checks run in this order and a row gets the first reason that applies:

1. UNKNOWN_DEVICE      the authenticated device is not in the registry (or is retired)
2. BRANCH_MISMATCH     the payload or topic names another device, client or branch
3. SCHEMA_MISMATCH     unknown keys, a field the dataset does not have, a wrong decoder,
                       a non-integer where the contract wants an integer
4. MISSING_FIELD       a required field absent or null
5. NON_FINITE          a number is infinite
6. TIMESTAMP_OUT_OF_RANGE  event time > received + 10 min, or < received - 7 days
7. UNIT_SUSPECT        a value rated by the device exceeds 1.5 x its rating, no unit declared
8. OUT_OF_RANGE        outside the contract's range or enum

What passes leaves as one frame per dataset with the contract's columns, in contract types,
plus the provenance columns later stages need (``PROVENANCE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from contracts import Contract, ContractRegistry
from transforms.decode import _UNIT_FIELDS, DecodeSchema
from transforms.frames import ELEM, ROW, Chunk, as_frame, reject_frame

__all__ = ["FUTURE_LIMIT", "PAST_LIMIT", "PROVENANCE", "RATING_MARGIN", "enforce_chunk"]

FUTURE_LIMIT = timedelta(minutes=10)
PAST_LIMIT = timedelta(days=7)
RATING_MARGIN = 1.5
# Carried with every accepted row until it is written (then dropped): where its envelope is,
# to order duplicates by arrival and to quarantine it later (the series checks read the
# envelope back from the segment by offset). The envelope itself (source, topic, identity,
# payload) is not carried: it would cross the shuffle for every row, and only the rare late
# reject needs it.
PROVENANCE = ("segment", "offset_bytes", ELEM)


def enforce_chunk(
    chunk: Chunk,
    registry: ContractRegistry,
    schema: DecodeSchema,
) -> dict[str, pl.DataFrame]:
    """Reject what breaks the contract; return accepted rows per dataset."""
    rows = chunk.rows
    out: dict[str, pl.DataFrame] = {}
    if rows.height == 0:
        return out
    # 1. Unknown device.
    unknown = rows.filter(pl.col("reg_client_id").is_null() | (pl.col("reg_status") != "active"))
    if unknown.height:
        detail = (
            pl.when(pl.col("reg_client_id").is_null())
            .then(pl.format("device {} is not in the registry", pl.col("auth_device")))
            .otherwise(pl.format("device {} is {}", pl.col("auth_device"), pl.col("reg_status")))
        )
        chunk.reject(reject_frame(unknown, "UNKNOWN_DEVICE", detail, "enforce"))
        rows = rows.filter(
            pl.col("reg_client_id").is_not_null() & (pl.col("reg_status") == "active")
        )
    # 2. Identity and claims.
    checks = {
        "payload device_id": pl.col("device_id").is_not_null()
        & (pl.col("device_id") != pl.col("auth_device")),
        "topic device": pl.col("claim_device").is_not_null()
        & (pl.col("claim_device") != pl.col("auth_device")),
        "topic client": pl.col("claim_client").is_not_null()
        & (pl.col("claim_client") != pl.col("reg_client_id")),
        "topic branch": pl.col("claim_branch").is_not_null()
        & (pl.col("claim_branch") != pl.col("reg_branch_id")),
        # a device behind an edge node: only its registered edge node may speak for it
        "edge node": pl.col("claim_edge").is_not_null()
        & (
            pl.col("reg_edge_node").is_null()
            | (pl.col("reg_edge_node") != pl.col("identity"))
            | (pl.col("claim_edge") != pl.col("identity"))
        ),
    }
    rows = rows.with_columns(
        pl.concat_str(
            [pl.when(c).then(pl.lit(k)) for k, c in checks.items()],
            separator=", ",
            ignore_nulls=True,
        ).alias("_mismatch")
    )
    bad = rows.filter(pl.col("_mismatch") != "")
    if bad.height:
        detail = pl.format(
            "{} differ from the authenticated device {} (client {}, branch {}); topic {}",
            pl.col("_mismatch"),
            pl.col("auth_device"),
            pl.col("reg_client_id"),
            pl.col("reg_branch_id"),
            pl.col("topic"),
        )
        chunk.reject(reject_frame(bad, "BRANCH_MISMATCH", detail, "enforce"))
        rows = rows.filter(pl.col("_mismatch") == "")
    # From here on a reading carries its registered id (it may publish under another name).
    rows = rows.with_columns(pl.col("reg_device_id").alias("device_id"))
    env = _provenance(chunk)
    for (dataset,), part in rows.group_by("dataset"):
        accepted = _enforce_dataset(chunk, registry.get(str(dataset)), schema, part)
        if accepted.height:
            out[str(dataset)] = accepted.join(env, on=[ROW], how="left").drop(ROW)
    return out


def _provenance(chunk: Chunk) -> pl.DataFrame:
    env = as_frame(chunk.envelopes.select(["segment", "offset_bytes"])).with_row_index(ROW)
    assert isinstance(env, pl.DataFrame)
    return env.with_columns(pl.col(ROW).cast(pl.Int64))


@dataclass(frozen=True, slots=True)
class _Check:
    """One reason code: its parts (fails, what to say), and how the detail reads.

    ``fails`` are cheap boolean expressions evaluated on every row; the detail text is
    built only for the rows that failed (string formatting is the costly part).
    """

    code: str
    parts: list[tuple[pl.Expr, pl.Expr]]
    template: str = "{}"  # the failing parts, joined, go in the first {}
    extra: tuple[pl.Expr, ...] = ()
    separator: str = ", "

    def fails(self) -> pl.Expr:
        return pl.any_horizontal([cond.fill_null(False) for cond, _ in self.parts])

    def detail(self) -> pl.Expr:
        joined = pl.concat_str(
            [pl.when(cond.fill_null(False)).then(text) for cond, text in self.parts],
            separator=self.separator,
            ignore_nulls=True,
        )
        return pl.format(self.template, joined, *self.extra)


def _checks(contract: Contract, schema: DecodeSchema) -> list[_Check]:
    """The checks after identity, in the order that names a row's reason."""
    dataset = contract.dataset
    allowed = schema.by_dataset[dataset]
    foreign = [n for n in schema.fields if n not in allowed]
    value_fields = [f for f in contract.fields if f.name in allowed]
    checks: list[_Check] = []

    # 3. Schema: unknown keys, fields of another dataset, wrong decoder, non-integers.
    schema_parts = [
        (pl.col("_unknown").is_not_null(), pl.format("unknown field(s) {}", pl.col("_unknown")))
    ]
    for name in foreign:
        schema_parts.append(
            (pl.col(name).is_not_null(), pl.lit(f"{name} is not a field of {dataset}"))
        )
    schema_parts.append(
        (
            pl.col("decoder") != pl.col("reg_payload_format"),
            pl.format(
                "device sends {} but arrived as {}", pl.col("reg_payload_format"), pl.col("decoder")
            ),
        )
    )
    profiles = contract.profiles
    if profiles:
        named = pl.col("reg_profile").str.split("+")
        known = pl.lit(sorted(profiles), dtype=pl.List(pl.String))
        schema_parts.append(
            (
                pl.col("reg_profile").is_not_null()
                & (named.list.set_difference(known).list.len() > 0),
                pl.format(
                    "the device's profile {} is not a profile of {} ({})",
                    pl.col("reg_profile"),
                    pl.lit(dataset),
                    pl.lit(", ".join(sorted(profiles))),
                ),
            )
        )
    for f in value_fields:
        if f.physical_type in ("int64", "int32"):
            c = pl.col(f.name)
            schema_parts.append(
                (c.is_not_null() & (c != c.floor()), pl.lit(f"{f.name} is not an integer"))
            )
    seq = pl.col("seq")
    schema_parts.append(
        (
            seq.is_not_null() & ((seq != seq.floor()) | (seq < 0) | (seq > 2**53 - 1)),
            pl.lit("seq is not a non-negative integer"),
        )
    )
    boot = pl.col("boot")
    schema_parts.append(
        (
            boot.is_not_null() & ((boot != boot.floor()) | (boot < 0) | (boot > 2**53 - 1)),
            pl.lit("boot is not a non-negative integer"),
        )
    )
    checks.append(_Check("SCHEMA_MISMATCH", schema_parts, separator="; "))

    # 4. Missing required fields.
    required = ["device_id", "seq", "ts"] + [f.name for f in value_fields if f.required]
    sentinel = {f.name for f in value_fields if f.sentinels}
    missing = [
        (
            (pl.col("ts_us").is_null() & pl.col("ts").is_null() & pl.col("ts_local").is_null())
            if n == "ts"
            else pl.col(n).is_null() & ~_omitted(n, contract, schema),
            pl.when(pl.col("_sentinel").str.contains(f",{n},", literal=True))
            .then(pl.lit(f"{n} (the device sent its 'not available' code)"))
            .otherwise(pl.lit(n))
            if n in sentinel
            else pl.lit(n),
        )
        for n in required
    ]
    checks.append(_Check("MISSING_FIELD", missing, "required field(s) missing or null: {}"))

    # 5. Non-finite numbers.
    numeric = [f.name for f in value_fields if f.physical_type in ("double", "int64", "int32")]
    non_finite = [(pl.col(n).is_infinite() | pl.col(n).is_nan(), pl.lit(n)) for n in numeric]
    if non_finite:
        checks.append(_Check("NON_FINITE", non_finite, "not finite: {}"))

    # 6. Event time window against reception time.
    received_us = pl.col("received_at").dt.epoch("us")
    future = int(FUTURE_LIMIT.total_seconds() * 1e6)
    past = int(PAST_LIMIT.total_seconds() * 1e6)
    ts_bad = (
        pl.col("ts_us").is_null()
        | (pl.col("ts_us") > received_us + future)
        | (pl.col("ts_us") < received_us - past)
    )
    checks.append(
        _Check(
            "TIMESTAMP_OUT_OF_RANGE",
            [(ts_bad, pl.coalesce(pl.col("ts").cast(pl.String), pl.col("ts_local")))],
            "ts {} vs received_at {}: allowed is 7 days before to 10 minutes after",
            (pl.col("received_at").cast(pl.String),),
        )
    )

    # 7. Unit mistakes: a rated value far above the device's rating, no unit declared.
    suspect = []
    for f in value_fields:
        if not f.rated_by:
            continue
        cond = pl.col(f.name).abs() > pl.col(f"reg_{f.rated_by}") * RATING_MARGIN
        if f.name in _UNIT_FIELDS:
            cond = cond & pl.col(f"unit__{f.name}").is_null()
        suspect.append((cond, pl.lit(f.name)))
    if suspect:
        checks.append(
            _Check(
                "UNIT_SUSPECT",
                suspect,
                "{} above {} x the device rating ({} kW), no unit declared (W sent as kW?)",
                (pl.lit(RATING_MARGIN), pl.col("reg_rated_power_kw")),
            )
        )

    # 8. Ranges and enums.
    out_of_range = []
    for f in value_fields:
        c = pl.col(f.name)
        conds = []
        if f.minimum is not None:
            conds.append(c < f.minimum)
        if f.maximum is not None:
            conds.append(c > f.maximum)
        if f.allowed_values:
            conds.append(~c.is_in([str(v) for v in f.allowed_values]))
        if conds:
            out_of_range.append((c.is_not_null() & pl.any_horizontal(conds), pl.lit(f.name)))
    if out_of_range:
        checks.append(_Check("OUT_OF_RANGE", out_of_range, "outside the contract's range: {}"))
    return checks


def _omitted(name: str, contract: Contract, schema: DecodeSchema) -> pl.Expr:
    """The row may leave ``name`` out: its device's profile (``+`` joins several) or its
    stream's (a message that carries only part of a reading) says so."""
    by = [p for p, fields in contract.profiles.items() if name in fields]
    if not by:
        return pl.lit(False)
    streams = [s.key for s in schema.catalogue.streams if s.profile in by]
    device = (
        pl.col("reg_profile")
        .str.split("+")
        .list.set_intersection(pl.lit(by, dtype=pl.List(pl.String)))
        .list.len()
        > 0
    ).fill_null(False)
    return device | pl.col("stream").is_in(streams) if streams else device


def _enforce_dataset(
    chunk: Chunk, contract: Contract, schema: DecodeSchema, rows: pl.DataFrame
) -> pl.DataFrame:
    """All checks in one vectorised pass; the first failing check names the reason."""
    checks = _checks(contract, schema)
    reason = pl.lit(None, pl.String)
    for check in reversed(checks):
        reason = pl.when(check.fails()).then(pl.lit(check.code)).otherwise(reason)
    rows = rows.with_columns(reason.alias("_reason"))
    bad = rows.filter(pl.col("_reason").is_not_null())
    if bad.height:
        by_code = {c.code: c for c in checks}
        for (code,), part in bad.group_by("_reason"):
            chunk.reject(reject_frame(part, str(code), by_code[str(code)].detail(), "enforce"))
        rows = rows.filter(pl.col("_reason").is_null())
    return _shape(contract, rows)


def _shape(contract: Contract, rows: pl.DataFrame) -> pl.DataFrame:
    """Contract columns in contract types, plus the provenance and flag columns."""
    ts = pl.from_epoch(pl.col("ts_us"), time_unit="us").dt.replace_time_zone("UTC")
    none = pl.lit([], dtype=pl.List(pl.String))
    flags = pl.concat_list(
        pl.when(pl.col("_unit_converted")).then(pl.lit(["UNIT_CONVERTED"])).otherwise(none),
        pl.when(pl.col("_sentinel") != "").then(pl.lit(["SENTINEL"])).otherwise(none),
    )
    base = rows.with_columns(
        pl.col("reg_client_id").alias("client_id"),
        pl.col("reg_branch_id").alias("branch_id"),
        pl.col("seq").cast(pl.Int64),
        ts.alias("ts"),
        pl.col("received_at").dt.cast_time_unit("us").dt.convert_time_zone("UTC"),
        ts.dt.strftime("%Y-%m").alias("event_month"),
        flags.alias("quality_flags"),
    )
    cols = []
    for f in contract.fields:
        if f.name == "quality_flags":
            cols.append(pl.col("quality_flags"))
            continue
        dtype = _polars_type(f.physical_type)
        cols.append(pl.col(f.name).cast(dtype))
    keep = [c for c in ("source", "topic", "identity", ROW, ELEM) if c in base.columns]
    return base.select([*cols, *[pl.col(c) for c in keep], pl.col("reg_rated_power_kw")])


def _polars_type(physical: str) -> pl.DataType:
    return {
        "string": pl.String(),
        "int64": pl.Int64(),
        "int32": pl.Int32(),
        "double": pl.Float64(),
        "float": pl.Float32(),
        "bool": pl.Boolean(),
        "timestamp[us, UTC]": pl.Datetime("us", "UTC"),
        "list<string>": pl.List(pl.String),
    }[physical]
