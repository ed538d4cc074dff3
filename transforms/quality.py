"""The quality gate: Great Expectations suites generated from the contracts, run per batch.

For one (tenant, dataset) frame of a batch -- the rows after enforcement and dedupe --
:func:`run_gate` runs two GE validations:

1. the **rows** suite on the frame itself (not-null, ranges, allowed values, uniqueness of
   ``(device_id, seq)``: ``transforms/quality_rules.py`` reads them from the contract);
2. the **batch** suite on a derived frame of one row per device (completeness against the
   cadence, freshness, zero shares, counter falls), computed with polars.

Every rule becomes one :class:`RuleResult` (rule, contract, severity, success, observed,
unexpected count and percent, a short reason). The batch **passes** when no blocking rule
(ODCS ``severity: error``) failed; failed warnings are recorded only. The GE context and
the suites are built once per process and reused (GE's start-up costs about two seconds).

    result = run_gate(contract, frame, devices, GateBatch("main", 12), tenant="kaveri-bank")
    if not result.passed: ...hold the batch...
    facet = result.assertions()  # OpenLineage DataQualityAssertions entries
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts import Contract
from transforms.gx_internals import skip_batch_fingerprint
from transforms.quality_rules import (
    RANGE_RULE,
    REQUIRED_RULE,
    QualityRuleError,
    RuleSpec,
    Window,
    batch_window,
    device_metrics,
    failing_devices,
    missing_required,
    out_of_range,
    range_fields,
    rule_specs,
)

__all__ = [
    "GateBatch",
    "GateResult",
    "QualityRuleError",
    "RuleResult",
    "build_data_docs",
    "run_gate",
    "suites_for",
]

_UNEXPECTED_SHOWN = 5  # devices or values named in a reason
_RESULTS_KEPT = 500  # validation results kept in memory for Data Docs (oldest dropped)


@dataclass(frozen=True, slots=True)
class GateBatch:
    """Which batch is checked, and (optionally) its window and publish time.

    Without ``window_start``/``window_end`` the window is the span of the frame's on-time
    rows; ``now`` (the publish time freshness is measured against) defaults to the clock.
    """

    pipeline_id: str
    batch_no: int
    now: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def batch_id(self) -> str:
        return f"{self.pipeline_id}:{self.batch_no}"


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule's outcome on one batch of one dataset (one GE expectation result)."""

    rule: str
    kind: str  # row | batch
    expectation: str
    column: str | None
    severity: str  # error (blocking) | warning
    success: bool
    observed: str
    unexpected_count: int | None
    unexpected_pct: float | None
    reason: str
    expected: str
    description: str

    @property
    def blocking(self) -> bool:
        return self.severity == "error"


@dataclass(slots=True)
class GateResult:
    """Every rule's result for one (tenant, dataset) frame of a batch."""

    batch: GateBatch
    tenant: str
    dataset: str
    contract_id: str
    contract_version: str
    rows: int
    results: list[RuleResult]
    duration_s: float
    window: Window
    validation_ids: list[str] = field(default_factory=list)
    held_devices: list[str] | None = None
    """When a blocking rule failed: the devices whose rows are held (the rest of the table
    is published); None when a failed rule is about the whole table (it is held)."""

    @property
    def passed(self) -> bool:
        """True when no blocking rule failed (failed warnings do not hold a batch)."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[RuleResult]:
        return [r for r in self.results if r.blocking and not r.success]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if not r.blocking and not r.success]

    @property
    def contract_ref(self) -> str:
        return f"{self.contract_id}@{self.contract_version}"

    def assertions(self) -> list[dict[str, Any]]:
        """OpenLineage ``DataQualityAssertionsDatasetFacet`` assertion entries (plain dicts)."""
        out: list[dict[str, Any]] = []
        for r in self.results:
            entry: dict[str, Any] = {
                "assertion": r.rule,
                "success": r.success,
                "name": r.rule,
                "severity": "error" if r.blocking else "warn",
                "description": r.description,
                "expected": r.expected,
                "actual": r.observed,
                "contentType": "expression",
                "content": r.expectation,
                "params": {"contract": self.contract_ref, "kind": r.kind},
            }
            if r.column and "," not in r.column:
                entry["column"] = r.column
            out.append(entry)
        return out

    def summary(self) -> str:
        state = "passed" if self.passed else "HELD"
        failed = ", ".join(r.rule for r in self.blocking_failures + self.warnings) or "none"
        return (
            f"{self.tenant}/{self.dataset} batch {self.batch.batch_id}: {state}; "
            f"{len(self.results)} rules, failed: {failed} ({self.duration_s:.3f} s)"
        )


# ------------------------------------------------------------------------- the GE engine


def _import_gx() -> Any:
    # GE imports deprecated stdlib modules (sre_constants); the project turns warnings into
    # errors in tests, so import it with its own warnings silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
    return gx, DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig


@dataclass(slots=True)
class _Suite:
    name: str
    specs: list[RuleSpec]
    validation: Any  # gx.ValidationDefinition


class _Engine:
    """One ephemeral GE context per process: a pandas data source, suites per contract."""

    def __init__(self) -> None:
        gx, config_cls, in_memory, progress = _import_gx()
        self.gx = gx
        config = config_cls(
            analytics_enabled=False,
            store_backend_defaults=in_memory(init_temp_docs_sites=False),
            progress_bars=progress(globally=False),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.context = gx.get_context(project_config=config, mode="ephemeral")
        skip_batch_fingerprint()  # transforms/gx_internals.py says why
        self.source = self.context.data_sources.add_pandas("energylake")
        self.suites: dict[tuple[str, str, tuple[str, ...]], _Suite] = {}
        self.sites: set[str] = set()
        self.lock = threading.RLock()

    def suite(self, contract: Contract, kind: str, specs: list[RuleSpec]) -> _Suite:
        columns = tuple(sorted(spec.rule for spec in specs))
        key = (contract.ref, kind, columns)
        found = self.suites.get(key)
        if found is not None:
            return found
        gx = self.gx
        n = sum(1 for k in self.suites if k[0] == contract.ref and k[1] == kind)
        name = f"{contract.id}.{kind}" + (f".{n}" if n else "")
        asset = self.source.add_dataframe_asset(f"{contract.id}-{contract.version}-{kind}-{n}")
        definition = asset.add_batch_definition_whole_dataframe("whole")
        expectations = []
        for spec in specs:
            cls = getattr(gx.expectations, spec.expectation)
            kwargs = {k: v for k, v in spec.kwargs.items() if v is not None}
            expectations.append(
                cls(
                    **kwargs,
                    severity="critical" if spec.blocking else "warning",
                    meta={"rule": spec.rule, "contract": contract.ref, "kind": spec.kind},
                    description=spec.description or None,
                )
            )
        suite = self.context.suites.add(
            gx.ExpectationSuite(
                name=name,
                expectations=expectations,
                meta={"contract": contract.ref, "kind": kind},
            )
        )
        validation = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}.validation", data=definition, suite=suite)
        )
        made = self.suites[key] = _Suite(name=name, specs=specs, validation=validation)
        return made

    def run(
        self, suite: _Suite, frame: pl.DataFrame, index: list[str], *, boolean_only: bool = False
    ) -> tuple[Any, str]:
        # numpy-backed pandas: GE's pandas metrics ran 2-3x slower on pyarrow-backed columns
        # (bench/quality_gate.py); the copy itself costs ~20 ms per 50k rows.
        data = frame.to_pandas()
        result_format: dict[str, Any] = {"partial_unexpected_count": 5}
        if index:  # the small per-device frame: name the devices that broke a rule
            result_format["result_format"] = "SUMMARY"
            result_format["unexpected_index_column_names"] = index
        elif boolean_only:  # the rows, first pass: success only (25 % cheaper)
            result_format["result_format"] = "BOOLEAN_ONLY"
        else:  # the rows after a failure: counts and a few values, no index lists
            result_format["result_format"] = "BASIC"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = suite.validation.run(
                batch_parameters={"dataframe": data}, result_format=result_format
            )
        self._trim()
        return result, str(result.meta.get("validation_id", ""))

    def _trim(self) -> None:
        store = self.context.validation_results_store
        keys = store.list_keys()
        if len(keys) > _RESULTS_KEPT:
            for key in sorted(keys, key=lambda k: str(k.run_id.run_time))[:-_RESULTS_KEPT]:
                store.remove_key(key)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def suites_for(contract: Contract) -> dict[str, list[str]]:
    """The GE suites the gate builds for ``contract``: suite name -> expectation types."""
    specs = rule_specs(contract)
    engine = _engine()
    out: dict[str, list[str]] = {}
    with engine.lock:
        for kind in ("row", "batch"):
            chosen = [s for s in specs if s.kind == kind]
            suite = engine.suite(contract, kind, chosen)
            out[suite.name] = [s.expectation for s in chosen]
    return out


# ------------------------------------------------------------------------- results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _worst(spec: RuleSpec, metrics: pl.DataFrame) -> str:
    column = spec.kwargs.get("column")
    if column is None or column not in metrics.columns:
        return ""
    series = metrics[column].drop_nulls()
    if series.len() == 0:
        return "not evaluated (no device with enough readings)"
    if column.startswith("drops__"):
        return f"{int(series.sum())} unflagged falls"
    low = spec.kwargs.get("min_value")
    value = series.min() if low is not None else series.max()
    return f"{'lowest' if low is not None else 'highest'} {_fmt(value)} over {series.len()} devices"


def _reason(spec: RuleSpec, res: dict[str, Any], success: bool, kind_rows: bool) -> str:
    if success:
        return "ok"
    unexpected = res.get("unexpected_count")
    if unexpected is None:
        return f"observed {_fmt(res.get('observed_value'))}, expected {spec.expected}"
    what = "rows" if kind_rows else "devices"
    shown: list[str] = []
    for item in res.get("partial_unexpected_index_list") or []:
        if isinstance(item, dict) and "device_id" in item:
            value = item.get(str(spec.kwargs.get("column")))
            shown.append(f"{item['device_id']} ({_fmt(value)})")
    if not shown:
        shown = [_fmt(v) for v in (res.get("partial_unexpected_list") or [])]
    names = ", ".join(shown[:_UNEXPECTED_SHOWN])
    return f"{unexpected} {what} break '{spec.expected}'" + (f": {names}" if names else "")


def _to_results(
    suite: _Suite, validation: Any, metrics: pl.DataFrame | None, n_rows: int
) -> list[RuleResult]:
    by_rule = {spec.rule: spec for spec in suite.specs}
    out: list[RuleResult] = []
    for item in validation.results:
        config = item.expectation_config
        spec = by_rule[str(config.meta["rule"])]
        res: dict[str, Any] = dict(item.result or {})
        success = bool(item.success)
        if not res and success and spec.expectation.startswith("ExpectColumnValues"):
            # BOOLEAN_ONLY pass of a map expectation without `mostly`: success means none
            res = {"unexpected_count": 0, "unexpected_percent": 0.0, "element_count": n_rows}
        info = item.exception_info or {}
        raised = bool(info.get("raised_exception")) if isinstance(info, dict) else False
        if raised:
            success = False
        if "observed_value" in res:
            observed = _fmt(res["observed_value"])
        elif metrics is not None:
            observed = _worst(spec, metrics)
        else:
            observed = f"{res.get('unexpected_count', 0)} of {res.get('element_count', 0)} rows"
        pct = res.get("unexpected_percent")
        reason = (
            f"GE raised: {info.get('exception_message')}"
            if raised
            else _reason(spec, res, success, metrics is None)
        )
        out.append(
            RuleResult(
                rule=spec.rule,
                kind=spec.kind,
                expectation=spec.expectation,
                column=spec.column,
                severity=spec.severity,
                success=success,
                observed=observed,
                unexpected_count=None
                if res.get("unexpected_count") is None
                else int(res["unexpected_count"]),
                unexpected_pct=None if pct is None else float(pct),
                reason=reason,
                expected=spec.expected,
                description=spec.description,
            )
        )
    return out


def _name_ranges(
    results: list[RuleResult], contract: Contract, frame: pl.DataFrame
) -> list[RuleResult]:
    """The ranges rule's reason names each field out of range, its count and worst values."""
    out = []
    for r in results:
        if r.rule == RANGE_RULE and not r.success:
            parts = []
            for f in range_fields(contract, set(frame.columns)):
                c = pl.col(f.name)
                low = c < f.minimum if f.minimum is not None else pl.lit(False)
                high = c > f.maximum if f.maximum is not None else pl.lit(False)
                bad = frame.select(c.filter((low | high).fill_null(False)))
                if bad.height:
                    values = bad.to_series()
                    low_v, high_v = _fmt(values.min()), _fmt(values.max())
                    parts.append(
                        f"{f.name}: {bad.height} outside [{f.minimum}, {f.maximum}] "
                        f"(min {low_v}, max {high_v})"
                    )
            r = replace(r, reason="; ".join(parts) or r.reason)
        out.append(r)
    return out


def _name_nulls(results: list[RuleResult], frame: pl.DataFrame) -> list[RuleResult]:
    """The required-fields rule's reason names the columns that hold nulls."""
    out = []
    for r in results:
        if r.rule == REQUIRED_RULE and not r.success and r.column:
            counts = frame.select(pl.col(r.column.split(",")).null_count()).row(0, named=True)
            named = ", ".join(f"{k} ({v})" for k, v in counts.items() if v)
            r = replace(r, reason=f"{r.unexpected_count} rows with nulls in: {named}")
        out.append(r)
    return out


# ------------------------------------------------------------------------- the gate


def _derived(contract: Contract, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows with the row rules' derived count columns."""
    return frame.with_columns(missing_required(contract, frame), out_of_range(contract, frame))


def run_gate(
    contract: Contract,
    frame: pl.DataFrame,
    devices: pl.DataFrame,
    batch: GateBatch,
    *,
    tenant: str,
    branches: pl.DataFrame | None = None,
) -> GateResult:
    """Run the contract's suites on one (tenant, dataset) frame of a batch.

    ``frame``: the rows as the pipeline would publish them (contract columns, after enforce
    and dedupe). ``devices``: the registry frame (``transforms.registry.device_frame``).
    ``branches``: the branches table (branch_id, opens_local, closes_local, closed_days);
    without it a ``branch_open_on_supply`` rule is reported as not evaluated (it passes).
    """
    started = time.perf_counter()
    now = batch.now or datetime.now(UTC)
    window = batch_window(frame, now)
    if batch.window_start is not None and batch.window_end is not None:
        window = Window(start=batch.window_start, end=batch.window_end, now=now)
    specs = rule_specs(contract, set(frame.columns))
    row_specs = [s for s in specs if s.kind == "row"]
    batch_specs = [s for s in specs if s.kind == "batch"]
    needed = sorted(
        {
            c
            for s in row_specs
            for c in [s.kwargs.get("column"), *(s.kwargs.get("column_list") or [])]
            if isinstance(c, str)
        }
    )
    metrics = device_metrics(contract, frame, devices, window, tenant=tenant, branches=branches)
    derived: pl.DataFrame | None = None
    engine = _engine()
    results: list[RuleResult] = []
    ids: list[str] = []
    with engine.lock:
        if row_specs:
            suite = engine.suite(contract, "row", row_specs)
            derived = _derived(contract, frame)
            rows = derived.select(needed)
            validation, vid = engine.run(suite, rows, [], boolean_only=True)
            if not validation.success:  # rare: run again for counts and values
                validation, vid = engine.run(suite, rows, [])
            found = _to_results(suite, validation, None, frame.height)
            results.extend(_name_ranges(_name_nulls(found, frame), contract, frame))
            ids.append(vid)
        if batch_specs:
            suite = engine.suite(contract, "batch", batch_specs)
            validation, vid = engine.run(suite, metrics, ["device_id"])
            results.extend(_to_results(suite, validation, metrics, metrics.height))
            ids.append(vid)
    blocking = {r.rule for r in results if r.blocking and not r.success}
    held: list[str] | None = None
    if blocking:
        # A rule whose failing devices cannot be named (about the whole table, or GE failed
        # where the same check in polars finds nothing) holds the whole table: the safe side.
        derived = _derived(contract, frame) if derived is None else derived
        units = [failing_devices(s, derived, metrics) for s in specs if s.rule in blocking]
        if units and all(units):
            held = sorted(set().union(*[u for u in units if u]))
    return GateResult(
        held_devices=held,
        batch=batch,
        tenant=tenant,
        dataset=contract.dataset,
        contract_id=contract.id,
        contract_version=contract.version,
        rows=frame.height,
        results=results,
        duration_s=time.perf_counter() - started,
        window=window,
        validation_ids=ids,
    )


def build_data_docs(quality_dir: Path) -> Path:
    """Build GE's Data Docs (HTML) for this process's validations under ``quality_dir``;
    returns the site's ``index.html``."""
    engine = _engine()
    base = quality_dir.resolve()
    site = f"energylake-{abs(hash(str(base))) % 10**8}"
    with engine.lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if site not in engine.sites:
            base.mkdir(parents=True, exist_ok=True)
            engine.context.add_data_docs_site(
                site_name=site,
                site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(base),
                    },
                },
            )
            engine.sites.add(site)
        engine.context.build_data_docs(site_names=[site])
    return base / "index.html"
