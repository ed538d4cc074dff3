"""The quality gate's rules, read from a contract, and the per-device metrics they judge.

Two kinds of rule come out of a contract (:func:`rule_specs`):

- **row rules**, checked on the batch's rows: every ``required`` property is not null, every
  numeric property lies in its ``logicalTypeOptions`` minimum/maximum, every property with
  allowed values (``enum``) holds one of them, and the ODCS library metrics
  (``duplicateValues`` -> uniqueness of ``(device_id, seq)``; ``rowCount``). Schema checks
  carry severity ``error``: a row that breaks its contract this late is an enforcement bug.
- **batch rules** (``engine: energylake`` custom rules), checked on a small derived frame of
  one row per device (:func:`device_metrics`): completeness against the device's cadence over
  the batch's time span, freshness of the newest reading, the share of zero readings while a
  condition holds (branch open on supply, night), and counters that never fall unflagged.

Each rule becomes one standard Great Expectations expectation (``transforms/quality.py``
builds and runs the suites), so every result is a GE result. This module is polars only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import polars as pl

from contracts import Contract, EnergylakeError, QualityRule
from contracts.errors import EXIT_CONFIG

__all__ = [
    "MIN_CONDITION_ROWS",
    "MIN_EXPECTED_READINGS",
    "MISSING_COLUMN",
    "NIGHT_LOCAL_HOURS",
    "RANGE_COLUMN",
    "RANGE_RULE",
    "REQUIRED_RULE",
    "SUPPLY_MIN_HZ",
    "QualityRuleError",
    "RuleSpec",
    "Window",
    "batch_window",
    "device_metrics",
    "failing_devices",
    "missing_required",
    "out_of_range",
    "range_fields",
    "required_columns",
    "rule_specs",
]

MIN_EXPECTED_READINGS = 10
"""Completeness is judged only when the window promises at least this many readings of a
device; a micro-batch shorter than that says nothing about a device's cadence."""
MIN_CONDITION_ROWS = 10
"""A zero-share rule is judged for a device only with at least this many rows in its condition."""
SUPPLY_MIN_HZ = 45.0
"""On supply: the reading's frequency is at least this (an outage reads 0 Hz)."""
NIGHT_LOCAL_HOURS = (20, 5)
"""Night, local time: from 20:00 to 05:00 (dark all year everywhere in India)."""
COUNTER_RESOLUTION = 0.01
"""A counter falling by less than this is rounding, not a fall (counters carry 3 decimals)."""

RowOrBatch = Literal["row", "batch"]


class QualityRuleError(EnergylakeError):
    """A contract's quality rule the gate cannot run (an unknown metric or rule kind):
    ``contract`` and ``rule`` name it; the contract is to fix (exit code 2)."""

    exit_code: ClassVar[int] = EXIT_CONFIG

    def __init__(
        self, problem: str, *, contract: str | None = None, rule: str | None = None
    ) -> None:
        self.contract = contract
        self.rule = rule
        where = f"{contract} rule {rule}: " if contract and rule else ""
        super().__init__(f"{where}{problem}; fix the rule in the contract (docs/QUALITY.md)")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as the gate runs it: a GE expectation type and its arguments."""

    rule: str
    kind: RowOrBatch
    expectation: str  # GE expectation class name, e.g. ExpectColumnValuesToBeBetween
    kwargs: dict[str, Any]
    severity: Literal["error", "warning"]
    description: str
    column: str | None = None
    expected: str = ""  # the bound, as text (for lineage and the results table)
    source: dict[str, Any] = field(default_factory=dict)  # the contract rule's implementation

    @property
    def blocking(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True, slots=True)
class Window:
    """The batch's time span, over which completeness is counted, and the publish time."""

    start: datetime
    end: datetime
    now: datetime

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())


# ------------------------------------------------------------------------- specs


REQUIRED_RULE = "required:not_null"
MISSING_COLUMN = "_missing_required"
"""Derived row column: how many of the row's required fields are null (one GE expectation
checks it for every required field at once; per-column expectations cost ~4 ms each)."""


RANGE_RULE = "ranges:within_contract"
RANGE_COLUMN = "_out_of_range"
"""Derived row column: how many of the row's fields lie outside their contract range (one
GE expectation for every bounded field: GE's bookkeeping costs ~4 ms per expectation,
whatever the rows, and was most of the gate's time with one expectation per field)."""


def range_fields(contract: Contract, columns: set[str]) -> list[Any]:
    """The fields with a contract range that are present (what RANGE_COLUMN counts)."""
    return [
        f
        for f in contract.fields
        if f.name in columns and (f.minimum is not None or f.maximum is not None)
    ]


def out_of_range(contract: Contract, frame: pl.DataFrame) -> pl.Expr:
    """RANGE_COLUMN: the number of fields of each row outside their contract range."""
    checks = []
    for f in range_fields(contract, set(frame.columns)):
        c = pl.col(f.name)
        outside = pl.lit(False)
        if f.minimum is not None:
            outside = outside | (c < f.minimum)
        if f.maximum is not None:
            outside = outside | (c > f.maximum)
        checks.append(outside.fill_null(False))
    if not checks:
        return pl.lit(0, pl.Int64).alias(RANGE_COLUMN)
    return pl.sum_horizontal(checks).cast(pl.Int64).alias(RANGE_COLUMN)


def _row_specs(contract: Contract, columns: set[str]) -> list[RuleSpec]:
    specs: list[RuleSpec] = []
    required = required_columns(contract, columns)
    if required:
        specs.append(
            RuleSpec(
                rule=REQUIRED_RULE,
                kind="row",
                expectation="ExpectColumnValuesToBeBetween",
                kwargs={"column": MISSING_COLUMN, "min_value": 0, "max_value": 0},
                severity="error",
                description=f"every required field of {contract.ref} is present: "
                + ", ".join(required),
                column=",".join(required),
                expected="no nulls in required fields",
            )
        )
    bounded = range_fields(contract, columns)
    if bounded:
        specs.append(
            RuleSpec(
                rule=RANGE_RULE,
                kind="row",
                expectation="ExpectColumnValuesToBeBetween",
                kwargs={"column": RANGE_COLUMN, "min_value": 0, "max_value": 0},
                severity="error",
                description="every field within its physical range: "
                + "; ".join(
                    f"{f.name} [{f.minimum}, {f.maximum}]" + (f" {f.unit}" if f.unit else "")
                    for f in bounded
                ),
                column=",".join(f.name for f in bounded),
                expected="no field outside its contract range",
            )
        )
    for f in contract.fields:
        if f.name not in columns:
            continue
        if f.allowed_values:
            specs.append(
                RuleSpec(
                    rule=f"{f.name}:allowed_values",
                    kind="row",
                    expectation="ExpectColumnValuesToBeInSet",
                    kwargs={"column": f.name, "value_set": list(f.allowed_values)},
                    severity="error",
                    description=f"{f.name} is one of the contract's allowed values",
                    column=f.name,
                    expected=",".join(str(v) for v in f.allowed_values),
                )
            )
    return specs


def _library_spec(contract: Contract, rule: QualityRule) -> RuleSpec:
    metric = rule.metric
    if metric == "duplicateValues":
        props = list(rule.arguments.get("properties") or ([rule.field] if rule.field else []))
        if not props:
            raise QualityRuleError(
                "duplicateValues names no column", contract=contract.ref, rule=rule.name
            )
        if len(props) == 1:
            expectation, kwargs = "ExpectColumnValuesToBeUnique", {"column": props[0]}
        else:
            expectation, kwargs = "ExpectCompoundColumnsToBeUnique", {"column_list": props}
        return RuleSpec(
            rule=rule.name,
            kind="row",
            expectation=expectation,
            kwargs=kwargs,
            severity=rule.severity,
            description=rule.description,
            column=",".join(props),
            expected="0 duplicates",
        )
    if metric == "rowCount":
        low = rule.operator.get("mustBeGreaterOrEqualTo", rule.operator.get("mustBeGreaterThan"))
        high = rule.operator.get("mustBeLessOrEqualTo", rule.operator.get("mustBeLessThan"))
        return RuleSpec(
            rule=rule.name,
            kind="row",
            expectation="ExpectTableRowCountToBeBetween",
            kwargs={"min_value": low, "max_value": high},
            severity=rule.severity,
            description=rule.description,
            expected=f"[{low}, {high}]",
        )
    raise QualityRuleError(
        f"the gate cannot run library metric {metric!r} (supported: duplicateValues, rowCount)",
        contract=contract.ref,
        rule=rule.name,
    )


def _share_bounds(impl: dict[str, Any]) -> tuple[float | None, float | None]:
    low, high = impl.get("minimumShare"), impl.get("maximumShare")
    return (None if low is None else float(low)), (None if high is None else float(high))


def _custom_spec(contract: Contract, rule: QualityRule) -> RuleSpec:
    impl = rule.implementation
    kind = impl.get("rule")
    common: dict[str, Any] = {
        "rule": rule.name,
        "kind": "batch",
        "severity": rule.severity,
        "description": rule.description,
        "source": dict(impl),
    }
    if kind == "completeness":
        share = float(impl["minimumShare"])
        return RuleSpec(
            expectation="ExpectColumnValuesToBeBetween",
            kwargs={"column": "completeness_share", "min_value": share},
            column=str(impl.get("per", "device_id")),
            expected=f">= {share} of the cadence's readings per device",
            **common,
        )
    if kind == "freshness":
        age = float(impl["maxAgeSeconds"])
        return RuleSpec(
            expectation="ExpectColumnMinToBeBetween",
            kwargs={"column": "age_s", "max_value": age},
            column=str(impl["column"]),
            expected=f"newest reading <= {age:g} s old",
            **common,
        )
    if kind == "zero_share":
        low, high = _share_bounds(impl)
        return RuleSpec(
            expectation="ExpectColumnValuesToBeBetween",
            kwargs={"column": f"zero_share__{rule.name}", "min_value": low, "max_value": high},
            column=str(impl["column"]),
            expected=f"zero share while {impl['when']} in [{low}, {high}] per device",
            **common,
        )
    if kind == "counter_monotonic":
        if rule.field is None:
            raise QualityRuleError(
                "counter_monotonic needs a field", contract=contract.ref, rule=rule.name
            )
        return RuleSpec(
            expectation="ExpectColumnValuesToBeBetween",
            kwargs={"column": f"drops__{rule.field}", "max_value": 0},
            column=rule.field,
            expected="no unflagged fall per device",
            **common,
        )
    raise QualityRuleError(
        f"unknown energylake rule {kind!r}", contract=contract.ref, rule=rule.name
    )


def required_columns(contract: Contract, columns: set[str]) -> list[str]:
    """The required fields present in a frame (what MISSING_COLUMN counts): those no device
    profile may omit. What a profile omits is checked per row, against the row's device and
    message, when the contract is enforced (MISSING_FIELD); the table holds it nullable."""
    omit = contract.may_omit
    return [
        f.name for f in contract.fields if f.required and f.name in columns and f.name not in omit
    ]


def missing_required(contract: Contract, frame: pl.DataFrame) -> pl.Expr:
    """MISSING_COLUMN: the number of null required fields in each row."""
    names = required_columns(contract, set(frame.columns))
    return (
        pl.sum_horizontal([pl.col(n).is_null() for n in names]).cast(pl.Int64).alias(MISSING_COLUMN)
    )


def rule_specs(contract: Contract, columns: set[str] | None = None) -> list[RuleSpec]:
    """Every rule the gate runs for ``contract`` (row rules limited to ``columns`` if given)."""
    names = columns if columns is not None else set(contract.field_names)
    specs = _row_specs(contract, names)
    for rule in contract.quality:
        if rule.engine == "energylake":
            specs.append(_custom_spec(contract, rule))
        elif rule.metric is not None:
            specs.append(_library_spec(contract, rule))
        # rules of other engines are carried by the contract, not run here
    seen: set[str] = set()
    for spec in specs:
        if spec.rule in seen:
            raise QualityRuleError(
                "two gate rules have this name", contract=contract.ref, rule=spec.rule
            )
        seen.add(spec.rule)
    return specs


def failing_devices(spec: RuleSpec, rows: pl.DataFrame, metrics: pl.DataFrame) -> set[str] | None:
    """The devices whose rows break ``spec``: the smallest unit the gate can hold for it.

    ``rows``: the batch's rows with the derived count columns (MISSING_COLUMN, RANGE_COLUMN);
    ``metrics``: :func:`device_metrics`. Row rules are about the rows that break them (their
    devices); per-device batch rules about the devices whose metric is out of bounds (a
    silent device has no rows to hold). None when the rule is about the whole table (row
    count, freshness of the newest reading, a tolerance such as GE's ``mostly``): then the
    table is held. The same semantics as the GE expectation: nulls are not judged.
    """
    kw = spec.kwargs
    if kw.get("mostly") is not None:
        return None
    frame = rows if spec.kind == "row" else metrics
    if spec.expectation == "ExpectColumnValuesToBeBetween":
        c = pl.col(str(kw["column"]))
        bad = pl.lit(False)
        if kw.get("min_value") is not None:
            bad = bad | (c < kw["min_value"])
        if kw.get("max_value") is not None:
            bad = bad | (c > kw["max_value"])
    elif spec.expectation == "ExpectColumnValuesToBeInSet":
        c = pl.col(str(kw["column"]))
        bad = c.is_not_null() & ~c.is_in(list(kw["value_set"]))
    elif spec.expectation == "ExpectColumnValuesToBeUnique":
        bad = pl.col(str(kw["column"])).is_duplicated()
    elif spec.expectation == "ExpectCompoundColumnsToBeUnique":
        bad = pl.struct(list(kw["column_list"])).is_duplicated()
    else:
        return None
    found = frame.filter(bad.fill_null(False)).get_column("device_id").drop_nulls()
    return set(found.to_list())


# ------------------------------------------------------------------------- metrics


def batch_window(frame: pl.DataFrame, now: datetime) -> Window:
    """The batch's span from its on-time rows (rows flagged LATE do not stretch it)."""
    on_time = frame
    if "quality_flags" in frame.columns:
        on_time = frame.filter(~pl.col("quality_flags").list.contains("LATE").fill_null(False))
    if on_time.height == 0:
        on_time = frame
    if on_time.height == 0:
        return Window(start=now, end=now, now=now)
    start: datetime = on_time["ts"].min()  # type: ignore[assignment]
    end: datetime = on_time["ts"].max()  # type: ignore[assignment]
    return Window(start=start, end=end, now=now)


def _closed_day(local: pl.Expr, closed_days: pl.Expr) -> pl.Expr:
    """Whether the local date is one of the branch's closed days (weekday names, nSat)."""
    weekday = local.dt.to_string("%a")  # Mon .. Sun
    nth_sat = pl.format("{}Sat", ((local.dt.day() - 1) // 7 + 1).cast(pl.String))
    tokens = closed_days.fill_null("").str.split(",")
    is_sat = local.dt.weekday() == 6
    return tokens.list.contains(weekday) | (is_sat & tokens.list.contains(nth_sat))


def _minutes(hhmm: pl.Expr) -> pl.Expr:
    parts = hhmm.str.split(":")
    return parts.list.get(0).cast(pl.Int32) * 60 + parts.list.get(1).cast(pl.Int32)


def _local_parts(rows: pl.DataFrame) -> pl.DataFrame:
    """Add ``_local`` (naive local time of ts) per the device's timezone."""
    out = []
    for (tz,), part in rows.group_by("_tz"):
        out.append(
            part.with_columns(
                pl.col("ts")
                .dt.convert_time_zone(str(tz))
                .dt.replace_time_zone(None)
                .alias("_local")
            )
        )
    return (
        pl.concat(out)
        if out
        else rows.with_columns(pl.lit(None, pl.Datetime("us")).alias("_local"))
    )


def _condition(when: str, rows: pl.DataFrame, branches: pl.DataFrame | None) -> pl.Expr:
    on_supply = (
        pl.col("frequency_hz") >= SUPPLY_MIN_HZ if "frequency_hz" in rows.columns else pl.lit(True)
    )
    if when == "always":
        return pl.lit(True)
    if when == "night":
        hour = pl.col("_local").dt.hour()
        start, end = NIGHT_LOCAL_HOURS
        return (hour >= start) | (hour < end)
    if when == "branch_open_on_supply":
        if branches is None or "_opens" not in rows.columns:
            return pl.lit(None, pl.Boolean)
        minute = pl.col("_local").dt.hour().cast(pl.Int32) * 60 + pl.col("_local").dt.minute()
        open_now = (
            ~_closed_day(pl.col("_local"), pl.col("_closed_days"))
            & (minute >= pl.col("_opens"))
            & (minute < pl.col("_closes"))
        )
        return open_now & on_supply
    raise QualityRuleError(f"unknown zero_share condition {when!r}")


def device_metrics(
    contract: Contract,
    frame: pl.DataFrame,
    devices: pl.DataFrame,
    window: Window,
    *,
    tenant: str,
    branches: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per device (seen in the batch, or registered and active for the tenant and the
    contract's device kind): what the batch rules judge.

    Columns: device_id, branch_id, expected, received, completeness_share (null when the
    window promises fewer than MIN_EXPECTED_READINGS), age_s (seconds from the device's
    newest reading to ``window.now``), ``zero_share__<rule>`` per zero_share rule (null below
    MIN_CONDITION_ROWS rows in the condition), ``drops__<field>`` per counter_monotonic rule.
    """
    kind = contract.device_kind
    registered = devices.filter(pl.col("client_id") == tenant)
    if kind is not None:
        registered = registered.filter(pl.col("kind") == kind)
    active = registered.filter(pl.col("status") == "active").select("device_id")
    seen = frame.select("device_id").unique()
    ids = pl.concat([seen, active]).unique()
    info = devices.select("device_id", "branch_id", "cadence_s", pl.col("timezone").alias("_tz"))
    out = ids.join(info, on="device_id", how="left").with_columns(
        pl.col("_tz").fill_null("Asia/Kolkata")
    )
    if "branch_id" in frame.columns:  # a device missing from the registry: use its rows
        seen_branch = frame.group_by("device_id").agg(pl.col("branch_id").first().alias("_b"))
        out = (
            out.join(seen_branch, on="device_id", how="left")
            .with_columns(pl.coalesce("branch_id", "_b").alias("branch_id"))
            .drop("_b")
        )
    in_window = frame.filter(pl.col("ts").is_between(window.start, window.end))
    counts = in_window.group_by("device_id").agg(
        pl.col("seq").n_unique().cast(pl.Int64).alias("received")
    )
    newest = frame.group_by("device_id").agg(pl.col("ts").max().alias("_newest"))
    expected = (pl.lit(window.seconds) / pl.col("cadence_s")).floor() + 1
    out = (
        out.join(counts, on="device_id", how="left")
        .join(newest, on="device_id", how="left")
        .with_columns(
            pl.col("received").fill_null(0),
            pl.when(expected >= MIN_EXPECTED_READINGS).then(expected).alias("expected"),
            ((pl.lit(window.now) - pl.col("_newest")).dt.total_microseconds() / 1e6).alias("age_s"),
        )
        .with_columns((pl.col("received") / pl.col("expected")).alias("completeness_share"))
    )
    out = _zero_shares(contract, frame, devices, out, branches)
    out = _counter_drops(contract, frame, out)
    return out.drop("_newest", "_tz", "cadence_s").sort("device_id")


def _zero_shares(
    contract: Contract,
    frame: pl.DataFrame,
    devices: pl.DataFrame,
    out: pl.DataFrame,
    branches: pl.DataFrame | None,
) -> pl.DataFrame:
    rules = [
        r
        for r in contract.quality
        if r.engine == "energylake" and r.implementation.get("rule") == "zero_share"
    ]
    if not rules:
        return out
    cols = {"device_id", "ts", "frequency_hz", *(str(r.implementation["column"]) for r in rules)}
    rows = (
        frame.select([c for c in frame.columns if c in cols])
        .join(
            devices.select("device_id", "branch_id", pl.col("timezone").alias("_tz")),
            on="device_id",
            how="left",
        )
        .with_columns(pl.col("_tz").fill_null("Asia/Kolkata"))
    )
    rows = _local_parts(rows)
    if branches is not None and branches.height:
        hours = branches.select(
            "branch_id",
            _minutes(pl.col("opens_local")).alias("_opens"),
            _minutes(pl.col("closes_local")).alias("_closes"),
            pl.col("closed_days").alias("_closed_days"),
        ).unique("branch_id")
        rows = rows.join(hours, on="branch_id", how="left")
    marks = []
    aggs = []
    for i, rule in enumerate(rules):
        impl = rule.implementation
        cond = _condition(str(impl["when"]), rows, branches).fill_null(False)
        zero = (pl.col(str(impl["column"])) == 0).fill_null(False)
        marks += [cond.alias(f"_c{i}"), (cond & zero).alias(f"_z{i}")]
        n_cond = pl.col(f"_c{i}").sum()
        aggs.append(
            pl.when(n_cond >= MIN_CONDITION_ROWS)
            .then(pl.col(f"_z{i}").sum() / n_cond)
            .alias(f"zero_share__{rule.name}")
        )
    shares = rows.with_columns(marks).group_by("device_id").agg(aggs)
    return out.join(shares, on="device_id", how="left")


def _counter_drops(contract: Contract, frame: pl.DataFrame, out: pl.DataFrame) -> pl.DataFrame:
    fields = [
        r.field
        for r in contract.quality
        if r.engine == "energylake"
        and r.implementation.get("rule") == "counter_monotonic"
        and r.field
    ]
    if not fields:
        return out
    flags = (
        pl.col("quality_flags").list.contains("COUNTER_RESET").fill_null(False)
        if "quality_flags" in frame.columns
        else pl.lit(False)
    )
    falls = [
        (
            (pl.col(name) < pl.col(name).shift(1).over("device_id") - COUNTER_RESOLUTION).fill_null(
                False
            )
            & ~flags
        ).alias(f"drops__{name}")
        for name in fields
    ]
    ordered = frame.sort("device_id", "ts", "seq").select("device_id", *falls)
    drops = ordered.group_by("device_id").agg(
        [pl.col(f"drops__{n}").sum().cast(pl.Int64) for n in fields]
    )
    filled = [pl.col(f"drops__{n}").fill_null(0) for n in fields]
    return out.join(drops, on="device_id", how="left").with_columns(filled)
