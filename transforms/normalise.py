"""Normalise: attach the authenticated device, convert declared units, time to UTC microseconds.

Vectorised over a chunk's decoded rows. A declared unit is converted to the contract's and
the row flagged UNIT_CONVERTED; a declared unit with no conversion is UNIT_SUSPECT. A
device's "not available" code (the contract's ``sentinel`` register type) becomes NULL and
the row is flagged SENTINEL (a required field nulled that way is then MISSING_FIELD). Event
time becomes ``ts_us`` (int64 microseconds, UTC); an epoch that cannot be seconds (beyond
year 5000: milliseconds sent as seconds) becomes null and is judged by ``enforce``.
A vendor's local time (Tasmota's ``Time``) is read in the branch's timezone; a payload
without a time takes its reception time. A decoder's per-kind values go to the fields of the
device's kind, and a format without a sequence number gets one from its time (the decoder
says which time, and in what unit).
"""

from __future__ import annotations

import polars as pl

from contracts import ContractRegistry
from transforms.decode import _UNIT_FIELDS
from transforms.frames import Chunk, as_frame, reject_frame
from transforms.units import UNIT_FACTORS

__all__ = ["UNIT_FACTORS", "normalise_chunk"]

_MAX_EPOCH_S = 95_617_584_000.0  # 5000-01-01: a larger "seconds" value is not seconds


def _attach_device(
    rows: pl.DataFrame, devices: pl.DataFrame, dataset_of_kind: dict[str, str]
) -> pl.DataFrame:
    # Who sent it: the authenticated identity, or (a file import) the payload's device; a
    # device behind an edge node (Sparkplug B) is named by the topic and checked against the
    # edge node it is registered behind, in enforce.
    auth = (
        pl.when(pl.col("claim_edge").is_not_null())
        .then(pl.col("claim_device"))
        .when(pl.col("identity").is_null() | (pl.col("identity") == ""))
        .then(pl.col("device_id"))
        .otherwise(pl.col("identity"))
    )
    kinds = pl.col("reg_kind").replace_strict(dataset_of_kind, default=None)
    # A device is found by the name it publishes under (its mqtt_name, else its id).
    registry = devices.rename({c: f"reg_{c}" for c in devices.columns}).with_columns(
        pl.coalesce("reg_mqtt_name", "reg_device_id").alias("auth_device")
    )
    return (
        rows.with_columns(auth.alias("auth_device"))
        .join(registry, on="auth_device", how="left")
        .with_columns(kinds.alias("dataset"))
    )


def _by_kind(rows: pl.DataFrame) -> pl.DataFrame:
    """A decoder's per-kind values (``meter@energy_import_kwh``: Tasmota's Total is a
    meter's import counter and a solar meter's generation) to the fields of the row's kind."""
    columns = [c for c in rows.columns if "@" in c]
    if not columns:
        return rows
    # a chunk of canonical envelopes (the bulk) has none: nothing to compute
    present = [c for c in columns if rows[c].null_count() < rows.height]
    updates: dict[str, pl.Expr] = {}
    for column in present:
        kind, name = column.split("@", 1)
        current = updates.get(name, pl.col(name))
        updates[name] = (
            pl.when((pl.col("reg_kind") == kind) & pl.col(column).is_not_null())
            .then(pl.col(column))
            .otherwise(current)
        )
    return rows.with_columns([e.alias(n) for n, e in updates.items()]).drop(columns)


def normalise_chunk(
    chunk: Chunk,
    registry: ContractRegistry,
    devices: pl.DataFrame,
) -> None:
    rows = chunk.rows
    if rows.height == 0:
        return
    env = as_frame(
        chunk.envelopes.select(["received_at", "identity", "source", "topic"])
    ).with_row_index("_row")
    assert isinstance(env, pl.DataFrame)
    rows = rows.join(env.with_columns(pl.col("_row").cast(pl.Int64)), on="_row", how="left")
    rows = _by_kind(_attach_device(rows, devices, registry.dataset_of_kind))

    # Units: every declared unit must convert to the contract's unit of that field.
    contract_units = {
        name: unit
        for dataset in registry.readings_datasets
        for f in registry.get(dataset).fields
        if (name := f.name) in _UNIT_FIELDS and (unit := f.unit) is not None
    }
    unit_exprs: list[pl.Expr] = []
    bad_unit: list[pl.Expr] = []
    converted: list[pl.Expr] = []
    for name in _UNIT_FIELDS:
        declared = pl.col(f"unit__{name}")
        target = contract_units[name]
        factor = declared.replace_strict(
            {u: f for (u, t), f in UNIT_FACTORS.items() if t == target},
            default=None,
            return_dtype=pl.Float64,
        )
        unit_exprs.append(
            pl.when(declared.is_not_null() & factor.is_not_null())
            .then(pl.col(name) * factor)
            .otherwise(pl.col(name))
            .alias(name)
        )
        bad_unit.append(
            pl.when(declared.is_not_null() & factor.is_null()).then(
                pl.format(
                    "{}: unit {} is not convertible to {}", pl.lit(name), declared, pl.lit(target)
                )
            )
        )
        converted.append(declared.is_not_null() & (declared != target) & factor.is_not_null())
    rows = rows.with_columns(
        pl.concat_str(bad_unit, separator="; ", ignore_nulls=True).alias("_bad_unit"),
        pl.any_horizontal(converted).alias("_unit_converted"),
    )
    suspect = rows.filter(pl.col("_bad_unit") != "")
    if suspect.height:
        chunk.reject(reject_frame(suspect, "UNIT_SUSPECT", pl.col("_bad_unit"), "normalise"))
        rows = rows.filter(pl.col("_bad_unit") == "")
    rows = rows.with_columns(unit_exprs)
    rows = _null_sentinels(rows, registry)

    # Time: epoch seconds, local wall time in the branch's zone (Tasmota), or the reception
    # time (a vendor payload without one) to UTC microseconds.
    ts = pl.col("ts")
    ts_ok = ts.is_finite() & (ts.abs() < _MAX_EPOCH_S)
    canonical_us = pl.when(ts_ok).then((ts * 1_000_000).round(0).cast(pl.Int64)).otherwise(None)
    received_us = pl.col("received_at").dt.epoch("us")
    rows = rows.with_columns(
        pl.when(ts.is_null() & pl.col("ts_local").is_null() & pl.col("_ts_received"))
        .then(received_us)
        .otherwise(canonical_us)
        .alias("ts_us")
    )
    if rows["ts_local"].is_not_null().any():
        rows = _local_time(rows)
    # seq from a time (decoders of formats without one): whole units of the event time or
    # of the reception time.
    unit_us = pl.col("_seq_unit_s") * 1_000_000
    source = pl.when(pl.col("_seq_received")).then(received_us).otherwise(pl.col("ts_us"))
    rows = rows.with_columns(
        pl.when(pl.col("seq").is_null() & pl.col("_seq_unit_s").is_not_null())
        .then((source / unit_us).round(6).floor())
        .otherwise(pl.col("seq"))
        .alias("seq")
    )
    chunk.rows = rows


def _null_sentinels(rows: pl.DataFrame, registry: ContractRegistry) -> pl.DataFrame:
    """A device's "not available" code (GenComm register sentinels, declared per field in
    the contract) becomes NULL; ``_sentinel`` lists the fields nulled (",a,b,") for the flag
    and for the detail of a required field that is now missing."""
    hits: dict[str, pl.Expr] = {}
    for dataset in registry.readings_datasets:
        for f in registry.get(dataset).fields:
            if not f.sentinels or f.name not in rows.columns:
                continue
            low, high = min(f.sentinels), max(f.sentinels)
            slack = max(1e-9, 1e-7 * max(abs(low), abs(high)))  # a device rounds 1/3600 h
            col = pl.col(f.name)
            hit = (pl.col("dataset") == dataset) & col.is_between(low - slack, high + slack)
            hits[f.name] = hit if f.name not in hits else hits[f.name] | hit
    if not hits:
        return rows.with_columns(pl.lit("").alias("_sentinel"))
    marks = [pl.when(hit).then(pl.lit(f"{name},")) for name, hit in hits.items()]
    listed = pl.concat_str(marks, ignore_nulls=True)
    return rows.with_columns(
        pl.when(listed != "").then(pl.lit(",") + listed).otherwise(pl.lit("")).alias("_sentinel"),
        *[
            pl.when(hit).then(None).otherwise(pl.col(name)).alias(name)
            for name, hit in hits.items()
        ],
    )


def _local_time(rows: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for (tz,), part in rows.group_by("reg_timezone"):
        local = part["ts_local"].str.to_datetime(strict=False, time_unit="us")
        zone = str(tz) if tz is not None else "Asia/Kolkata"
        utc = local.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
        epoch_us = utc.dt.epoch("us")
        parts.append(
            part.with_columns(
                pl.when(pl.col("ts_local").is_not_null())
                .then(epoch_us)
                .otherwise(pl.col("ts_us"))
                .alias("ts_us"),
            )
        )
    return pl.concat(parts, how="vertical_relaxed")
