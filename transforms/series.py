"""Deduplicate on (device_id, boot epoch, seq), then the checks that need a device's series.

Runs on all of one table's accepted rows in a batch (one tenant, one dataset), next to what
the table already holds for the same devices (``committed``: a pinned snapshot, so a replay
sees exactly what the first attempt saw):

- epochs: a device numbers its messages, and starts again when it restarts. In event-time
  order, a reading starts a new *epoch* when its ``boot`` differs from the reading before
  it (a device that sends its boot number: Sparkplug B's bdSeq, Tasmota's BootCount), or,
  when neither sends one, when its seq falls by more than ``SEQ_RESTART_FALL`` of the one
  before or starts again from 0 or 1 at a later time (``lake.series.epoch_starts``; ``energylake
  status`` counts gaps by the same epochs). A device that resumes its numbering from a
  saved value (a small fall) must send its boot number: without it, its readings overlap
  the ones before and are judged as resends;
- duplicates: copies of one (device_id, epoch, seq). The first arrival wins, a committed
  copy before any in the batch. A later copy with the same content (event time and values)
  is a redelivery: counted, never written. One with different content is quarantined as
  SEQ_CONFLICT, its detail naming both copies' event times and reading hashes. A reading
  after a restart is none of these: it is in another epoch, and kept;
- TIMESTAMP_OUT_OF_RANGE: an event time that contradicts the device's sequence (its seq
  lies outside the seq of both its time neighbours): a clock shifted by hours;
- IMPLAUSIBLE_DELTA: a counter that rose more than the device's rating allows in the time
  since the previous accepted reading (energy: rated kW x hours x 1.5; run hours: elapsed
  hours x 1.05) is quarantined, and the check repeats against the reading before it;
- flags: COUNTER_RESET (a counter fell by 10 % or more), LATE (event time behind the newest
  committed reading of the device), STUCK (the same non-zero value ``STUCK_RUN`` times in a
  row on a field that always varies).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl

from contracts import Contract
from lake.series import SAME_DEVICE_AS_PREVIOUS as _SAME_AS_PREVIOUS
from lake.series import SEQ_RESTART_FALL, epoch_starts

__all__ = [
    "COUNTER_ALLOWANCE",
    "RESET_DROP",
    "STUCK_FIELDS",
    "STUCK_RUN",
    "AgainstTable",
    "SeriesResult",
    "committed_columns",
    "content_columns",
    "dedupe_against",
    "dedupe_and_check",
    "reading_sha256",
]

RESET_DROP = 0.10
STUCK_RUN = 15
# Counter -> how its rise is bounded: ("rated", margin) uses the device's rated kW x hours;
# ("clock", margin) uses elapsed hours (run-hour meters cannot run faster than the clock).
COUNTER_ALLOWANCE: dict[str, tuple[str, float]] = {
    "energy_import_kwh": ("rated", 1.5),
    "energy_export_kwh": ("rated", 1.5),
    "energy_generated_kwh": ("rated", 1.5),
    "run_hours_h": ("clock", 1.05),
}
# Fields that vary in every healthy reading (a repeat is a stuck sensor), per dataset.
STUCK_FIELDS: dict[str, tuple[str, ...]] = {
    "meter_readings": ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v"),
    "dg_readings": ("coolant_temp_degc",),
    "solar_readings": ("inverter_temp_degc",),
}
_RESOLUTION = 0.01  # counters are sent with at most 3 decimals; allow rounding


@dataclass(slots=True)
class SeriesResult:
    rows: pl.DataFrame  # accepted, with flags; provenance columns still attached
    rejects: pl.DataFrame  # rows with reason_code (IMPLAUSIBLE_DELTA, TIMESTAMP_...), detail
    duplicates: pl.DataFrame  # branch_id, duplicates (count)
    late: pl.DataFrame  # branch_id, late (count)


# Not what a reading says: where it belongs, its key, and what the pipeline adds.
_NOT_CONTENT = frozenset(
    {
        "client_id",
        "branch_id",
        "device_id",
        "seq",
        "boot",
        "ts",
        "received_at",
        "event_month",
        "quality_flags",
    }
)


def content_columns(contract: Contract) -> list[str]:
    """What a reading says: its event time and values (a redelivery repeats them exactly)."""
    return ["ts", *[f.name for f in contract.fields if f.name not in _NOT_CONTENT]]


def committed_columns(contract: Contract) -> list[str]:
    """What deduplication and the series checks need from the committed table."""
    return ["branch_id", "device_id", "seq", "boot", *content_columns(contract)]


def reading_sha256(row: dict[str, Any]) -> str:
    """SHA-256 of a reading's content (``content_columns``), as sorted-key JSON."""
    return hashlib.sha256(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    ).hexdigest()


@dataclass(slots=True)
class _Deduped:
    winners: pl.DataFrame  # the batch rows that are first copies
    losers: pl.DataFrame  # _i of the others
    duplicates: pl.DataFrame  # branch_id, duplicates (count)
    conflicts: pl.DataFrame  # _i, detail, reason_code (SEQ_CONFLICT)


def _dedupe(
    contract: Contract, batch: pl.DataFrame, history: pl.DataFrame, merged: pl.DataFrame
) -> _Deduped:
    """Copies of one (device_id, epoch, seq): the first wins (``batch`` in arrival order,
    with ``_i``; ``history`` with ``_hrow``); the others are duplicates (same content) or
    conflicts. ``merged``: both, sorted by device and time, with ``_epoch``.

    Only readings whose (device_id, seq) comes more than once have their epochs compared
    and their content hashed."""
    nothing = _Deduped(
        batch, _LOSERS_EMPTY.clone(), _DUPLICATES_EMPTY.clone(), _CONFLICTS_EMPTY.clone()
    )
    copies = merged.filter(pl.struct("device_id", "seq").is_duplicated()).select(
        "_epoch", "seq", "_committed", "_i", "_hrow"
    )
    if copies.is_empty():
        return nothing
    copies = (
        # per copy group: a committed copy first, then the batch's in arrival order
        copies.sort(
            ["_epoch", "seq", "_committed", "_i"], descending=[False, False, True, False]
        ).with_columns(pl.struct("_epoch", "seq").is_first_distinct().alias("_first"))
    )
    if copies["_first"].all():  # the same seq in other epochs only: restarts
        return nothing
    # (``_i`` and ``_hrow`` are row numbers: rows are taken by position, not joined)
    content = content_columns(contract)
    digest = pl.struct(content).hash().alias("_h")
    old, new = copies.filter("_committed"), copies.filter(~pl.col("_committed"))
    copies = pl.concat(
        [
            old.with_columns(history[old["_hrow"]].select(digest)),
            new.with_columns(batch[new["_i"]].select(digest)),
        ]
    )
    winners = copies.filter("_first").select(
        "_epoch",
        "seq",
        pl.col("_h").alias("_wh"),
        pl.col("_hrow").alias("_whrow"),
        pl.col("_i").alias("_wi"),
    )
    later = copies.filter(~pl.col("_first") & ~pl.col("_committed")).join(
        winners, on=["_epoch", "seq"]
    )
    same = later.filter(pl.col("_h") == pl.col("_wh"))
    differ = later.filter(pl.col("_h") != pl.col("_wh"))
    duplicates = (
        batch[same["_i"]].group_by("branch_id").agg(pl.len().cast(pl.Int64).alias("duplicates"))
    )
    conflicts = _CONFLICTS_EMPTY.clone()
    if differ.height:
        conflicts = _conflicts(content, batch, history, differ)
    losers = later.select("_i")
    keep = np.ones(batch.height, dtype=bool)
    keep[losers["_i"].to_numpy()] = False
    return _Deduped(batch.filter(pl.Series(keep)), losers, duplicates, conflicts)


_LOSERS_EMPTY = pl.DataFrame(schema={"_i": pl.Int64})
_DUPLICATES_EMPTY = pl.DataFrame(schema={"branch_id": pl.String, "duplicates": pl.Int64})
_CONFLICTS_EMPTY = pl.DataFrame(
    schema={"_i": pl.Int64, "detail": pl.String, "reason_code": pl.String}
)


def _conflicts(
    content: list[str], batch: pl.DataFrame, history: pl.DataFrame, differ: pl.DataFrame
) -> pl.DataFrame:
    """SEQ_CONFLICT rows (``_i``, detail) for batch copies whose content differs from the
    first copy's: both copies' event times and reading hashes (a few rows: Python)."""
    mine = batch.join(differ.select("_i", "_whrow", "_wi"), on="_i").select(
        "_i", "_whrow", "_wi", "seq", *content
    )
    firsts_batch = batch.select(pl.col("_i").alias("_wi"), *content)
    firsts_hist = history.select(pl.col("_hrow").alias("_whrow"), *content)
    by_i = {r.pop("_wi"): r for r in firsts_batch.join(mine.select("_wi"), on="_wi").to_dicts()}
    by_h = {
        r.pop("_whrow"): r for r in firsts_hist.join(mine.select("_whrow"), on="_whrow").to_dicts()
    }
    details = []
    for row in mine.iter_rows(named=True):
        first = by_h[row["_whrow"]] if row["_whrow"] is not None else by_i[row["_wi"]]
        this = {c: row[c] for c in content}
        details.append(
            f"seq {row['seq']} was received before with other content: first copy ts "
            f"{first['ts'].isoformat()}, reading sha256 {reading_sha256(first)}; this copy ts "
            f"{this['ts'].isoformat()}, reading sha256 {reading_sha256(this)}"
        )
    return pl.DataFrame(
        {"_i": mine["_i"], "detail": details, "reason_code": ["SEQ_CONFLICT"] * mine.height},
        schema=_CONFLICTS_EMPTY.schema,
    )


def dedupe_and_check(
    contract: Contract,
    batch: pl.DataFrame,
    committed: pl.DataFrame,
) -> SeriesResult:
    # Arrival order: the first copy received wins.
    batch = batch.sort(["received_at", "segment", "offset_bytes", "_elem"]).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_i")
    )
    # a contract or a table from before the boot column: no device sent one
    if "boot" not in batch.columns:
        batch = batch.with_columns(pl.lit(None, pl.Int64).alias("boot"))
    if "boot" not in committed.columns:
        committed = committed.with_columns(pl.lit(None, pl.Int64).alias("boot"))
    arrived = batch
    cols = _series_columns(contract)
    history = committed.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_hrow"))
    # The committed history and the batch, in event-time order per device: sorted once,
    # for deduplication and the checks; rows are taken out with filters, which keep order.
    # A device that sends its boot number numbers each boot afresh: the clock check judges
    # a reading among its own boot's (without a boot number, a restart shows as a large
    # fall of seq, which the check allows for).
    boots = ~_SAME_AS_PREVIOUS.fill_null(False) | pl.col("boot").ne_missing(pl.col("boot").shift(1))
    merged = (
        pl.concat(
            [
                history.select(*cols, "_hrow", pl.lit(True).alias("_committed")),
                batch.select(*cols, "_i", "reg_rated_power_kw", pl.lit(False).alias("_committed")),
            ],
            how="diagonal_relaxed",
        )
        .sort(["device_id", "ts", "seq"])
        .with_columns(boots.cum_sum().alias("_boot_run"), epoch_starts().cum_sum().alias("_epoch"))
    )
    deduped = _dedupe(contract, batch, history, merged)
    if deduped.losers.height:
        merged = _without(merged, deduped.losers)
    batch = deduped.winners
    duplicates = deduped.duplicates
    history = history.select(cols).with_columns(pl.lit(True).alias("_committed"))
    batch = batch.with_columns(pl.lit(False).alias("_committed"))
    counters = [c for c in cols if c in COUNTER_ALLOWANCE]
    rejects: list[pl.DataFrame] = [deduped.conflicts] if deduped.conflicts.height else []
    live = batch
    clock = _clock_jumps(merged, "_boot_run", "_epoch")
    if clock.height:
        rejects.append(clock)
        live = live.join(clock.select("_i"), on="_i", how="anti")
        merged = _without(merged, clock)
    for _ in range(8):  # each pass removes a spike and re-checks its neighbour
        bad = _implausible(merged, counters)
        if bad.height == 0:
            break
        rejects.append(bad)
        live = live.join(bad.select("_i"), on="_i", how="anti")
        merged = _without(merged, bad)
    reject_frame = (
        pl.concat(rejects, how="diagonal_relaxed").join(arrived, on="_i", how="inner")
        if rejects
        else arrived.clear()
    )
    rows = _flag(contract, merged, live, counters)
    # LATE: behind the newest reading of the device seen before it, committed or earlier in
    # this batch's arrival order (rows are still in arrival order here).
    newest = history.group_by("device_id").agg(pl.col("ts").max().alias("_committed_newest"))
    rows = (
        rows.sort("_i")
        .join(newest, on="device_id", how="left", maintain_order="left")
        .with_columns(
            pl.max_horizontal(
                pl.col("_committed_newest"), pl.col("ts").cum_max().shift(1).over("device_id")
            ).alias("_newest")
        )
    )
    late_mask = pl.col("_newest").is_not_null() & (pl.col("ts") < pl.col("_newest"))
    rows = rows.with_columns(
        pl.when(late_mask)
        .then(pl.col("quality_flags").list.concat(pl.lit(["LATE"])))
        .otherwise(pl.col("quality_flags"))
        .alias("quality_flags")
    )
    late = rows.filter(late_mask).group_by("branch_id").agg(pl.len().cast(pl.Int64).alias("late"))
    rows = rows.drop("_newest", "_committed_newest", "_i", "_committed")
    return SeriesResult(
        rows=rows,
        rejects=reject_frame.drop("_committed", strict=False),
        duplicates=duplicates,
        late=late,
    )


@dataclass(slots=True)
class AgainstTable:
    """``rows`` checked against what a table holds (:func:`dedupe_against`)."""

    kept: pl.DataFrame  # rows the table does not hold
    duplicates: int  # rows the table holds with the same content: redeliveries
    conflicts: pl.DataFrame  # rows whose seq the table holds with other content, + detail


def dedupe_against(contract: Contract, rows: pl.DataFrame, committed: pl.DataFrame) -> AgainstTable:
    """Deduplicate ``rows`` (already deduplicated among themselves, e.g. a batch's held rows)
    against ``committed`` (``committed_columns`` of the table, for the same devices) with the
    batch's rules: copies of one (device_id, epoch, seq) are a redelivery when their content
    is the same, a SEQ_CONFLICT when it differs (``conflicts``: the rows with ``detail`` and
    ``reason_code``); the table's copy wins, as a committed copy does in a batch."""
    none = pl.DataFrame(schema={**rows.schema, "detail": pl.String, "reason_code": pl.String})
    if rows.is_empty() or committed.is_empty():
        return AgainstTable(rows, 0, none)
    batch = rows.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_i"))
    if "boot" not in batch.columns:
        batch = batch.with_columns(pl.lit(None, pl.Int64).alias("boot"))
    if "boot" not in committed.columns:
        committed = committed.with_columns(pl.lit(None, pl.Int64).alias("boot"))
    history = committed.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_hrow"))
    key = ["device_id", "seq", "boot", "ts"]
    merged = (
        pl.concat(
            [
                history.select(*key, "_hrow", pl.lit(True).alias("_committed")),
                batch.select(*key, "_i", pl.lit(False).alias("_committed")),
            ],
            how="diagonal_relaxed",
        )
        .sort(["device_id", "ts", "seq"])
        .with_columns(epoch_starts().cum_sum().alias("_epoch"))
    )
    found = _dedupe(contract, batch, history, merged)
    duplicates = int(found.duplicates["duplicates"].sum()) if found.duplicates.height else 0
    conflicts = batch.join(found.conflicts, on="_i").drop("_i")
    return AgainstTable(found.winners.drop("_i"), duplicates, conflicts)


def _series_columns(contract: Contract) -> list[str]:
    """What the series checks look at."""
    counters = [f.name for f in contract.fields if f.counter and f.name in COUNTER_ALLOWANCE]
    stuck = list(STUCK_FIELDS.get(contract.dataset, ()))
    return ["branch_id", "device_id", "seq", "boot", "ts", *counters, *stuck]


def _without(merged: pl.DataFrame, rejected: pl.DataFrame) -> pl.DataFrame:
    """``merged`` less the batch rows in ``rejected`` (history rows have no ``_i``)."""
    out = pl.col("_i").is_in(rejected["_i"].implode()).fill_null(False)
    return merged.filter(~out)


# In a frame sorted by device: whether a row's neighbour is the same device's reading. A
# shift guarded by these is ``shift().over("device_id")`` without grouping the devices.
_SAME_AS_NEXT = pl.col("device_id") == pl.col("device_id").shift(-1)


def _previous(column: str | pl.Expr) -> pl.Expr:
    """The device's previous reading's value (rows sorted by device, then time)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return pl.when(_SAME_AS_PREVIOUS).then(expr.shift(1))


def _clock_jumps(
    merged: pl.DataFrame, series: str = "device_id", epochs: str = "device_id"
) -> pl.DataFrame:
    """Batch rows whose event time contradicts the device's own sequence numbers.

    A device numbers its messages; in event-time order its ``seq`` rises. A reading with a
    wrong clock (a timestamp shifted by hours: inside the reception window when a day is
    replayed, impossible for its seq) would sort among readings hours away, and a counter
    would seem to reset. Two passes, in event-time order per device:

    1. a reading whose seq lies outside the seq of both its neighbours while they are in
       order (or, first in the series, ahead of the next one by less than
       ``SEQ_RESTART_FALL``) is out of line;
    2. without those, a reading whose seq is behind the highest seq before it by less than
       ``SEQ_RESTART_FALL`` of it was numbered before a reading it claims to follow.

    A device restart (seq starts again low, then rises) is not flagged: its fall is large.
    ``series`` names the column whose runs are one numbering as far as the device says (a
    device's readings, or a device's readings of one boot when it sends its boot number),
    ``epochs`` the runs after every restart (``epoch_starts``): the highest seq before a
    reading is looked for in its epoch.
    """
    seq = pl.col("seq")
    same_prev = pl.col(series) == pl.col(series).shift(1)
    prev = pl.when(same_prev).then(seq.shift(1))
    nxt = pl.when(pl.col(series) == pl.col(series).shift(-1)).then(seq.shift(-1))
    between = prev.is_not_null() & nxt.is_not_null() & (prev < nxt) & ((seq < prev) | (seq > nxt))
    first = prev.is_null() & (seq > nxt) & (nxt >= seq * (1 - SEQ_RESTART_FALL))
    merged = merged.with_columns(
        (between | first).fill_null(False).alias("_line"),
        prev.alias("_prev"),
        nxt.alias("_next"),
    )
    rest = merged.filter(~pl.col("_line"))
    prior = seq.cum_max().shift(1).over(epochs)
    rest = rest.with_columns(prior.alias("_prior")).with_columns(
        ((seq < pl.col("_prior")) & (seq >= pl.col("_prior") * (1 - SEQ_RESTART_FALL)))
        .fill_null(False)
        .alias("_behind")
    )
    line = _failed_rows(
        merged,
        pl.col("_line"),
        pl.format(
            "ts {} puts seq {} after seq {} and before seq {}: the device clock is wrong",
            pl.col("ts").cast(pl.String),
            seq,
            pl.col("_prev").cast(pl.String).fill_null("(none)"),
            pl.col("_next").cast(pl.String).fill_null("(none)"),
        ),
    )
    behind = _failed_rows(
        rest,
        pl.col("_behind"),
        pl.format(
            "ts {} puts seq {} after seq {}, which the device numbered later: "
            "the device clock is wrong",
            pl.col("ts").cast(pl.String),
            seq,
            pl.col("_prior"),
        ),
    )
    return pl.concat([line, behind]).with_columns(
        pl.lit("TIMESTAMP_OUT_OF_RANGE").alias("reason_code")
    )


def _failed_rows(frame: pl.DataFrame, failed: pl.Expr, detail: pl.Expr) -> pl.DataFrame:
    """``_i`` and ``detail`` of the batch rows (not the committed history) where ``failed``.

    Re-chunked before the detail is formatted: polars 2.1's ``format`` panics on columns
    whose chunks do not line up, as a filter of a concatenated frame leaves them
    (tests/transforms/test_series_clock.py hit it)."""
    return (
        frame.filter(failed & ~pl.col("_committed"))
        .rechunk()
        .select(pl.col("_i").cast(pl.Int64), detail.alias("detail"))
    )


def _implausible(merged: pl.DataFrame, counters: list[str]) -> pl.DataFrame:
    """Batch rows whose counter rose more than allowed since the device's previous reading.

    The rises are computed for every row; the details are written for the few that fail."""
    if not counters:
        return pl.DataFrame(schema={"_i": pl.Int64, "detail": pl.String, "reason_code": pl.String})
    dt_h = (pl.col("ts") - _previous("ts")).dt.total_microseconds() / 3.6e9
    rated = pl.col("reg_rated_power_kw").forward_fill().backward_fill().over("device_id")
    scored = merged.with_columns(
        dt_h.alias("_dt_h"),
        rated.alias("_rated"),
        *[(pl.col(name) - _previous(name)).alias(f"_rise_{name}") for name in counters],
    )
    allowed: dict[str, pl.Expr] = {}
    for name in counters:
        kind, margin = COUNTER_ALLOWANCE[name]
        hours = pl.col("_dt_h")
        allowed[name] = (
            pl.col("_rated") * hours * margin + _RESOLUTION
            if kind == "rated"
            else hours * margin + _RESOLUTION
        )
    too_much = pl.any_horizontal([pl.col(f"_rise_{n}") > allowed[n] for n in counters])
    reasons = [
        pl.when(pl.col(f"_rise_{name}") > allowed[name]).then(
            pl.format(
                "{} rose by {} in {} h; at most {} is possible",
                pl.lit(name),
                pl.col(f"_rise_{name}").round(3),
                pl.col("_dt_h").round(4),
                allowed[name].round(3),
            )
        )
        for name in counters
    ]
    return _failed_rows(
        scored,
        too_much.fill_null(False),
        pl.concat_str(reasons, separator="; ", ignore_nulls=True),
    ).with_columns(pl.lit("IMPLAUSIBLE_DELTA").alias("reason_code"))


def _flag(
    contract: Contract, merged: pl.DataFrame, live: pl.DataFrame, counters: list[str]
) -> pl.DataFrame:
    """``live`` with COUNTER_RESET and STUCK added to the flags of the rows they apply to
    (``merged``: history and live, sorted by device and time)."""
    flags: list[pl.Expr] = []
    for name in counters:
        prev = _previous(name)
        flags.append(
            pl.when((prev > 0) & (pl.col(name) < prev * (1 - RESET_DROP))).then(
                pl.lit("COUNTER_RESET")
            )
        )
    for name in STUCK_FIELDS.get(contract.dataset, ()):
        # A run is a stretch of one device's readings with the same value; a new device
        # starts a new run (the frame is sorted by device).
        starts = ~_SAME_AS_PREVIOUS.fill_null(False) | (
            pl.col(name) != pl.col(name).shift(1)
        ).fill_null(True)
        merged = merged.with_columns(starts.cum_sum().alias(f"_run_{name}"))
        run_len = pl.len().over(f"_run_{name}")
        flags.append(pl.when((run_len >= STUCK_RUN) & (pl.col(name) != 0)).then(pl.lit("STUCK")))
    if not flags:
        return live
    flagged = merged.with_columns(
        pl.any_horizontal([f.is_not_null() for f in flags]).alias("_any_flag"),
        *[f.alias(f"_flag_{k}") for k, f in enumerate(flags)],
    ).filter(~pl.col("_committed") & pl.col("_any_flag"))
    new = flagged.select(
        pl.col("_i").cast(pl.Int64),
        pl.concat_list([pl.col(f"_flag_{k}").cast(pl.String) for k in range(len(flags))])
        .list.drop_nulls()
        .list.unique(maintain_order=True)
        .alias("_new_flags"),
    )
    return (
        live.join(new, on="_i", how="left")
        .with_columns(
            pl.when(pl.col("_new_flags").is_not_null())
            .then(pl.col("quality_flags").list.concat(pl.col("_new_flags")))
            .otherwise(pl.col("quality_flags"))
            .alias("quality_flags")
        )
        .drop("_new_flags")
    )
