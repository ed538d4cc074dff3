"""The gate on real pipeline output: suites from contracts, a clean day, firmware faults."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from contracts import load_registry
from tests.quality.conftest import Day, Faulty
from transforms.quality import (
    GateBatch,
    GateResult,
    RuleResult,
    build_data_docs,
    run_gate,
    suites_for,
)
from transforms.quality_rules import RANGE_COLUMN, RANGE_RULE, QualityRuleError, rule_specs

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "openlineage" / "facets"


def _gate(day: Day, tenant: str, dataset: str, batch_no: int = 1, **kw: object) -> GateResult:
    contract = load_registry().get(dataset)
    now = kw.pop("now", day.end_of_day)
    frame = kw.pop("frame", None)
    return run_gate(
        contract,
        day.frame(tenant, dataset) if frame is None else frame,  # type: ignore[arg-type]
        day.devices,
        GateBatch("main", batch_no, now=now),  # type: ignore[arg-type]
        tenant=tenant,
        branches=day.branches,
    )


def _by_rule(result: GateResult) -> dict[str, RuleResult]:
    return {r.rule: r for r in result.results}


def test_suite_comes_from_the_contract() -> None:
    contract = load_registry().get("meter_readings")
    specs = {s.rule: s for s in rule_specs(contract)}
    required = specs["required:not_null"]
    # what a device profile may omit is checked per row by enforce (MISSING_FIELD); the gate
    # checks the fields no reading may lack
    assert required.column == ",".join(
        f.name for f in contract.fields if f.required and f.name not in contract.may_omit
    )
    assert required.severity == "error"
    # Every bounded field is checked, by one expectation over the derived count column.
    ranges = specs[RANGE_RULE]
    bounded = [f.name for f in contract.fields if f.minimum is not None or f.maximum is not None]
    assert ranges.column == ",".join(bounded)
    assert "voltage_l1_v [0, 500] V" in ranges.description
    assert ranges.kwargs == {"column": RANGE_COLUMN, "min_value": 0, "max_value": 0}
    assert ranges.severity == "error"
    assert not any(name.endswith(":range") for name in specs)
    unique = specs["unique_device_seq"]
    assert unique.expectation == "ExpectCompoundColumnsToBeUnique"
    assert unique.kwargs == {"column_list": ["device_id", "seq", "ts"]}
    assert specs["zero_power_while_open"].severity == "error"
    assert specs["completeness_per_device"].severity == "warning"
    assert specs["energy_import_monotonic"].kwargs["column"] == "drops__energy_import_kwh"
    suites = suites_for(contract)
    assert set(suites) == {"meter_readings.row", "meter_readings.batch"}
    assert "ExpectCompoundColumnsToBeUnique" in suites["meter_readings.row"]


def test_allowed_values_become_a_set_expectation() -> None:
    contract = load_registry().get("dg_readings")
    with_values = [f for f in contract.fields if f.allowed_values]
    assert with_values, "dg_readings lists the controller's states"
    specs = {s.rule: s for s in rule_specs(contract)}
    for f in with_values:
        spec = specs[f"{f.name}:allowed_values"]
        assert spec.expectation == "ExpectColumnValuesToBeInSet"
        assert set(spec.kwargs["value_set"]) == set(f.allowed_values or ())


def test_unknown_library_metric_is_a_clear_error() -> None:
    from dataclasses import replace

    contract = load_registry().get("meter_readings")
    rule = replace(contract.quality[0], metric="freshnessOfTheMoon")
    broken = replace(contract, quality=(rule,))
    with pytest.raises(QualityRuleError, match=r"freshnessOfTheMoon.*fix the rule") as caught:
        rule_specs(broken)
    assert (caught.value.contract, caught.value.rule) == (contract.ref, rule.name)
    assert type(caught.value).exit_code == 2  # the contract is to fix


@pytest.mark.slow
def test_clean_day_passes_every_blocking_rule(clean_day: Day) -> None:
    tables = clean_day.tables()
    assert len(tables) >= 6
    for tenant, dataset in tables:
        result = _gate(clean_day, tenant, dataset)
        assert result.passed, result.summary()
        assert result.rows > 1000
        rules = _by_rule(result)
        assert rules["completeness_per_device"].success
        # the batch rules were really evaluated, not skipped for lack of data
        assert "not evaluated" not in rules["completeness_per_device"].observed
        if "freshness" in rules:  # solar_readings has no freshness rule
            assert rules["freshness"].success
        if dataset == "meter_readings":
            zero = rules["zero_power_while_open"]
            assert zero.success
            assert zero.observed.startswith("highest")


@pytest.mark.slow
def test_zero_power_branch_trips_the_blocking_rule(faulty_day: Faulty) -> None:
    day = faulty_day.day
    tenant = day.tenant_of(faulty_day.zero_branch)
    result = _gate(day, tenant, "meter_readings")
    assert not result.passed
    failed = result.blocking_failures
    assert [r.rule for r in failed] == ["zero_power_while_open"]
    rule = failed[0]
    assert rule.severity == "error"
    assert rule.blocking
    assert rule.unexpected_count == 1  # the branch's one meter, not its neighbours
    meter = day.devices.filter(
        (pl.col("branch_id") == faulty_day.zero_branch) & (pl.col("kind") == "meter")
    )["device_id"][0]
    assert meter in rule.reason
    # every row-level check still passed: the fault is only visible at batch level
    assert all(r.success for r in result.results if r.kind == "row")


def test_silent_branch_trips_completeness_as_a_warning(faulty_day: Faulty) -> None:
    day = faulty_day.day
    tenant = day.tenant_of(faulty_day.silent_branch)
    result = _gate(day, tenant, "meter_readings")
    rules = _by_rule(result)
    completeness = rules["completeness_per_device"]
    assert not completeness.success
    assert completeness.severity == "warning"
    assert result.passed  # a warning does not hold the batch
    silent = day.devices.filter(
        (pl.col("branch_id") == faulty_day.silent_branch) & (pl.col("kind") == "meter")
    )["device_id"][0]
    assert silent in completeness.reason
    assert completeness.unexpected_count == 1


def test_stale_batch_fails_freshness(clean_day: Day) -> None:
    tenant, dataset = clean_day.tables()[0]
    result = _gate(clean_day, tenant, dataset, now=clean_day.end_of_day + timedelta(hours=3))
    fresh = _by_rule(result)["freshness"]
    assert not fresh.success
    assert fresh.severity == "warning"
    assert float(fresh.observed) > 3 * 3600


def test_duplicates_and_out_of_range_rows_trip_row_rules(clean_day: Day) -> None:
    tenant = clean_day.tables()[0][0]
    frame = clean_day.frame(tenant, "meter_readings")
    broken = pl.concat([frame, frame.head(3)]).with_columns(
        pl.when(pl.int_range(pl.len()) == 10)
        .then(pl.lit(999.0))
        .otherwise(pl.col("voltage_l2_v"))
        .alias("voltage_l2_v"),
        pl.when(pl.int_range(pl.len()) == 20)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.col("event_month"))
        .alias("event_month"),
    )
    result = _gate(clean_day, tenant, "meter_readings", frame=broken)
    rules = _by_rule(result)
    assert not result.passed
    assert rules["unique_device_seq"].unexpected_count == 6
    assert rules[RANGE_RULE].unexpected_count == 1
    assert "voltage_l2_v: 1 outside [0, 500]" in rules[RANGE_RULE].reason
    assert "999" in rules[RANGE_RULE].reason
    assert rules["required:not_null"].unexpected_count == 1
    assert "event_month (1)" in rules["required:not_null"].reason
    assert "voltage_l1_v" not in rules[RANGE_RULE].reason


def test_assertions_validate_against_the_openlineage_facet(faulty_day: Faulty) -> None:
    day = faulty_day.day
    result = _gate(day, day.tenant_of(faulty_day.zero_branch), "meter_readings")
    schema = json.loads((SPEC / "DataQualityAssertionsDatasetFacet.json").read_text())
    items = schema["$defs"]["DataQualityAssertionsDatasetFacet"]["allOf"][1]
    assertions = result.assertions()
    jsonschema.validate({"assertions": assertions}, items)
    assert {"assertion": "zero_power_while_open", "success": False}.items() <= next(
        a for a in assertions if a["assertion"] == "zero_power_while_open"
    ).items()
    assert (
        next(a for a in assertions if a["assertion"] == "unique_device_seq")["severity"] == "error"
    )


def test_data_docs_are_built(clean_day: Day, tmp_path: Path) -> None:
    tenant, dataset = clean_day.tables()[0]
    _gate(clean_day, tenant, dataset)
    index = build_data_docs(tmp_path / "quality")
    assert index.is_file()
    html = index.read_text()
    assert f"{dataset}.row" in html
    assert f"{dataset}.batch" in html
    pages = list((tmp_path / "quality" / "validations").rglob("*.html"))
    assert pages
