"""The shapes that flow between the pipeline's stages, and the reject (quarantine) builder.

A stage works on a *chunk*: an Arrow table of landing envelopes (``ENVELOPE_COLUMNS``) and a
polars frame of the readings decoded from it so far. Each reading keeps ``_row`` (its
envelope's row in the chunk) and ``_elem`` (its place in an array payload), so a rejected
reading can always be traced back to its raw bytes: segment, offset, sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from contracts import ContractRegistry

__all__ = [
    "CLAIM_CHARS",
    "DETAIL_CHARS",
    "ENVELOPE_COLUMNS",
    "REJECT_SCHEMA",
    "Chunk",
    "quarantine_table",
    "reject_frame",
]

ENVELOPE_COLUMNS = (
    "received_at",
    "source",
    "topic",
    "identity",
    "payload",
    "segment",
    "offset_bytes",
)
# Internal columns every reading carries until it is written.
ROW = "_row"
ELEM = "_elem"

REJECT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    ROW: pl.Int64,
    ELEM: pl.Int32,
    "reason_code": pl.String,
    "detail": pl.String,
    "pipeline_step": pl.String,
    "dataset": pl.String,
    "device_id": pl.String,
    "seq": pl.Int64,
}
_EXCERPT_BYTES = 256
# A payload's claimed device_id is kept to this many characters (a device id has at most
# 64), a quarantine detail to the contract's maxLength.
CLAIM_CHARS = 64
DETAIL_CHARS = 2000
_DEVICE_ID = r"^[a-z0-9][a-z0-9-]{1,63}$"


def as_frame(table: pa.Table) -> pl.DataFrame:
    """An Arrow table as a polars frame (zero-copy where the types allow)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def reject_frame(
    rows: pl.DataFrame,
    reason_code: str,
    detail: pl.Expr | str,
    step: str,
) -> pl.DataFrame:
    """Rejects for every row of ``rows`` (which must carry ``_row`` and ``_elem``)."""
    detail_expr = pl.lit(detail) if isinstance(detail, str) else detail
    cols = rows.columns
    return rows.select(
        pl.col(ROW).cast(pl.Int64),
        pl.col(ELEM).cast(pl.Int32),
        pl.lit(reason_code).alias("reason_code"),
        detail_expr.cast(pl.String).alias("detail"),
        pl.lit(step).alias("pipeline_step"),
        (pl.col("dataset") if "dataset" in cols else pl.lit(None, pl.String)).alias("dataset"),
        (
            pl.col("device_id").cast(pl.String) if "device_id" in cols else pl.lit(None, pl.String)
        ).alias("device_id"),
        _safe_seq(cols).alias("seq"),
    )


def _safe_seq(cols: list[str]) -> pl.Expr:
    if "seq" not in cols:
        return pl.lit(None, pl.Int64)
    seq = pl.col("seq").cast(pl.Float64, strict=False)
    ok = seq.is_finite() & (seq >= 0) & (seq <= 2**53) & (seq == seq.floor())
    return pl.when(ok).then(seq.cast(pl.Int64, strict=False)).otherwise(None)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


@dataclass(slots=True)
class Chunk:
    """A slice of landing envelopes and what the stages made of it so far."""

    envelopes: pa.Table
    rows: pl.DataFrame = field(default_factory=pl.DataFrame)
    rejects: pl.DataFrame = field(default_factory=empty_rejects)

    def reject(self, rejects: pl.DataFrame) -> None:
        if rejects.height:
            self.rejects = pl.concat(
                [
                    self.rejects,
                    rejects.select([pl.col(c).cast(t) for c, t in REJECT_SCHEMA.items()]),
                ],
                how="vertical",
            )


def quarantine_table(
    chunk: Chunk,
    registry: ContractRegistry,
    devices: pl.DataFrame,
    *,
    batch_id: str,
) -> pl.DataFrame:
    """Quarantine rows (contract ``quarantine``) for the chunk's rejects, plus ``_tenant``."""
    rejects = chunk.rejects
    if rejects.height == 0:
        return empty_quarantine(registry)
    env = as_frame(chunk.envelopes).with_row_index(ROW)
    assert isinstance(env, pl.DataFrame)
    env = env.with_columns(pl.col(ROW).cast(pl.Int64))
    frame = rejects.join(env, on=ROW, how="left").drop(ROW)
    return quarantine_rows(frame, registry, devices, batch_id=batch_id)


def empty_quarantine(registry: ContractRegistry) -> pl.DataFrame:
    return pl.DataFrame(schema={**_quarantine_schema(registry), "_tenant": pl.String})


def quarantine_rows(
    frame: pl.DataFrame,
    registry: ContractRegistry,
    devices: pl.DataFrame,
    *,
    batch_id: str,
) -> pl.DataFrame:
    """Quarantine rows from rejects that carry their envelope (received_at, source, topic,
    identity, segment, offset_bytes, payload, _elem) and reason columns; adds ``_tenant``.

    The tenant and branch come from the *authenticated identity* through the registry, never
    from the message's claim; an unknown identity goes to the unassigned tenant (null).
    """
    if frame.height == 0:
        return empty_quarantine(registry)
    payloads: list[bytes] = frame["payload"].to_list()
    frame = frame.with_columns(
        pl.Series("payload_sha256", [hashlib.sha256(p).hexdigest() for p in payloads], pl.String),
        pl.Series("payload_excerpt", [_excerpt(p) for p in payloads], dtype=pl.String),
        pl.col("payload").bin.size().cast(pl.Int64).alias("payload_size_bytes"),
    )
    # The device is the authenticated one (the envelope's identity), never the payload's
    # claim; a file import has no identity and falls back to the payload's device when it
    # is a well-formed device id. The claim is kept apart, cut short, with a hash of it all.
    claims: list[str | None] = frame["device_id"].cast(pl.String).to_list()
    auth = (
        pl.when(pl.col("identity").is_not_null() & (pl.col("identity") != ""))
        .then(pl.col("identity"))
        .when(pl.col("device_id").str.contains(_DEVICE_ID))
        .then(pl.col("device_id"))
    )
    frame = frame.with_columns(
        auth.alias("_auth"),
        pl.Series(
            "claimed_device_sha256",
            [None if c is None else hashlib.sha256(c.encode()).hexdigest() for c in claims],
            pl.String,
        ),
        pl.when(pl.col("device_id").str.len_chars() > CLAIM_CHARS)
        .then(pl.col("device_id").str.slice(0, CLAIM_CHARS) + pl.lit("…"))
        .otherwise(pl.col("device_id"))
        .alias("claimed_device_id"),
    ).join(
        # a device is found by the name it publishes under (its mqtt_name, else its id)
        devices.select(
            (
                pl.coalesce("mqtt_name", "device_id")
                if "mqtt_name" in devices.columns
                else pl.col("device_id")
            ).alias("_auth"),
            pl.col("device_id").alias("_reg_device"),
            pl.col("client_id").alias("_reg_client"),
            pl.col("branch_id").alias("_reg_branch"),
        ),
        on="_auth",
        how="left",
    )
    claim = pl.col("topic").str.extract(r"^emaas/v1/[^/]+/([^/]+)/[^/]+/telemetry$", 1)
    contract_ref = pl.col("dataset").replace_strict(
        {d: registry.get(d).ref for d in registry.readings_datasets},
        default=None,
        return_dtype=pl.String,
    )
    out = frame.with_columns(
        _quarantine_id().alias("quarantine_id"),
        pl.col("_reg_client").alias("client_id"),
        pl.coalesce(pl.col("_reg_branch"), claim).alias("branch_id"),
        pl.coalesce(pl.col("_reg_device"), pl.col("_auth")).alias("device_id"),
        _cut(pl.col("detail"), DETAIL_CHARS).alias("detail"),
        contract_ref.alias("contract"),
        pl.lit(batch_id).alias("batch_id"),
        pl.col("_reg_client").alias("_tenant"),
        pl.col("received_at").dt.cast_time_unit("us").dt.convert_time_zone("UTC"),
    )
    schema = _quarantine_schema(registry)
    return out.select([pl.col(c).cast(t) for c, t in schema.items()] + [pl.col("_tenant")])


def _cut(text: pl.Expr, chars: int) -> pl.Expr:
    """``text`` cut to ``chars`` characters, the last one "…" when it was longer."""
    return (
        pl.when(text.str.len_chars() > chars)
        .then(text.str.slice(0, chars - 1) + pl.lit("…"))
        .otherwise(text)
    )


def _quarantine_id() -> pl.Expr:
    # Deterministic per (segment, offset, element): a replayed batch rewrites the same ids.
    key = pl.concat_str(
        [pl.col("segment"), pl.col("offset_bytes").cast(pl.String), pl.col(ELEM).cast(pl.String)],
        separator=":",
    )
    return key.map_elements(
        lambda s: hashlib.sha256(s.encode()).hexdigest(), return_dtype=pl.String
    )


def _excerpt(payload: bytes) -> str:
    head = payload[:_EXCERPT_BYTES]
    text = head.decode("utf-8", errors="backslashreplace")
    return text + ("…" if len(payload) > _EXCERPT_BYTES else "")


def _quarantine_schema(registry: ContractRegistry) -> dict[str, pl.DataType]:
    schema = pl.from_arrow(registry.get("quarantine").arrow_schema().empty_table())
    assert isinstance(schema, pl.DataFrame)
    return dict(schema.schema)
