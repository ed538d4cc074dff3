"""The CAQM DG operation log: each run of each DG set, from its readings, joined with the GRAP
stage in force and the rule of the set's class, kept as an append-only, hash-chained log.

- **A run** is a stretch of readings with the engine turning: status warm_up, running or
  cool_down, or engine speed of ``RUNNING_RPM`` or more. It starts at its first such
  reading and stops at the first reading after it with the engine stopped (a log for a cap
  errs on the long side: by less than one cadence). A run still going at the last reading
  is open and not logged yet, unless the set fell silent while the data go on
  (``detect_runs``): then it is logged to its last reading, flagged DATA_GAP. kWh are the
  generated-energy counter's steps inside the run (reset-aware), litres the tank level's
  falls x the tank's litres, load the mean of the readings' load %. A gap in the readings
  inside a run (over 3 cadences) is flagged.
- **Rules** (``dg_rules``, platform reference data): the first rule by priority whose
  capacity class, fuel and emission control match the set. It applies while a GRAP stage
  of ``from_stage`` or more is in force in the NCR (``grap_calendar``); then a run is
  flagged NOT_ALLOWED_IN_STAGE, EMERGENCY_ONLY (allowed for listed emergency services
  only: the log holds the run for its justification), NO_CERTIFICATE_ON_RECORD, or
  OVER_DAILY_CAP (the set's running hours that IST day, this run's included, over the
  class's cap). A set outside the NCR is logged and marked NOT_IN_NCR; a set no rule
  matches, NO_RULE.
- **The log** is one chain per tenant (``audit.chain``: canonical JSON lines, seq and the
  previous line's SHA-256, anchors): a run is appended once (key: set and start); a late
  reading that changes a logged run appends a ``dg_run_correction`` naming the seq it
  corrects and what changed; nothing is rewritten. ``energylake audit verify`` and
  ``energylake report verify`` check the chain.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from analytics.access import Session
from audit.log import AuditLog
from audit.query import read_records
from contracts import ContractRegistry
from contracts.errors import ConfigError
from lake.consumption import counter_steps, fuel_used
from lake.delta import open_table
from lake.reference import read_platform_reference
from lake.storage import Store
from reporting.mart import TZ_NAME, ist_day_start
from reporting.record import header

__all__ = [
    "RUNNING_RPM",
    "LogAppend",
    "append_log",
    "detect_runs",
    "dg_log_document",
    "evaluate",
    "log_entries",
    "log_folder",
]

RUNNING_RPM = 300.0
_ON_STATES = ("warm_up", "running", "cool_down")
_GAP_CADENCES = 3.0
_MIN_SILENCE_S = 900.0  # a set silent this long (or 3 cadences) mid-run has stopped reporting
_BRANCH_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,47}$")  # the branches contract's pattern
_COMPARED = ("stop", "duration_h", "kwh", "fuel_l", "avg_load_pct", "stage", "rule", "flags")


def log_folder(data_dir: Path, tenant: str) -> Path:
    """The tenant's chained DG log (a folder of day files, as an audit chain)."""
    return data_dir / "reports" / f"dg-log-{tenant}"


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def detect_runs(
    readings: pl.DataFrame, sets: pl.DataFrame, data_until: datetime | None = None
) -> pl.DataFrame:
    """Runs from DG readings (device_id, branch_id, ts, seq, status, engine_speed_rpm,
    load_pct, energy_generated_kwh, fuel_level_pct) and the sets (device_id,
    tank_capacity_l, cadence_s): one row per run.

    A run ends at the first reading of the set that is not "on". A run with no such
    reading is still going, unless the set fell silent: when the data reach
    ``data_until`` and the set's last reading is more than the allowed gap (``_GAP_CADENCES``
    cadences, at least ``_MIN_SILENCE_S``) before it, the run is logged as stopped at its
    last "on" reading, flagged ``data_gap`` (a later reading, if one comes, corrects it)."""
    if readings.height == 0:
        return pl.DataFrame()
    frame = readings.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
    frame = counter_steps(frame, ["energy_generated_kwh"]).collect()
    frame = fuel_used(frame, sets.select("device_id", "tank_capacity_l")).collect()
    frame = frame.sort("device_id", "ts", "seq").join(
        sets.select("device_id", "cadence_s"), on="device_id", how="left"
    )
    on = pl.col("status").is_in(_ON_STATES) | (pl.col("engine_speed_rpm") >= RUNNING_RPM)
    frame = frame.with_columns(on.fill_null(False).alias("_on"))
    frame = frame.with_columns(
        (pl.col("_on") != pl.col("_on").shift(1).over("device_id"))
        .fill_null(True)
        .cum_sum()
        .over("device_id")
        .alias("_block"),
        pl.col("ts").shift(-1).over("device_id").alias("_next_ts"),
        pl.col("ts").diff().over("device_id").dt.total_seconds().alias("_gap_s"),
    )
    # the first reading after a run (engine stopped) closes it: its step and fuel count too
    frame = frame.with_columns(
        pl.col("_block").shift(1).over("device_id").alias("_prev_block"),
        pl.col("_on").shift(1).over("device_id").fill_null(False).alias("_prev_on"),
    )
    closing = frame.filter(~pl.col("_on") & pl.col("_prev_on")).select(
        "device_id",
        pl.col("_prev_block").alias("_block"),
        pl.col("ts").alias("stop"),
        pl.col("energy_generated_kwh_step").alias("_kwh_close"),
        pl.col("fuel_used_l").alias("_fuel_close"),
        pl.col("_gap_s").alias("_gap_close"),
    )
    runs = (
        frame.filter(pl.col("_on"))
        .group_by("device_id", "_block")
        .agg(
            pl.col("branch_id").first(),
            pl.col("ts").min().alias("start"),
            pl.len().alias("readings"),
            # steps inside the run: every running reading but the first (its step is before)
            (
                pl.col("energy_generated_kwh_step").sum()
                - pl.col("energy_generated_kwh_step").first()
            ).alias("_kwh"),
            (pl.col("fuel_used_l").sum() - pl.col("fuel_used_l").first()).alias("_fuel"),
            pl.col("load_pct").mean().alias("avg_load_pct"),
            (pl.col("_gap_s").slice(1).max()).alias("_max_gap_s"),
            pl.col("cadence_s").first(),
            pl.col("ts").max().alias("_last_on"),
        )
        .join(closing, on=["device_id", "_block"], how="left")
    )
    last = frame.group_by("device_id").agg(pl.col("ts").max().alias("_last_seen"))
    allowed = pl.max_horizontal(
        pl.col("cadence_s").cast(pl.Float64).fill_null(0.0) * _GAP_CADENCES, _MIN_SILENCE_S
    )
    silent = (
        pl.lit(data_until, dtype=pl.Datetime("us", "UTC")) - pl.col("_last_seen")
    ).dt.total_seconds() > allowed
    runs = (
        runs.join(last, on="device_id", how="left")
        .with_columns(
            (pl.col("stop").is_null() & silent.fill_null(False)).alias("data_gap"),
        )
        .filter(pl.col("stop").is_not_null() | pl.col("data_gap"))  # still going: not yet
        .with_columns(pl.coalesce(pl.col("stop"), pl.col("_last_on")).alias("stop"))
        .with_columns(
            (pl.col("_kwh") + pl.col("_kwh_close").fill_null(0.0)).alias("kwh"),
            (pl.col("_fuel") + pl.col("_fuel_close").fill_null(0.0)).alias("fuel_l"),
            ((pl.col("stop") - pl.col("start")).dt.total_seconds() / 3600.0).alias("duration_h"),
            (
                pl.max_horizontal(pl.col("_max_gap_s").fill_null(0.0), pl.col("_gap_close"))
                > pl.col("cadence_s").cast(pl.Float64) * _GAP_CADENCES
            )
            .fill_null(False)
            .alias("gap_in_run"),
        )
        .select(
            "device_id",
            "branch_id",
            "start",
            "stop",
            "duration_h",
            "readings",
            "kwh",
            "fuel_l",
            "avg_load_pct",
            "gap_in_run",
            "data_gap",
        )
        .sort("device_id", "start")
    )
    return runs


@dataclass(frozen=True, slots=True)
class _Stage:
    stage: int
    order_reference: str | None


def _stage(calendar: list[dict[str, Any]], start: datetime, stop: datetime) -> _Stage:
    """The highest GRAP stage in force in the NCR at any time of ``[start, stop)``."""
    best = _Stage(0, None)
    for row in calendar:
        if row["region"] != "NCR":
            continue
        ends = row["ends_at"] or datetime.max.replace(tzinfo=UTC)
        if row["starts_at"] < stop and ends > start and int(row["stage"]) > best.stage:
            best = _Stage(int(row["stage"]), str(row["order_reference"]))
    return best


def _rule(rules: list[dict[str, Any]], kw: float, fuel: str | None, control: str | None) -> Any:
    for rule in sorted(rules, key=lambda r: (int(r["priority"]), str(r["rule_id"]))):
        high = rule["max_kw"] if rule["max_kw"] is not None else float("inf")
        if not float(rule["min_kw"]) <= kw < float(high):
            continue
        if rule["fuel"] != "any" and rule["fuel"] != fuel:
            continue
        if rule["emission_control"] != "any" and rule["emission_control"] != control:
            continue
        return rule
    return None


def _day_parts(start: datetime, stop: datetime) -> dict[date, float]:
    """Hours of ``[start, stop)`` in each IST day."""
    parts: dict[date, float] = {}
    day = pl.Series([start]).dt.convert_time_zone(TZ_NAME).dt.date()[0]
    while True:
        lo, hi = ist_day_start(day), ist_day_start(day + timedelta(days=1))
        hours = (min(stop, hi) - max(start, lo)).total_seconds() / 3600.0
        if hours > 0:
            parts[day] = hours
        if hi >= stop:
            return parts
        day += timedelta(days=1)


def evaluate(
    runs: pl.DataFrame,
    sets: dict[str, dict[str, Any]],
    branches: dict[str, dict[str, Any]],
    calendar: list[dict[str, Any]],
    rules: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each run with its stage, rule, daily running totals and flags (module doc)."""
    out: list[dict[str, Any]] = []
    totals: dict[tuple[str, date], float] = {}
    for run in runs.sort("device_id", "start").iter_rows(named=True):
        s = sets.get(run["device_id"], {})
        b = branches.get(run["branch_id"], {})
        flags: list[str] = []
        parts = _day_parts(run["start"], run["stop"])
        day_totals: dict[str, float] = {}
        for day, hours in parts.items():
            key = (run["device_id"], day)
            totals[key] = totals.get(key, 0.0) + hours
            day_totals[day.isoformat()] = round(totals[key], 4)
        stage = _stage(calendar, run["start"], run["stop"])
        rule = _rule(rules, float(s.get("rated_power_kw") or 0.0), s.get("fuel_type"),
                     s.get("emission_control"))  # fmt: skip
        cap = None
        if not b.get("ncr"):
            flags.append("NOT_IN_NCR")
        elif rule is None:
            flags.append("NO_RULE")
        elif stage.stage >= int(rule["from_stage"]):
            cap = rule["daily_cap_h"]
            if rule["allowed"] == "not_allowed":
                flags.append("NOT_ALLOWED_IN_STAGE")
            elif rule["allowed"] == "emergency_only":
                flags.append("EMERGENCY_ONLY")
            if rule["needs_certificate"] and not s.get("certificate_ref"):
                flags.append("NO_CERTIFICATE_ON_RECORD")
            if cap is not None and any(v > float(cap) + 1e-9 for v in day_totals.values()):
                flags.append("OVER_DAILY_CAP")
        if run["gap_in_run"]:
            flags.append("GAP_IN_RUN")
        if run["data_gap"]:
            flags.append("DATA_GAP")
        out.append(
            {
                "run_key": f"{run['device_id']}@{run['start'].isoformat()}",
                "device_id": run["device_id"],
                "branch_id": run["branch_id"],
                "ncr_district": b.get("ncr_district"),
                "rated_kw": s.get("rated_power_kw"),
                "fuel_type": s.get("fuel_type"),
                "emission_control": s.get("emission_control"),
                "certificate_ref": s.get("certificate_ref"),
                "start": run["start"].isoformat(),
                "stop": run["stop"].isoformat(),
                "duration_h": round(float(run["duration_h"]), 4),
                "readings": int(run["readings"]),
                "kwh": round(float(run["kwh"] or 0.0), 3),
                "fuel_l": round(float(run["fuel_l"] or 0.0), 3),
                "avg_load_pct": None if run["avg_load_pct"] is None
                else round(float(run["avg_load_pct"]), 2),
                "stage": stage.stage if b.get("ncr") else None,
                "grap_order": stage.order_reference if b.get("ncr") else None,
                "rule": None if rule is None else rule["rule_id"],
                "daily_cap_h": cap,
                "day_total_h": day_totals,
                "flags": flags,
            }
        )  # fmt: skip
    return out


def _data_until(store: Store, session: Session, read_until: datetime) -> datetime | None:
    """How far the DG readings read can be trusted to be complete: the end of the read
    window, or the time of the newest commit of the readings' tables at the versions read
    if that is earlier (a run going on now is not a set that fell silent). The same for a
    verification, which reads the same versions. None: no readings table."""
    newest: datetime | None = None
    for rel, version in session.read_versions().items():
        if rel.rsplit("/", 1)[-1] != "dg_readings" or version is None:
            continue
        history = open_table(store, rel, version).history(1)
        if history:
            at = datetime.fromtimestamp(int(history[0]["timestamp"]) / 1000, tz=UTC)
            newest = at if newest is None else max(newest, at)
    return None if newest is None else min(newest, read_until)


def dg_log_document(
    session: Session,
    store: Store,
    registry: ContractRegistry,
    tenant: str,
    start: date,
    end: date,
    *,
    branch: str | None = None,
    versions: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """The runs of IST days ``[start, end)`` (started in the window) as a document.
    ``versions``: the reference tables' versions to read (a verification's)."""
    pins = versions or {}
    rules, rules_v = read_platform_reference(
        store, registry.get("dg_rules"), pins.get("platform/dg_rules")
    )
    sets = _frame(
        session.sql(
            "SELECT device_id, branch_id, rated_power_kw, fuel_type, emission_control,"
            " certificate_ref, tank_capacity_l, cadence_s FROM devices WHERE kind = 'dg'"
        )
    )
    branches = _frame(session.sql("SELECT branch_id, site_name, ncr, ncr_district FROM branches"))
    if branch is not None:
        sets = sets.filter(pl.col("branch_id") == branch)
    calendar_rows: list[dict[str, Any]] = []
    calendar_v: int | None = None
    ncr = set(branches.filter(pl.col("ncr"))["branch_id"].to_list())
    if ncr & set(sets["branch_id"].to_list()):
        calendar, calendar_v = read_platform_reference(
            store, registry.get("grap_calendar"), pins.get("platform/grap_calendar")
        )
        calendar_rows = calendar.to_pylist()
    lo, hi = ist_day_start(start), ist_day_start(end)
    if branch is not None and not _BRANCH_ID.fullmatch(branch):
        raise ConfigError(f"--branch {branch!r} is not a branch id", setting="--branch")
    where = f" AND branch_id = '{branch}'" if branch is not None else ""  # checked above
    statement = (
        "SELECT device_id, branch_id, ts, seq, status, engine_speed_rpm, load_pct,"  # noqa: S608 - our literals, a checked id
        " energy_generated_kwh, fuel_level_pct FROM dg_readings"
        f" WHERE ts >= TIMESTAMPTZ '{(lo - timedelta(days=1)).isoformat()}'"
        f" AND ts < TIMESTAMPTZ '{(hi + timedelta(days=1)).isoformat()}'{where}"
    )
    readings = _frame(session.sql(statement))
    runs = detect_runs(readings, sets, _data_until(store, session, hi + timedelta(days=1)))
    if runs.height:
        runs = runs.filter((pl.col("start") >= lo) & (pl.col("start") < hi))
    evaluated = evaluate(
        runs,
        {r["device_id"]: r for r in sets.to_dicts()},
        {r["branch_id"]: r for r in branches.to_dicts()},
        calendar_rows,
        rules.to_pylist(),
    )
    reference = [{"table": "platform/dg_rules", "version": rules_v}]
    if calendar_v is not None:
        reference.append({"table": "platform/grap_calendar", "version": calendar_v})
    return header(session, "dg-log", tenant, start, end) | {
        "branch": branch,
        "runs": evaluated,
        "sets": sets.select(
            "device_id",
            "branch_id",
            "rated_power_kw",
            "fuel_type",
            "emission_control",
            "certificate_ref",
        ).to_dicts(),
        "reference": reference,
        "inputs": [{"table": rel, "version": v} for rel, v in session.read_versions().items()],
    }


@dataclass(slots=True)
class LogAppend:
    appended: int = 0
    corrected: int = 0
    unchanged: int = 0
    head_seq: int | None = None


def append_log(doc: dict[str, Any], folder: Path, *, anchor_dir: Path | None = None) -> LogAppend:
    """Append the document's runs to the chained log: new runs once, changed ones as
    corrections; nothing is rewritten. Two runs of ``report dg-log`` for one tenant (two
    processes, or two threads) take turns: each reads what the log holds and appends under
    one exclusive lock, so neither appends a run the other has just logged."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor is closed
        return _append_log(doc, folder, anchor_dir)
    finally:
        os.close(lock)


def _append_log(doc: dict[str, Any], folder: Path, anchor_dir: Path | None) -> LogAppend:
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for record in read_records(folder) if folder.is_dir() else []:
        if record.get("event") in ("dg_run", "dg_run_correction"):
            latest[str(record["run_key"])] = (int(record["seq"]), record)
    result = LogAppend()
    log = AuditLog(folder, component="dg-log", fail_closed=True, anchor_dir=anchor_dir)
    try:
        for run in doc["runs"]:
            known = latest.get(run["run_key"])
            fields = {k: v for k, v in run.items()} | {"tenant": doc["tenant"]}
            if known is None:
                written = log.append("dg_run", fields)
                result.appended += 1
            else:
                seq, old = known
                changes = {
                    k: [old.get(k), run.get(k)] for k in _COMPARED if old.get(k) != run.get(k)
                }
                if not changes:
                    result.unchanged += 1
                    continue
                written = log.append(
                    "dg_run_correction", fields | {"corrects": seq, "changes": changes}
                )
                result.corrected += 1
            if written is not None:
                result.head_seq = written[0]
    finally:
        log.close()
    return result


def log_entries(folder: Path) -> list[dict[str, Any]]:
    """Every record of a chained DG log, in order."""
    return list(read_records(folder)) if folder.is_dir() else []
