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

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from contracts import Contract, ContractRegistry
from transforms.decode import _UNIT_FIELDS, DecodeSchema
from transforms.frames import ELEM, ROW, Chunk, as_frame, reject_frame

__all__ = ["FUTURE_LIMIT", "PAST_LIMIT", "PROVENANCE", "RATING_MARGIN", "enforce_chunk"]

FUTURE_LIMIT = timedelta(minutes=10)
PAST_LIMIT = timedelta(days=7)
RATING_MARGIN = 1.5
# Carried with every accepted row until it is written (then dropped): enough to quarantine
# it later (series checks) with its raw bytes, and to order duplicates by arrival.
PROVENANCE = ("source", "topic", "identity", "segment", "offset_bytes", ELEM, "payload")


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
    env = _provenance(chunk)
    for (dataset,), part in rows.group_by("dataset"):
        accepted = _enforce_dataset(chunk, registry.get(str(dataset)), schema, part)
        if accepted.height:
            out[str(dataset)] = accepted.join(env, on=[ROW], how="left").drop(ROW)
    return out


def _provenance(chunk: Chunk) -> pl.DataFrame:
    env = as_frame(chunk.envelopes.select(["segment", "offset_bytes", "payload"])).with_row_index(
        ROW
    )
    assert isinstance(env, pl.DataFrame)
    return env.with_columns(pl.col(ROW).cast(pl.Int64))


def _enforce_dataset(
    chunk: Chunk, contract: Contract, schema: DecodeSchema, rows: pl.DataFrame
) -> pl.DataFrame:
    """All checks in one vectorised pass; the first failing check names the reason."""
    dataset = contract.dataset
    allowed = schema.by_dataset[dataset]
    foreign = [n for n in schema.fields if n not in allowed]
    value_fields = [f for f in contract.fields if f.name in allowed]
    checks: list[tuple[str, pl.Expr]] = []  # (reason, detail expr: null when the row passes)

    # 3. Schema: unknown keys, fields of another dataset, wrong decoder, non-integers.
    schema_parts = [
        pl.when(pl.col("_unknown").is_not_null()).then(
            pl.format("unknown field(s) {}", pl.col("_unknown"))
        )
    ]
    for name in foreign:
        schema_parts.append(
            pl.when(pl.col(name).is_not_null()).then(pl.lit(f"{name} is not a field of {dataset}"))
        )
    schema_parts.append(
        pl.when(pl.col("decoder") != pl.col("reg_payload_format")).then(
            pl.format(
                "device sends {} but arrived as {}", pl.col("reg_payload_format"), pl.col("decoder")
            )
        )
    )
    for f in value_fields:
        if f.physical_type in ("int64", "int32"):
            c = pl.col(f.name)
            schema_parts.append(
                pl.when(c.is_not_null() & (c != c.floor())).then(
                    pl.lit(f"{f.name} is not an integer")
                )
            )
    seq = pl.col("seq")
    schema_parts.append(
        pl.when(seq.is_not_null() & ((seq != seq.floor()) | (seq < 0) | (seq > 2**53 - 1))).then(
            pl.lit("seq is not a non-negative integer")
        )
    )
    checks.append(("SCHEMA_MISMATCH", _joined(schema_parts, "; ")))

    # 4. Missing required fields.
    required = ["device_id", "seq", "ts"] + [f.name for f in value_fields if f.required]
    missing = [
        pl.when(
            (pl.col("ts").is_null() & pl.col("ts_local").is_null())
            if n == "ts"
            else pl.col(n).is_null()
        ).then(pl.lit(n))
        for n in required
    ]
    checks.append(
        ("MISSING_FIELD", _prefixed("required field(s) missing or null: ", _joined(missing, ", ")))
    )

    # 5. Non-finite numbers.
    numeric = [f.name for f in value_fields if f.physical_type in ("double", "int64", "int32")]
    non_finite = [
        pl.when(pl.col(n).is_infinite() | pl.col(n).is_nan()).then(pl.lit(n)) for n in numeric
    ]
    checks.append(("NON_FINITE", _prefixed("not finite: ", _joined(non_finite, ", "))))

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
        (
            "TIMESTAMP_OUT_OF_RANGE",
            pl.when(ts_bad).then(
                pl.format(
                    "ts {} vs received_at {}: allowed is 7 days before to 10 minutes after",
                    pl.coalesce(pl.col("ts").cast(pl.String), pl.col("ts_local")),
                    pl.col("received_at").cast(pl.String),
                )
            ),
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
        suspect.append(pl.when(cond).then(pl.lit(f.name)))
    if suspect:
        checks.append(
            (
                "UNIT_SUSPECT",
                pl.when(_joined(suspect, ", ").is_not_null()).then(
                    pl.format(
                        "{} above {} x the device rating ({} kW), no unit declared (W sent as kW?)",
                        _joined(suspect, ", "),
                        pl.lit(RATING_MARGIN),
                        pl.col("reg_rated_power_kw"),
                    )
                ),
            )
        )

    # 8. Ranges and enums.
    out_of_range = []
    for f in value_fields:
        c = pl.col(f.name)
        cond = pl.lit(False)
        if f.minimum is not None:
            cond = cond | (c < f.minimum)
        if f.maximum is not None:
            cond = cond | (c > f.maximum)
        if f.allowed_values:
            cond = cond | ~c.is_in([str(v) for v in f.allowed_values])
        out_of_range.append(pl.when(c.is_not_null() & cond).then(pl.lit(f.name)))
    checks.append(
        ("OUT_OF_RANGE", _prefixed("outside the contract's range: ", _joined(out_of_range, ", ")))
    )

    reason = pl.lit(None, pl.String)
    detail = pl.lit(None, pl.String)
    for code, why in reversed(checks):
        reason = pl.when(why.is_not_null()).then(pl.lit(code)).otherwise(reason)
        detail = pl.when(why.is_not_null()).then(why).otherwise(detail)
    rows = rows.with_columns(reason.alias("_reason"), detail.alias("_detail"))
    bad = rows.filter(pl.col("_reason").is_not_null())
    for (code,), part in bad.group_by("_reason"):
        chunk.reject(reject_frame(part, str(code), pl.col("_detail"), "enforce"))
    return _shape(contract, rows.filter(pl.col("_reason").is_null()))


def _joined(parts: Sequence[pl.Expr], separator: str) -> pl.Expr:
    """Names of the failing parts joined, or null when none fails."""
    text = pl.concat_str(parts, separator=separator, ignore_nulls=True)
    return pl.when(text == "").then(None).otherwise(text)


def _prefixed(prefix: str, expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_not_null()).then(pl.lit(prefix) + expr)


def _shape(contract: Contract, rows: pl.DataFrame) -> pl.DataFrame:
    """Contract columns in contract types, plus the provenance and flag columns."""
    ts = pl.from_epoch(pl.col("ts_us"), time_unit="us").dt.replace_time_zone("UTC")
    flags = (
        pl.when(pl.col("_unit_converted"))
        .then(pl.lit(["UNIT_CONVERTED"]))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
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
