"""The baseline of ``bench/pipeline.py``: plain polars doing the same job as ``energylake
process``, written the way an engineer would without the platform (nothing of
``transforms/`` or ``pipelines/``).

It reads the landing segments (``landing.reader.read_segment``: the shared file format),
rejects payloads over the size limit, parses each payload with orjson (rejecting what is
not JSON or has the wrong types), loads the good ones with ``polars.read_ndjson`` against an
explicit schema, looks the authenticated device up in the reference ``devices.parquet``,
checks the topic's client/branch/device claims, the required fields, the contract ranges
and enums and the timestamp window, drops duplicate ``(device_id, seq)`` (first arrival
wins) and writes Parquet (zstd) per tenant and dataset, partitioned by branch and month.
Rejects go to one Parquet file per tenant with their reason code.

Run as a script (``python bench/baseline_polars.py --help``); the last line it prints is a
JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from contracts import load_registry
from landing.reader import read_segment

SYSTEM = {
    "client_id",
    "branch_id",
    "device_id",
    "seq",
    "ts",
    "received_at",
    "event_month",
    "quality_flags",
}
TOP_KEYS = {"device_id", "seq", "ts", "readings", "units"}
TOPIC = r"^emaas/v1/([^/]+)/([^/]+)/([^/]+)/telemetry$"
FUTURE_S = 10 * 60
PAST_S = 7 * 86400
NUMBER = (int, float)


def _field_kinds(registry: Any) -> dict[str, type | tuple[type, ...]]:
    """Every reading field of the readings contracts -> the Python type JSON gives."""
    kinds: dict[str, type | tuple[type, ...]] = {}
    for dataset in registry.readings_datasets:
        for f in registry.get(dataset).fields:
            if f.name not in SYSTEM:
                kinds[f.name] = str if f.physical_type == "string" else NUMBER
    return kinds


def _check(obj: Any, kinds: dict[str, type | tuple[type, ...]]) -> str | None:
    """Why a parsed payload has the wrong shape or types (None: fine)."""
    if type(obj) is not dict:
        return "MALFORMED_PAYLOAD"
    if not obj.keys() <= TOP_KEYS:
        return "SCHEMA_MISMATCH"
    device, seq, ts = obj.get("device_id"), obj.get("seq"), obj.get("ts")
    readings = obj.get("readings")
    if device is None or seq is None or ts is None or readings is None:
        return "MISSING_FIELD"
    if type(device) is not str or type(seq) is not int or type(ts) not in NUMBER:
        return "SCHEMA_MISMATCH"
    if type(readings) is not dict:
        return "SCHEMA_MISMATCH"
    for key, value in readings.items():
        kind = kinds.get(key)
        if kind is None or (value is not None and not isinstance(value, kind)):
            return "SCHEMA_MISMATCH"
        if type(value) is bool:
            return "SCHEMA_MISMATCH"
    return None


def run(segments: Path, devices_path: Path, out: Path, payload_limit: int) -> dict[str, Any]:
    started = time.perf_counter()
    registry = load_registry()
    kinds = _field_kinds(registry)

    # 1. Read the segments.
    received: list[np.ndarray] = []
    topics: list[str] = []
    identities: list[str] = []
    payloads: list[bytes] = []
    for path in sorted(segments.glob("*.seg")):
        records = read_segment(path)
        received.append(records.received_at_us)
        topics.extend(records.topic)
        identities.extend(records.identity)
        payloads.extend(records.payload)
    n = len(payloads)
    envelopes = pl.DataFrame(
        {
            "_row": np.arange(n, dtype=np.int64),
            "received_us": np.concatenate(received) if received else np.zeros(0, np.int64),
            "topic": topics,
            "identity": identities,
        }
    )
    t_read = time.perf_counter()

    # 2. Size limit, JSON and types, payload by payload.
    bad_rows: list[int] = []
    bad_reasons: list[str] = []
    good_rows: list[int] = []
    lines: list[bytes] = []
    loads = orjson.loads
    for i, payload in enumerate(payloads):
        if len(payload) > payload_limit:
            bad_rows.append(i)
            bad_reasons.append("PAYLOAD_TOO_LARGE")
            continue
        try:
            obj = loads(payload)
        except orjson.JSONDecodeError:
            bad_rows.append(i)
            bad_reasons.append("MALFORMED_PAYLOAD")
            continue
        why = _check(obj, kinds)
        if why is not None:
            bad_rows.append(i)
            bad_reasons.append(why)
            continue
        good_rows.append(i)
        lines.append(payload if b"\n" not in payload else orjson.dumps(obj))
    readings_type = pl.Struct(
        {name: (pl.String if kind is str else pl.Float64) for name, kind in kinds.items()}
    )
    schema = {
        "device_id": pl.String,
        "seq": pl.Int64,
        "ts": pl.Float64,
        "readings": readings_type,
    }
    parsed = pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema) if lines else None
    frame = (
        pl.DataFrame(schema=schema)
        if parsed is None
        else parsed.with_columns(pl.Series("_row", good_rows, pl.Int64))
    )
    frame = frame.unnest("readings").join(envelopes, on="_row", how="left")
    t_parse = time.perf_counter()

    # 3. Device, claims, fields, ranges, time window: the first failing check names the row.
    devices = pl.read_parquet(
        devices_path, columns=["device_id", "client_id", "branch_id", "kind", "status"]
    ).rename(lambda c: f"reg_{c}")
    frame = frame.with_columns(
        pl.when(pl.col("identity") == "")
        .then(pl.col("device_id"))
        .otherwise(pl.col("identity"))
        .alias("auth")
    ).join(devices, left_on="auth", right_on="reg_device_id", how="left")
    claims = pl.col("topic").str.extract_groups(TOPIC)
    frame = frame.with_columns(claims.alias("_claim")).unnest("_claim")
    frame = frame.rename({"1": "claim_client", "2": "claim_branch", "3": "claim_device"})
    frame = frame.with_columns(
        pl.col("reg_kind").replace_strict(registry.dataset_of_kind, default=None).alias("dataset")
    )
    received_s = pl.col("received_us") / 1e6
    checks: list[tuple[str, pl.Expr]] = [
        ("UNKNOWN_DEVICE", pl.col("reg_client_id").is_null() | (pl.col("reg_status") != "active")),
        (
            "BRANCH_MISMATCH",
            pl.col("claim_client").is_null()
            | (pl.col("claim_client") != pl.col("reg_client_id"))
            | (pl.col("claim_branch") != pl.col("reg_branch_id"))
            | (pl.col("claim_device") != pl.col("auth"))
            | (pl.col("device_id") != pl.col("auth")),
        ),
    ]
    schema_bad: list[pl.Expr] = []
    missing: list[pl.Expr] = []
    out_of_range: list[pl.Expr] = []
    for dataset in registry.readings_datasets:
        contract = registry.get(dataset)
        mine = {f.name for f in contract.fields if f.name not in SYSTEM}
        is_ds = pl.col("dataset") == dataset
        foreign = [pl.col(name).is_not_null() for name in kinds if name not in mine]
        if foreign:
            schema_bad.append(is_ds & pl.any_horizontal(foreign))
        for f in contract.fields:
            if f.name in SYSTEM:
                continue
            c = pl.col(f.name)
            if f.required:
                missing.append(is_ds & c.is_null())
            if f.physical_type in ("int64", "int32"):
                schema_bad.append(is_ds & c.is_not_null() & (c != c.floor()))
            bad = pl.lit(False)
            if f.minimum is not None:
                bad = bad | (c < f.minimum)
            if f.maximum is not None:
                bad = bad | (c > f.maximum)
            if f.allowed_values:
                bad = bad | ~c.is_in([str(v) for v in f.allowed_values])
            if f.physical_type != "string":
                bad = bad | ~c.is_finite()
            out_of_range.append(is_ds & c.is_not_null() & bad)
    checks += [
        ("SCHEMA_MISMATCH", pl.any_horizontal(schema_bad) | (pl.col("seq") < 0)),
        ("MISSING_FIELD", pl.any_horizontal(missing)),
        (
            "TIMESTAMP_OUT_OF_RANGE",
            (pl.col("ts") > received_s + FUTURE_S) | (pl.col("ts") < received_s - PAST_S),
        ),
        ("OUT_OF_RANGE", pl.any_horizontal(out_of_range)),
    ]
    reason = pl.lit(None, pl.String)
    for code, bad in reversed(checks):
        reason = pl.when(bad.fill_null(False)).then(pl.lit(code)).otherwise(reason)
    frame = frame.with_columns(reason.alias("_reason"))
    rejected = frame.filter(pl.col("_reason").is_not_null()).select(
        "_row", pl.col("_reason").alias("reason")
    )
    frame = frame.filter(pl.col("_reason").is_null())
    t_check = time.perf_counter()

    # 4. Duplicates: the first arrival of a (device_id, seq) wins.
    frame = frame.sort("received_us", "_row")
    first = frame.select(pl.struct("device_id", "seq").is_first_distinct()).to_series()
    duplicates = int((~first).sum())
    frame = frame.filter(first)
    t_dedupe = time.perf_counter()

    # 5. Write: tenant / dataset / branch_id=... / event_month=... / *.parquet (zstd).
    ts = pl.from_epoch((pl.col("ts") * 1e6).round(0).cast(pl.Int64), time_unit="us")
    frame = frame.with_columns(
        pl.col("reg_client_id").alias("client_id"),
        pl.col("reg_branch_id").alias("branch_id"),
        ts.dt.replace_time_zone("UTC").alias("ts"),
        pl.from_epoch("received_us", time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("received_at"),
    ).with_columns(pl.col("ts").dt.strftime("%Y-%m").alias("event_month"))
    rows_written: dict[str, int] = {}
    for (dataset,), part in frame.group_by("dataset"):
        contract = registry.get(str(dataset))
        columns = [f.name for f in contract.fields if f.name != "quality_flags"]
        typed = part.select(columns).with_columns(
            *[
                pl.col(f.name).cast(pl.Int64)
                for f in contract.fields
                if f.physical_type in ("int64", "int32")
            ]
        )
        for (tenant,), rows in typed.group_by("client_id"):
            rows.sort("branch_id", "event_month", "device_id", "ts").write_parquet(
                out / str(tenant) / str(dataset),
                compression="zstd",
                partition_by=["branch_id", "event_month"],
            )
            key = f"{tenant}/{dataset}"
            rows_written[key] = rows_written.get(key, 0) + rows.height

    decode_rejects = pl.DataFrame(
        {"_row": bad_rows, "reason": bad_reasons}, schema={"_row": pl.Int64, "reason": pl.String}
    )
    rejects = (
        pl.concat([decode_rejects, rejected])
        .join(envelopes, on="_row", how="left")
        .join(
            devices.select("reg_device_id", "reg_client_id", "reg_branch_id"),
            left_on="identity",
            right_on="reg_device_id",
            how="left",
        )
        .with_columns(pl.col("reg_client_id").fill_null("_unassigned").alias("tenant"))
        .select("_row", "reason", "received_us", "topic", "identity", "tenant")
    )
    raw = pl.Series("payload", payloads, dtype=pl.Binary)
    rejects = rejects.with_columns(raw.gather(rejects["_row"]).alias("payload"))
    for (tenant,), part in rejects.group_by("tenant"):
        folder = out / "_rejects" / str(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("tenant").write_parquet(folder / "rejects.parquet", compression="zstd")
    t_write = time.perf_counter()

    files = sorted(out.rglob("*.parquet"))
    reject_reasons = rejects.group_by("reason").len().sort("reason").rows()
    return {
        "records": n,
        "rows_written": sum(rows_written.values()),
        "rows_by_table": dict(sorted(rows_written.items())),
        "rejected": rejects.height,
        "reject_reasons": {str(r): int(c) for r, c in reject_reasons},
        "duplicates": duplicates,
        "files": len(files),
        "reading_files": sum(1 for f in files if "_rejects" not in f.parts),
        "bytes": sum(f.stat().st_size for f in files),
        "seconds": time.perf_counter() - started,
        "stages": {
            "read": t_read - started,
            "parse": t_parse - t_read,
            "check": t_check - t_parse,
            "dedupe": t_dedupe - t_check,
            "write": t_write - t_dedupe,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=Path, required=True, help="folder of *.seg files")
    parser.add_argument("--devices", type=Path, required=True, help="reference devices.parquet")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--payload-limit", type=int, default=65536)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = run(args.segments, args.devices, args.out, args.payload_limit)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
