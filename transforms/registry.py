"""The device registry as the pipeline uses it: one polars frame, device id to its facts."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from lake.errors import ReferenceDataError

__all__ = ["DEVICE_COLUMNS", "device_frame"]

DEVICE_COLUMNS: dict[str, pl.DataType | type[pl.DataType]] = {
    "device_id": pl.String,
    "client_id": pl.String,
    "branch_id": pl.String,
    "kind": pl.String,
    "payload_format": pl.String,
    "rated_power_kw": pl.Float64,
    "tank_capacity_l": pl.Float64,
    "cadence_s": pl.Int64,
    "status": pl.String,
    "timezone": pl.String,
    "mqtt_name": pl.String,
    "profile": pl.String,
    "edge_node": pl.String,
}
# Columns a registry written by an older devices contract lacks: null (the defaults).
_OPTIONAL = ("mqtt_name", "profile", "edge_node")


def device_frame(devices: pa.Table, branches: pa.Table | None = None) -> pl.DataFrame:
    """Devices (contract ``devices``) joined to their branch's timezone (default Asia/Kolkata).

    A device is found by the name it publishes under: its ``mqtt_name``, else its id."""
    frame = pl.from_arrow(devices)
    assert isinstance(frame, pl.DataFrame)
    if branches is not None and branches.num_rows:
        tz = pl.from_arrow(branches.select(["branch_id", "timezone"]))
        assert isinstance(tz, pl.DataFrame)
        frame = frame.join(tz.unique("branch_id"), on="branch_id", how="left")
    if "timezone" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("timezone"))
    frame = frame.with_columns(pl.col("timezone").fill_null("Asia/Kolkata"))
    frame = frame.with_columns(
        [pl.lit(None, pl.String).alias(c) for c in _OPTIONAL if c not in frame.columns]
    )
    if frame.get_column("device_id").is_duplicated().any():
        dupes = frame.filter(pl.col("device_id").is_duplicated())["device_id"].unique().to_list()
        raise ReferenceDataError(
            "the device registry (table devices)",
            f"lists a device twice: {', '.join(dupes[:5])}; load it again with one row "
            "per device (`energylake reference load DIR`)",
            "device_id",
        )
    names = frame.select(pl.coalesce("mqtt_name", "device_id")).to_series()
    if names.is_duplicated().any():
        dupes = names.filter(names.is_duplicated()).unique().to_list()
        raise ReferenceDataError(
            "the device registry (table devices)",
            f"two devices publish under one name: {', '.join(dupes[:5])} (a device_id is "
            "another's mqtt_name); give each device its own",
            "mqtt_name",
        )
    return frame.select([pl.col(c).cast(t) for c, t in DEVICE_COLUMNS.items()])
