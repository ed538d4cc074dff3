"""The linter: the shipped contracts pass; each kind of broken contract is named precisely."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import CONTRACTS_DIR, ContractInvalidError, lint_paths, load_contract
from contracts.lint import lint_data

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
DATASETS = {
    "meter_readings",
    "dg_readings",
    "solar_readings",
    "devices",
    "branches",
    "clients",
    "contacts",
    "work_orders",
    "quarantine",
}


def _base(dataset: str = "meter_readings") -> dict[str, Any]:
    data = yaml.safe_load((CONTRACTS_DIR / f"{dataset}.odcs.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _prop(data: dict[str, Any], name: str) -> dict[str, Any]:
    for prop in data["schema"][0]["properties"]:
        if prop["name"] == name:
            return prop
    raise KeyError(name)


def _custom(prop: dict[str, Any], key: str) -> dict[str, Any]:
    for item in prop["customProperties"]:
        if item["property"] == key:
            return item
    raise KeyError(key)


def _drop_custom(prop: dict[str, Any], key: str) -> None:
    prop["customProperties"] = [c for c in prop["customProperties"] if c["property"] != key]


def test_every_dataset_of_the_brief_has_a_contract() -> None:
    found = {p.name.removesuffix(".odcs.yaml") for p in CONTRACTS_DIR.glob("*.odcs.yaml")}
    assert found >= DATASETS


def test_shipped_contracts_are_clean() -> None:
    assert lint_paths([CONTRACTS_DIR]) == []


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _missing_classification(data: dict[str, Any]) -> None:
    del _prop(data, "voltage_l1_v")["classification"]


def _unknown_purpose(data: dict[str, Any]) -> None:
    _custom(_prop(data, "power_kw"), "purposes")["value"] = ["energy_monitoring", "marketing"]


def _personal_without_protection(data: dict[str, Any]) -> None:
    _drop_custom(_prop(data, "mobile"), "protection")


def _range_without_unit(data: dict[str, Any]) -> None:
    _drop_custom(_prop(data, "frequency_hz"), "unit")


def _unit_not_in_name(data: dict[str, Any]) -> None:
    _custom(_prop(data, "frequency_hz"), "unit")["value"] = "kW"


def _mask_on_number(data: dict[str, Any]) -> None:
    _custom(_prop(data, "latitude_deg"), "protection")["value"] = {"method": "mask"}


def _unknown_subject(data: dict[str, Any]) -> None:
    _custom(_prop(data, "technician_id"), "subject")["value"] = "customer"


def _subject_on_operational(data: dict[str, Any]) -> None:
    _prop(data, "ticket_id").setdefault("customProperties", []).append(
        {"property": "subject", "value": "technician"}
    )


def _generalise_without_step(data: dict[str, Any]) -> None:
    _custom(_prop(data, "latitude_deg"), "protection")["value"] = {"method": "generalise"}


def _no_retention(data: dict[str, Any]) -> None:
    data["customProperties"] = [c for c in data["customProperties"] if c["property"] != "retention"]


def _retention_basis_unknown(data: dict[str, Any]) -> None:
    data["customProperties"][0]["value"]["basis"] = "event_time"


def _sla_disagrees(data: dict[str, Any]) -> None:
    data["slaProperties"][0]["value"] = 30


def _purposes_missing(data: dict[str, Any]) -> None:
    _drop_custom(_prop(data, "seq"), "purposes")


def _typo_custom_property(data: dict[str, Any]) -> None:
    _prop(data, "seq")["customProperties"].append(
        {"property": "purpose", "value": ["benchmarking"]}
    )


def _bad_physical_type(data: dict[str, Any]) -> None:
    _prop(data, "seq")["physicalType"] = "string"


def _required_unstated(data: dict[str, Any]) -> None:
    del _prop(data, "seq")["required"]


def _min_above_max(data: dict[str, Any]) -> None:
    _prop(data, "voltage_l1_v")["logicalTypeOptions"] = {"minimum": 500, "maximum": 0}


def _unknown_rule(data: dict[str, Any]) -> None:
    data["schema"][0]["quality"][1]["implementation"] = {"rule": "vibes"}


def _rule_without_severity(data: dict[str, Any]) -> None:
    del data["schema"][0]["quality"][0]["severity"]


def _rule_unknown_column(data: dict[str, Any]) -> None:
    data["schema"][0]["quality"][0]["arguments"] = {"properties": ["device_id", "sequence"]}


def _not_odcs(data: dict[str, Any]) -> None:
    _prop(data, "seq")["logicalType"] = "float"


def _no_primary_key(data: dict[str, Any]) -> None:
    for prop in data["schema"][0]["properties"]:
        prop.pop("primaryKey", None)
        prop.pop("primaryKeyPosition", None)


def _duplicate_property(data: dict[str, Any]) -> None:
    props = data["schema"][0]["properties"]
    props.append(copy.deepcopy(props[-1]))


def _enum_wrong_type(data: dict[str, Any]) -> None:
    _prop(data, "kind")["enum"] = [{"value": "meter"}, {"value": 3}]


# (case, dataset, mutation, code, property path fragment, message fragment)
def _bad_scope(data: dict[str, Any]) -> None:
    data["customProperties"].append({"property": "scope", "value": "global"})


BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None], str, str, str]] = [
    (
        "scope neither platform nor tenant",
        "emission_factors",
        _bad_scope,
        "E067",
        "customProperties.scope",
        "scope 'global'",
    ),
    (
        "unknown kind of data subject",
        "work_orders",
        _unknown_subject,
        "E037",
        "'technician_id'.customProperties.subject",
        "subject 'customer'",
    ),
    (
        "subject on a field that is not personal",
        "work_orders",
        _subject_on_operational,
        "E037",
        "'ticket_id'.customProperties.subject",
        "on a personal string property",
    ),
    (
        "missing classification",
        "meter_readings",
        _missing_classification,
        "E020",
        "'voltage_l1_v'.classification",
        "classification is missing",
    ),
    (
        "unknown purpose",
        "meter_readings",
        _unknown_purpose,
        "E021",
        "'power_kw'.customProperties.purposes",
        "unknown purpose 'marketing'",
    ),
    (
        "personal field without protection",
        "contacts",
        _personal_without_protection,
        "E022",
        "'mobile'.customProperties.protection",
        "personal property without protection",
    ),
    (
        "range without unit",
        "meter_readings",
        _range_without_unit,
        "E031",
        "'frequency_hz'.customProperties.unit",
        "a physical range without a unit",
    ),
    (
        "unit not in the name",
        "meter_readings",
        _unit_not_in_name,
        "E032",
        "'frequency_hz'.name",
        "does not end in '_kw'",
    ),
    (
        "mask on a number",
        "branches",
        _mask_on_number,
        "E023",
        "'latitude_deg'.customProperties.protection.method",
        "mask does not apply to logicalType",
    ),
    (
        "generalise without step",
        "branches",
        _generalise_without_step,
        "E023",
        "'latitude_deg'.customProperties.protection.step",
        "generalise needs a step",
    ),
    (
        "no retention",
        "meter_readings",
        _no_retention,
        "E040",
        "customProperties.retention",
        "every dataset needs",
    ),
    (
        "retention basis unknown",
        "meter_readings",
        _retention_basis_unknown,
        "E041",
        "customProperties.retention.basis",
        "'event_time' is not a property",
    ),
    (
        "SLA disagrees with tiers",
        "meter_readings",
        _sla_disagrees,
        "E042",
        "slaProperties.retention",
        "must equal hotDays + archiveDays = 2920 d",
    ),
    (
        "purposes missing",
        "meter_readings",
        _purposes_missing,
        "E021",
        "'seq'.customProperties.purposes",
        "purposes are missing",
    ),
    (
        "typo in a custom property",
        "meter_readings",
        _typo_custom_property,
        "E035",
        "'seq'.customProperties.purpose",
        "unknown property custom property 'purpose'",
    ),
    (
        "physical type cannot carry logical",
        "meter_readings",
        _bad_physical_type,
        "E011",
        "'seq'.physicalType",
        "cannot carry logicalType 'integer'",
    ),
    (
        "required unstated",
        "meter_readings",
        _required_unstated,
        "E012",
        "'seq'.required",
        "required must be stated",
    ),
    (
        "minimum above maximum",
        "meter_readings",
        _min_above_max,
        "E033",
        "'voltage_l1_v'.logicalTypeOptions",
        "minimum 500 is above maximum 0",
    ),
    (
        "unknown quality rule",
        "meter_readings",
        _unknown_rule,
        "E052",
        "schema[0].quality[1].implementation",
        "implementation.rule in",
    ),
    (
        "rule without severity",
        "meter_readings",
        _rule_without_severity,
        "E051",
        "schema[0].quality[0].severity",
        "severity must be 'error' (blocking) or 'warning'",
    ),
    (
        "rule names unknown column",
        "meter_readings",
        _rule_unknown_column,
        "E053",
        "schema[0].quality[0].arguments.properties",
        "unknown column 'sequence'",
    ),
    (
        "not ODCS",
        "meter_readings",
        _not_odcs,
        "E001",
        "schema[0].properties[3].logicalType",
        "ODCS schema: 'float' is not one of",
    ),
    (
        "no primary key",
        "meter_readings",
        _no_primary_key,
        "E060",
        "schema[0].properties",
        "no property is marked primaryKey",
    ),
    (
        "duplicate property",
        "meter_readings",
        _duplicate_property,
        "E061",
        "'boot'",
        "defined twice",
    ),
    (
        "allowed value of the wrong type",
        "devices",
        _enum_wrong_type,
        "E034",
        "'kind'.enum[1]",
        "allowed value 3 is not a string",
    ),
]


@pytest.mark.parametrize(
    ("case", "dataset", "mutate", "code", "path", "message"),
    BROKEN,
    ids=[case for case, *_ in BROKEN],
)
def test_broken_contract_is_named_precisely(
    tmp_path: Path,
    case: str,
    dataset: str,
    mutate: Callable[[dict[str, Any]], None],
    code: str,
    path: str,
    message: str,
) -> None:
    data = _base(dataset)
    mutate(data)
    file = tmp_path / f"{dataset}.odcs.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    issues = lint_paths([file])
    matching = [i for i in issues if i.code == code and path in i.path and message in i.message]
    assert matching, f"{case}: expected {code} at {path!r} with {message!r}, got:\n" + "\n".join(
        map(str, issues)
    )
    assert all(i.file == str(file) for i in issues)
    with pytest.raises(ContractInvalidError) as raised:
        load_contract(file)
    assert code in str(raised.value)


def test_file_name_must_match_the_id(tmp_path: Path) -> None:
    file = tmp_path / "power.odcs.yaml"
    file.write_text(yaml.safe_dump(_base()))
    codes = {i.code for i in lint_paths([file])}
    assert codes == {"E002"}


def test_not_yaml_is_reported_not_raised(tmp_path: Path) -> None:
    file = tmp_path / "meter_readings.odcs.yaml"
    file.write_text("schema: [unclosed\n")
    issues = lint_paths([file])
    assert [i.code for i in issues] == ["E001"]
    assert "not valid YAML" in issues[0].message


def test_loading_bad_yaml_names_the_line_and_the_problem(tmp_path: Path) -> None:
    file = tmp_path / "meter_readings.odcs.yaml"
    file.write_text("id: meter_readings\ndescription: a: b\n")
    with pytest.raises(ContractInvalidError) as raised:
        load_contract(file)
    assert "line 2" in str(raised.value)
    assert "not valid YAML" in str(raised.value)
    assert "[E001]" in str(raised.value)


def test_a_list_is_not_a_contract() -> None:
    issues = lint_data("x.odcs.yaml", ["not", "a", "mapping"])
    assert [i.code for i in issues] == ["E001"]


def test_cli_lint_exits_non_zero_and_names_file_path_and_problem(tmp_path: Path) -> None:
    data = _base("contacts")
    _personal_without_protection(data)
    file = tmp_path / "contacts.odcs.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run(
        [ENERGYLAKE, "contracts", "lint", str(file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert f"{file}: schema[0].properties[4] 'mobile'.customProperties.protection" in result.stderr
    assert "personal property without protection" in result.stderr
    assert "[E022]" in result.stderr


def test_cli_lint_passes_on_the_shipped_contracts() -> None:
    result = subprocess.run(
        [ENERGYLAKE, "contracts", "lint"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    shipped = len(list(CONTRACTS_DIR.glob("*.odcs.yaml")))
    assert shipped >= 11  # the brief's ten and the reports' reference data
    assert f"{shipped} contract(s) OK" in result.stdout


def test_the_schema_cache_remembers_only_passes_and_sees_any_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENERGYLAKE_CONTRACT_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load((CONTRACTS_DIR / "meter_readings.odcs.yaml").read_text())
    assert lint_data("meter_readings.odcs.yaml", data) == []
    remembered = list((tmp_path / "cache").iterdir())
    assert len(remembered) == 1
    broken = copy.deepcopy(data)
    broken["apiVersion"] = "v9"  # not an ODCS version: a schema error
    issues = lint_data("meter_readings.odcs.yaml", broken)
    assert any(i.code == "E001" and "apiVersion" in i.path for i in issues)
    assert lint_data("meter_readings.odcs.yaml", broken) == issues  # failures never cached
    assert len(list((tmp_path / "cache").iterdir())) == 1
