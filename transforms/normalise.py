"""Normalise: attach the authenticated device, convert declared units, time to UTC microseconds.

Vectorised over a chunk's decoded rows. A declared unit is converted to the contract's and
the row flagged UNIT_CONVERTED; a declared unit with no conversion is UNIT_SUSPECT. A
device's "not available" code (the contract's ``sentinel`` register type) becomes NULL and
the row is flagged SENTINEL (a required field nulled that way is then MISSING_FIELD). Event
time becomes ``ts_us`` (int64 microseconds, UTC); an epoch that cannot be seconds (beyond
year 5000: milliseconds sent as seconds) becomes null and is judged by ``enforce``.
Tasmota's local ``Time`` is read in the branch's timezone and also gives the sequence number
(epoch seconds), since Tasmota has none.
"""

from __future__ import annotations

import polars as pl

from contracts import ContractRegistry
from transforms.decode import _UNIT_FIELDS
from transforms.frames import Chunk, as_frame, reject_frame

__all__ = ["UNIT_FACTORS", "normalise_chunk"]

# (declared unit, contract unit) -> factor. Unit names as devices write them.
UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("W", "kW"): 1e-3,
    ("kW", "kW"): 1.0,
    ("MW", "kW"): 1e3,
    ("VA", "kVA"): 1e-3,
    ("kVA", "kVA"): 1.0,
    ("var", "kVAr"): 1e-3,
    ("VAr", "kVAr"): 1e-3,
    ("VAR", "kVAr"): 1e-3,
    ("kvar", "kVAr"): 1.0,
    ("kVAr", "kVAr"): 1.0,
    ("Wh", "kWh"): 1e-3,
    ("kWh", "kWh"): 1.0,
    ("MWh", "kWh"): 1e3,
}
_MAX_EPOCH_S = 95_617_584_000.0  # 5000-01-01: a larger "seconds" value is not seconds


def _attach_device(
    rows: pl.DataFrame, devices: pl.DataFrame, dataset_of_kind: dict[str, str]
) -> pl.DataFrame:
    auth = (
        pl.when(pl.col("identity").is_null() | (pl.col("identity") == ""))
        .then(pl.col("device_id"))
        .otherwise(pl.col("identity"))
    )
    kinds = pl.col("reg_kind").replace_strict(dataset_of_kind, default=None)
    return (
        rows.with_columns(auth.alias("auth_device"))
        .join(
            devices.rename({c: f"reg_{c}" for c in devices.columns if c != "device_id"}).rename(
                {"device_id": "auth_device"}
            ),
            on="auth_device",
            how="left",
        )
        .with_columns(kinds.alias("dataset"))
    )


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
    rows = _attach_device(rows, devices, registry.dataset_of_kind)

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

    # Time: epoch seconds (canonical) or local wall time (Tasmota) to UTC microseconds.
    ts = pl.col("ts")
    ts_ok = ts.is_finite() & (ts.abs() < _MAX_EPOCH_S)
    canonical_us = pl.when(ts_ok).then((ts * 1_000_000).round(0).cast(pl.Int64)).otherwise(None)
    rows = rows.with_columns(canonical_us.alias("ts_us"))
    if rows["ts_local"].is_not_null().any():
        rows = _tasmota_time(rows)
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


def _tasmota_time(rows: pl.DataFrame) -> pl.DataFrame:
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
                pl.when(pl.col("ts_local").is_not_null())
                .then((epoch_us // 1_000_000).cast(pl.Float64))
                .otherwise(pl.col("seq"))
                .alias("seq"),
            )
        )
    return pl.concat(parts, how="vertical_relaxed")
