"""The contract linter: the ODCS JSON Schema, then energylake's governance rules.

Every finding names the file, the property path and what is wrong, with a stable
code (``E0xx``) operators and tests can search for. Codes:

- E001 not ODCS v3 (the JSON Schema shipped with ``open-data-contract-standard``)
- E002 file, id and schema object names disagree; E003 not exactly one schema object
- E010 missing logical or physical type; E011 unknown or incompatible physical type
- E012 ``required`` not stated
- E020 classification missing or unknown
- E021 purposes missing, not a list, unknown or repeated
- E022 a personal, location, confidential or secret property without protection
- E023 protection unknown, not applicable to the type, or with bad parameters
- E030 unknown unit; E031 range without unit; E032 name does not carry the unit
- E033 minimum above maximum; E034 allowed value of the wrong type
- E035 unknown custom property (a typo would silently disable a rule)
- E040 retention missing or malformed; E041 bad retention basis; E042 SLA disagrees
- E050 no quality rules; E051 rule without name or with bad severity
- E052 unknown energylake rule or bad parameters; E053 rule names an unknown column
- E060 no primary key; E061 duplicate property name; E062 unknown rated-by column
- E063 deviceKind not a lower-case name (``^[a-z][a-z0-9_]{0,31}$``)
- E064 (registry) two contracts with one deviceKind; E065 (registry) a deviceKind the device
  registry's ``kind`` enum does not allow; E066 (registry) a kind of that enum that no
  contract names as its deviceKind
- E067 scope not 'platform' or 'tenant'
- E068 profiles malformed, on a contract that is not a readings contract, or naming a
  field that is not a required value field
- E036 sentinel not ``<u16|s16|u32|s32>[/divisor]`` or on a property that is not a number
- E037 subject not a kind of the vocabulary's ``subjects``, or on a property that is not
  ``personal`` string data
- E038 identifies not one of the vocabulary's ``identifiers``, or on a property that is not
  ``personal`` string data; freeText on a property that is not a string
- E039 erasure: a dataset that names a data subject (subject or identifies) without an
  erasure rule, or one that is malformed (rows delete | keep; clear: nullable properties)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from contracts.errors import LintIssue
from contracts.model import PHYSICAL_TYPES, READING_SYSTEM_FIELDS, SENTINEL_SPEC
from contracts.vocabulary import Vocabulary, load_vocabulary

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "CONTRACT_SUFFIX",
    "DEVICES_DATASET",
    "device_kind_issues",
    "lint_data",
    "lint_file",
    "lint_paths",
]

CONTRACT_SUFFIX = ".odcs.yaml"

_PROPERTY_CUSTOM_KEYS = {
    "unit",
    "purposes",
    "protection",
    "counter",
    "ratedBy",
    "sentinel",
    "subject",
    "identifies",
    "freeText",
}
_CONTRACT_CUSTOM_KEYS = {
    "retention",
    "deviceKind",
    "personalData",
    "erasure",
    "scope",
    "profiles",
}
_PROFILE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_SEVERITIES = {"error", "warning"}
_DEVICE_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NUMERIC = {"integer", "number"}
_TEMPORAL = {"timestamp", "date"}
_TIMESTAMP_GRAINS = {"1m", "15m", "1h", "1d"}
# parameters each energylake rule kind takes: name -> required?
_RULE_PARAMS: dict[str, dict[str, bool]] = {
    "completeness": {"per": True, "minimumShare": True},
    "freshness": {"column": True, "maxAgeSeconds": True},
    "zero_share": {"column": True, "when": True, "maximumShare": False, "minimumShare": False},
    "counter_monotonic": {},
}
_ZERO_SHARE_CONDITIONS = {"branch_open_on_supply", "night", "always"}


@cache
def _odcs_schema_text() -> str:
    return resources.files("open_data_contract_standard").joinpath("schema.json").read_text()


@cache
def _odcs_validator() -> jsonschema.Draft201909Validator:
    import jsonschema  # only when a document is not in the cache of valid ones (below)

    return jsonschema.Draft201909Validator(json.loads(_odcs_schema_text()))


def _schema_cache() -> Path | None:
    """Where documents that passed the ODCS schema are remembered (by content hash)."""
    configured = os.environ.get("ENERGYLAKE_CONTRACT_CACHE")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "energylake" / "odcs-valid"


def _odcs_errors(data: Any) -> list[jsonschema.ValidationError]:
    """The ODCS JSON Schema errors of ``data``. Validating the schema costs ~50 ms per
    contract and every process loads all of them: a document (canonical JSON, with the
    schema's own text) that passed once is remembered by its SHA-256, so it is only
    validated again when it or the schema changes. Failures are never cached."""
    folder = _schema_cache()
    key = hashlib.sha256(
        _odcs_schema_text().encode()
        + b"\0"
        + json.dumps(data, sort_keys=True, default=str).encode()
    ).hexdigest()
    if folder is not None and (folder / key).exists():
        return []
    errors = sorted(_odcs_validator().iter_errors(data), key=lambda e: e.path)
    if not errors and folder is not None:
        with contextlib.suppress(OSError):  # a read-only home only costs the speed-up
            folder.mkdir(parents=True, exist_ok=True)
            (folder / key).touch()
    return errors


def _json_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _custom(node: dict[str, Any]) -> dict[str, Any]:
    raw = node.get("customProperties") or []
    return {
        item["property"]: item.get("value")
        for item in raw
        if isinstance(item, dict) and "property" in item
    }


class _Linter:
    def __init__(self, file: str, data: Any, vocab: Vocabulary) -> None:
        self.file = file
        self.data = data
        self.vocab = vocab
        self.issues: list[LintIssue] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.issues.append(LintIssue(self.file, path, code, message))

    def run(self) -> list[LintIssue]:
        if not isinstance(self.data, dict):
            self.add("(root)", "E001", "not a YAML mapping; an ODCS v3 contract is expected")
            return self.issues
        for error in _odcs_errors(self.data):
            self.add(_json_path(error.absolute_path), "E001", f"ODCS schema: {error.message}")
        if self.issues:
            return self.issues  # the rules below assume an ODCS-shaped document
        self._contract_level()
        return self.issues

    def _known_custom_keys(
        self, path: str, level: str, custom: dict[str, Any], known: set[str]
    ) -> None:
        """E035: a misspelt custom property would silently switch a rule off."""
        for key in custom:
            if key not in known:
                self.add(
                    f"{path}.{key}",
                    "E035",
                    f"unknown {level} custom property {key!r}; known: {', '.join(sorted(known))}",
                )

    # -- contract level -------------------------------------------------------------
    def _contract_level(self) -> None:
        data = self.data
        stem = Path(self.file).name.removesuffix(CONTRACT_SUFFIX)
        schema = data.get("schema") or []
        if len(schema) != 1:
            self.add("schema", "E003", f"expected exactly one schema object, found {len(schema)}")
            return
        obj = schema[0]
        for key in ("id", "name"):
            if data.get(key) != stem:
                self.add(
                    key, "E002", f"{key} {data.get(key)!r} must equal the file's name {stem!r}"
                )
        if obj.get("name") != stem:
            self.add("schema[0].name", "E002", f"schema object {obj.get('name')!r} != {stem!r}")
        custom = _custom(data)
        self._known_custom_keys("customProperties", "contract", custom, _CONTRACT_CUSTOM_KEYS)
        props = obj.get("properties") or []
        columns: dict[str, dict[str, Any]] = {}
        for index, prop in enumerate(props):
            name = prop.get("name", "")
            path = f"schema[0].properties[{index}] '{name}'"
            if name in columns:
                self.add(path, "E061", f"property {name!r} is defined twice")
            columns[name] = prop
            self._property(path, prop)
        if not any(p.get("primaryKey") for p in props):
            self.add("schema[0].properties", "E060", "no property is marked primaryKey")
        self._retention(custom.get("retention"), columns)
        self._erasure(custom.get("erasure"), columns)
        kind = custom.get("deviceKind")
        if kind is not None and not (isinstance(kind, str) and _DEVICE_KIND.fullmatch(kind)):
            self.add(
                "customProperties.deviceKind",
                "E063",
                f"deviceKind {kind!r} must be a lower-case name like 'meter' (the device "
                "registry's kind whose readings this dataset holds)",
            )
        scope = custom.get("scope")
        if scope is not None and scope not in ("platform", "tenant"):
            self.add(
                "customProperties.scope",
                "E067",
                f"scope {scope!r} must be 'platform' (one table, platform/<dataset>) or 'tenant'",
            )
        self._profiles(custom.get("profiles"), columns, kind)
        self._quality(obj, props, columns)
        for index, prop in enumerate(props):
            rated_by = _custom(prop).get("ratedBy")
            if rated_by is not None and not isinstance(rated_by, str):
                self.add(
                    f"schema[0].properties[{index}] '{prop.get('name')}'.customProperties.ratedBy",
                    "E062",
                    "ratedBy must name a rating column of the device registry",
                )

    def _erasure(self, value: Any, columns: dict[str, dict[str, Any]]) -> None:
        path = "customProperties.erasure"
        names = any(
            _custom(p).get("subject") is not None or _custom(p).get("identifies") is not None
            for p in columns.values()
        )
        if value is None:
            if names:
                self.add(
                    path,
                    "E039",
                    "the dataset names data subjects: say what erasing one does to its rows "
                    "({rows: delete} or {rows: keep, clear: [properties]})",
                )
            return
        if not isinstance(value, dict) or value.get("rows") not in ("delete", "keep"):
            self.add(path, "E039", f"erasure {value!r}: rows must be delete or keep")
            return
        extra = set(value) - {"rows", "clear"}
        clear = value.get("clear") or []
        if extra or not isinstance(clear, list):
            self.add(path, "E039", f"erasure takes rows and clear (a list), not {sorted(extra)}")
            return
        if value["rows"] == "keep" and not clear:
            self.add(path, "E039", "erasure keeps the rows: list the properties it clears")
        for name in clear:
            prop = columns.get(name)
            if prop is None or prop.get("required") or prop.get("primaryKey"):
                self.add(
                    path,
                    "E039",
                    f"erasure clears {name!r}: it must be a property that may be null",
                )

    def _profiles(self, raw: Any, columns: dict[str, Any], kind: Any) -> None:
        """``profiles: {name: {description, mayOmit: [required fields]}}`` on a readings
        contract: what a device of that profile (or a message of that kind) may leave out."""
        if raw is None:
            return
        where = "customProperties.profiles"
        if kind is None:
            self.add(
                where, "E068", "profiles belong to a readings contract (one with a deviceKind)"
            )
            return
        if not isinstance(raw, dict) or not raw:
            self.add(where, "E068", "profiles is a mapping {name: {description, mayOmit: [...]}}")
            return
        for name, spec in raw.items():
            at = f"{where}.{name}"
            if not (isinstance(name, str) and _PROFILE.fullmatch(name)):
                self.add(at, "E068", f"profile name {name!r} must match {_PROFILE.pattern}")
            if not isinstance(spec, dict) or set(spec) - {"description", "mayOmit"}:
                self.add(at, "E068", "a profile is {description, mayOmit: [required fields]}")
                continue
            if not str(spec.get("description") or "").strip():
                self.add(at, "E068", "say what devices or messages the profile is for")
            omit = spec.get("mayOmit")
            if not isinstance(omit, list) or not omit:
                self.add(f"{at}.mayOmit", "E068", "mayOmit lists at least one field")
                continue
            for field_name in omit:
                prop = columns.get(field_name) if isinstance(field_name, str) else None
                if prop is None:
                    self.add(f"{at}.mayOmit", "E068", f"{field_name!r} is not a property")
                elif prop.get("required") is not True or field_name in READING_SYSTEM_FIELDS:
                    self.add(
                        f"{at}.mayOmit",
                        "E068",
                        f"{field_name!r} is not a required value field: nothing to omit",
                    )

    def _retention(self, value: Any, columns: dict[str, dict[str, Any]]) -> None:
        path = "customProperties.retention"
        if not isinstance(value, dict):
            self.add(
                path,
                "E040",
                "missing: every dataset needs {hotDays, archiveDays, then: delete, basis}",
            )
            return
        hot, archive = value.get("hotDays"), value.get("archiveDays")
        if not isinstance(hot, int) or isinstance(hot, bool) or hot < 1:
            self.add(f"{path}.hotDays", "E040", f"hotDays must be an integer >= 1, got {hot!r}")
        if not isinstance(archive, int) or isinstance(archive, bool) or archive < 0:
            self.add(
                f"{path}.archiveDays",
                "E040",
                f"archiveDays must be an integer >= 0, got {archive!r}",
            )
        if value.get("then") != "delete":
            self.add(f"{path}.then", "E040", f"then must be 'delete', got {value.get('then')!r}")
        extra = set(value) - {"hotDays", "archiveDays", "then", "basis"}
        if extra:
            self.add(path, "E040", f"unknown retention keys: {', '.join(sorted(extra))}")
        basis = value.get("basis")
        basis_prop = columns.get(basis) if isinstance(basis, str) else None
        if basis_prop is None:
            self.add(f"{path}.basis", "E041", f"basis {basis!r} is not a property of the dataset")
        elif basis_prop.get("logicalType") not in _TEMPORAL:
            self.add(f"{path}.basis", "E041", f"basis {basis!r} must be a timestamp or a date")
        elif basis_prop.get("required") is not True:
            self.add(
                f"{path}.basis",
                "E041",
                f"basis {basis!r} must be required: a row without it would never expire",
            )
        slas = [s for s in self.data.get("slaProperties") or [] if s.get("property") == "retention"]
        if isinstance(hot, int) and isinstance(archive, int):
            for sla in slas:
                if sla.get("unit") not in ("d", "day", "days") or sla.get("value") != hot + archive:
                    self.add(
                        "slaProperties.retention",
                        "E042",
                        f"SLA retention {sla.get('value')!r} {sla.get('unit')!r} must equal "
                        f"hotDays + archiveDays = {hot + archive} d",
                    )

    # -- property level -------------------------------------------------------------
    def _property(self, path: str, prop: dict[str, Any]) -> None:
        name = str(prop.get("name", ""))
        logical, physical = prop.get("logicalType"), prop.get("physicalType")
        if logical is None:
            self.add(f"{path}.logicalType", "E010", "logicalType is missing")
        if physical is None:
            self.add(f"{path}.physicalType", "E010", "physicalType is missing")
        elif physical not in PHYSICAL_TYPES:
            self.add(
                f"{path}.physicalType",
                "E011",
                f"unknown physicalType {physical!r}; known: {', '.join(PHYSICAL_TYPES)}",
            )
        elif logical is not None and logical not in PHYSICAL_TYPES[physical][1]:
            self.add(
                f"{path}.physicalType",
                "E011",
                f"physicalType {physical!r} cannot carry logicalType {logical!r}",
            )
        if not isinstance(prop.get("required"), bool):
            self.add(f"{path}.required", "E012", "required must be stated (true or false)")
        custom = _custom(prop)
        self._known_custom_keys(
            f"{path}.customProperties", "property", custom, _PROPERTY_CUSTOM_KEYS
        )
        self._classification_and_purposes(path, prop, custom)
        self._units_and_ranges(path, name, prop, custom)

    def _classification_and_purposes(
        self, path: str, prop: dict[str, Any], custom: dict[str, Any]
    ) -> None:
        vocab = self.vocab
        classification = prop.get("classification")
        if classification is None:
            self.add(
                f"{path}.classification",
                "E020",
                f"classification is missing; one of {', '.join(vocab.classifications)}",
            )
        elif classification not in vocab.classifications:
            self.add(
                f"{path}.classification",
                "E020",
                f"unknown classification {classification!r}; "
                f"one of {', '.join(vocab.classifications)}",
            )
        purposes = custom.get("purposes")
        valid_purposes: set[str] = set()
        if "purposes" not in custom:
            self.add(
                f"{path}.customProperties.purposes",
                "E021",
                "purposes are missing: list the purposes that may see this property in clear "
                "(an empty list means none)",
            )
        elif not isinstance(purposes, list) or not all(isinstance(p, str) for p in purposes):
            self.add(
                f"{path}.customProperties.purposes",
                "E021",
                "purposes must be a list of purpose ids",
            )
        else:
            for purpose in purposes:
                if purpose not in vocab.purposes:
                    self.add(
                        f"{path}.customProperties.purposes",
                        "E021",
                        f"unknown purpose {purpose!r}; the privacy policy's purposes are: "
                        f"{', '.join(vocab.purposes)}",
                    )
                else:
                    valid_purposes.add(purpose)
            if len(set(purposes)) != len(purposes):
                self.add(f"{path}.customProperties.purposes", "E021", "a purpose is listed twice")
        protection = custom.get("protection")
        needs = classification in vocab.classifications and vocab.requires_protection(
            str(classification)
        )
        uncovered = set(vocab.purposes) - valid_purposes
        if protection is None:
            if needs and uncovered:
                self.add(
                    f"{path}.customProperties.protection",
                    "E022",
                    f"{classification} property without protection: say how it is protected "
                    f"from {', '.join(sorted(uncovered))} (drop, mask, pseudonymise or generalise)",
                )
            return
        self._protection(f"{path}.customProperties.protection", prop, protection)

    def _protection(self, path: str, prop: dict[str, Any], protection: Any) -> None:
        if not isinstance(protection, dict) or "method" not in protection:
            self.add(path, "E023", "protection must be a mapping with a method")
            return
        method = protection["method"]
        spec = self.vocab.protections.get(method)
        if spec is None:
            self.add(
                f"{path}.method",
                "E023",
                f"unknown protection {method!r}; one of {', '.join(self.vocab.protections)}",
            )
            return
        logical = prop.get("logicalType")
        if logical not in spec["applies_to"]:
            self.add(
                f"{path}.method",
                "E023",
                f"{method} does not apply to logicalType {logical!r} "
                f"(applies to {', '.join(spec['applies_to'])})",
            )
        allowed = {
            "drop": {"method"},
            "mask": {"method", "keep_last"},
            "pseudonymise": {"method", "domain"},
            "generalise": {"method", "step", "grain"},
        }[method]
        extra = set(protection) - allowed
        if extra:
            self.add(path, "E023", f"{method} takes no {', '.join(sorted(extra))}")
        if method == "mask":
            keep = protection.get("keep_last", 0)
            if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 4:
                self.add(f"{path}.keep_last", "E023", f"keep_last must be 0..4, got {keep!r}")
        if method == "generalise":
            if logical in _NUMERIC:
                step = protection.get("step")
                if not isinstance(step, int | float) or isinstance(step, bool) or step <= 0:
                    self.add(f"{path}.step", "E023", f"generalise needs a step > 0, got {step!r}")
            elif protection.get("grain") not in _TIMESTAMP_GRAINS:
                self.add(
                    f"{path}.grain",
                    "E023",
                    f"generalise of a {logical} needs a grain in "
                    f"{', '.join(sorted(_TIMESTAMP_GRAINS))}",
                )

    def _units_and_ranges(
        self, path: str, name: str, prop: dict[str, Any], custom: dict[str, Any]
    ) -> None:
        unit = custom.get("unit")
        options = prop.get("logicalTypeOptions") or {}
        has_range = any(k in options for k in ("minimum", "maximum"))
        logical = prop.get("logicalType")
        if unit is not None:
            if unit not in self.vocab.units:
                self.add(
                    f"{path}.customProperties.unit",
                    "E030",
                    f"unknown unit {unit!r}; one of {', '.join(self.vocab.units)}",
                )
            else:
                suffix = self.vocab.unit_suffix(str(unit))
                if suffix is not None and not name.endswith(f"_{suffix}"):
                    self.add(
                        f"{path}.name",
                        "E032",
                        f"property {name!r} has unit {unit} but its name does not end in "
                        f"'_{suffix}' (units go in names: energy_import_kwh, power_kw)",
                    )
        elif logical in _NUMERIC and has_range:
            self.add(
                f"{path}.customProperties.unit",
                "E031",
                "a physical range without a unit: say what the numbers measure "
                "(unit '1' for dimensionless)",
            )
        sentinel = custom.get("sentinel")
        if sentinel is not None and (
            not isinstance(sentinel, str)
            or SENTINEL_SPEC.fullmatch(sentinel) is None
            or logical not in _NUMERIC
        ):
            self.add(
                f"{path}.customProperties.sentinel",
                "E036",
                f"sentinel {sentinel!r}: a numeric property's register type "
                "<u16|s16|u32|s32>, optionally /divisor (its scale to the unit), e.g. u16/10",
            )
        subject = custom.get("subject")
        if subject is not None and (
            subject not in self.vocab.subjects
            or prop.get("classification") != "personal"
            or logical != "string"
        ):
            self.add(
                f"{path}.customProperties.subject",
                "E037",
                f"subject {subject!r}: the id of a kind of data subject"
                f" ({', '.join(self.vocab.subjects)}) on a personal string property",
            )
        identifies = custom.get("identifies")
        if identifies is not None and (
            identifies not in self.vocab.identifiers
            or prop.get("classification") != "personal"
            or logical != "string"
        ):
            self.add(
                f"{path}.customProperties.identifies",
                "E038",
                f"identifies {identifies!r}: one of {', '.join(self.vocab.identifiers)}"
                " on a personal string property",
            )
        free_text = custom.get("freeText")
        if free_text is not None and (not isinstance(free_text, bool) or logical != "string"):
            self.add(
                f"{path}.customProperties.freeText",
                "E038",
                "freeText: true on a string property that may name people",
            )
        low, high = options.get("minimum"), options.get("maximum")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            self.add(f"{path}.logicalTypeOptions", "E033", f"minimum {low} is above maximum {high}")
        python_type: tuple[type, ...] | None = {
            "string": (str,),
            "integer": (int,),
            "number": (int, float),
            "boolean": (bool,),
        }.get(str(logical))
        for index, entry in enumerate(prop.get("enum") or []):
            value = entry.get("value")
            wrong_bool = isinstance(value, bool) and logical != "boolean"
            if python_type and (not isinstance(value, python_type) or wrong_bool):
                self.add(
                    f"{path}.enum[{index}]",
                    "E034",
                    f"allowed value {value!r} is not a {logical}",
                )

    # -- quality rules ----------------------------------------------------------------
    def _quality(
        self, obj: dict[str, Any], props: list[dict[str, Any]], columns: dict[str, Any]
    ) -> None:
        located: list[tuple[str, dict[str, Any]]] = [
            (f"schema[0].quality[{i}]", rule) for i, rule in enumerate(obj.get("quality") or [])
        ]
        for p_index, prop in enumerate(props):
            for r_index, rule in enumerate(prop.get("quality") or []):
                located.append(
                    (
                        f"schema[0].properties[{p_index}] '{prop.get('name')}'.quality[{r_index}]",
                        rule,
                    )
                )
        if not located:
            self.add("schema[0].quality", "E050", "no quality rules: every dataset needs some")
        names: set[str] = set()
        for path, rule in located:
            name = rule.get("name")
            if not isinstance(name, str) or not name:
                self.add(path, "E051", "a quality rule needs a name (results are recorded by it)")
            elif name in names:
                self.add(path, "E051", f"quality rule name {name!r} is used twice")
            else:
                names.add(name)
            if rule.get("severity") not in _SEVERITIES:
                self.add(
                    f"{path}.severity",
                    "E051",
                    "severity must be 'error' (blocking) or 'warning', "
                    f"got {rule.get('severity')!r}",
                )
            if rule.get("type") == "custom":
                self._custom_rule(path, rule, columns)
            elif rule.get("metric") == "duplicateValues":
                for column in (rule.get("arguments") or {}).get("properties", []):
                    if column not in columns:
                        self.add(
                            f"{path}.arguments.properties",
                            "E053",
                            f"rule names unknown column {column!r}",
                        )

    def _custom_rule(self, path: str, rule: dict[str, Any], columns: dict[str, Any]) -> None:
        if rule.get("engine") != "energylake":
            return  # other engines' rules are carried, not run
        impl = rule.get("implementation")
        if not isinstance(impl, dict) or impl.get("rule") not in _RULE_PARAMS:
            self.add(
                f"{path}.implementation",
                "E052",
                f"an energylake rule needs implementation.rule in {', '.join(_RULE_PARAMS)}",
            )
            return
        kind = impl["rule"]
        params = _RULE_PARAMS[kind]
        for key, required in params.items():
            if required and key not in impl:
                self.add(f"{path}.implementation.{key}", "E052", f"{kind} needs {key}")
        extra = set(impl) - set(params) - {"rule"}
        if extra:
            self.add(
                f"{path}.implementation", "E052", f"{kind} takes no {', '.join(sorted(extra))}"
            )
        for key in ("per", "column"):
            column = impl.get(key)
            if column is not None and column not in columns:
                self.add(
                    f"{path}.implementation.{key}", "E053", f"rule names unknown column {column!r}"
                )
        if kind == "zero_share" and impl.get("when") not in _ZERO_SHARE_CONDITIONS:
            self.add(
                f"{path}.implementation.when",
                "E052",
                f"when must be one of {', '.join(sorted(_ZERO_SHARE_CONDITIONS))}",
            )
        for key in ("minimumShare", "maximumShare"):
            share = impl.get(key)
            if share is not None and not (isinstance(share, int | float) and 0 <= share <= 1):
                self.add(f"{path}.implementation.{key}", "E052", f"{key} must be in [0, 1]")


def lint_data(file: str, data: Any, vocab: Vocabulary | None = None) -> list[LintIssue]:
    """Lint an already parsed contract document."""
    return _Linter(file, data, vocab or load_vocabulary()).run()


def lint_file(path: Path, vocab: Vocabulary | None = None) -> list[LintIssue]:
    """Lint one contract file (ODCS schema, then the governance rules)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [LintIssue(str(path), "(root)", "E001", f"not valid YAML: {exc}")]
    return lint_data(str(path), data, vocab)


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.glob(f"*{CONTRACT_SUFFIX}"))
        else:
            yield path


DEVICES_DATASET = "devices"  # the device registry's contract; its ``kind`` enum lists the kinds
_KIND_PATH = "customProperties.deviceKind"


def device_kind_issues(
    readings: list[tuple[str, str, str]], devices: tuple[str, tuple[str, ...]] | None
) -> list[LintIssue]:
    """A folder's readings contracts against its device registry: ``readings`` is (file,
    dataset, deviceKind) per contract that names one, ``devices`` the registry contract's
    file and its ``kind`` enum (None: the folder has none). E064 two contracts of one kind,
    E065 a kind no device can have, E066 a kind a device can have with no readings dataset."""
    issues: list[LintIssue] = []
    owner: dict[str, str] = {}
    devices_file, allowed = devices if devices is not None else ("", None)
    for file, dataset, kind in readings:
        if kind in owner:
            message = f"deviceKind {kind!r} is already {owner[kind]!r}'s"
            issues.append(LintIssue(file, _KIND_PATH, "E064", message))
            continue
        owner[kind] = dataset
        if allowed is not None and kind not in allowed:
            message = (
                f"deviceKind {kind!r} is not a kind the device registry allows "
                f"({', '.join(allowed)}); add it to the enum of {DEVICES_DATASET}.kind"
            )
            issues.append(LintIssue(file, _KIND_PATH, "E065", message))
    for kind in allowed or ():
        if kind not in owner:
            message = (
                f"the device registry allows kind {kind!r} but no contract names it as its "
                f"deviceKind; add that readings contract or remove {kind!r} from the enum"
            )
            issues.append(LintIssue(devices_file, "kind.enum", "E066", message))
    return issues


def _kinds_of(data: dict[str, Any]) -> tuple[str, ...] | None:
    """The ``kind`` enum of a device registry contract document."""
    schema = data.get("schema") or [{}]
    props = (schema[0].get("properties") if isinstance(schema[0], dict) else None) or []
    for prop in props:
        if isinstance(prop, dict) and prop.get("name") == "kind":
            enum = prop.get("enum") or []
            return tuple(str(e.get("value")) for e in enum if isinstance(e, dict))
    return None


def _folder_issues(folder: Path) -> list[LintIssue]:
    """The checks across a folder's contracts (device kinds), on the parsed documents."""
    readings: list[tuple[str, str, str]] = []
    devices: tuple[str, tuple[str, ...]] | None = None
    for path in sorted(folder.glob(f"*{CONTRACT_SUFFIX}")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue  # E001 already
        if not isinstance(data, dict):
            continue
        dataset = path.name.removesuffix(CONTRACT_SUFFIX)
        kind = _custom(data).get("deviceKind")
        if isinstance(kind, str):
            readings.append((str(path), dataset, kind))
        kinds = _kinds_of(data) if dataset == DEVICES_DATASET else None
        if kinds is not None:
            devices = (str(path), kinds)
    return device_kind_issues(readings, devices)


def lint_paths(paths: Iterable[Path], vocab: Vocabulary | None = None) -> list[LintIssue]:
    """Lint every contract file under the given files or folders (a folder's contracts are
    also checked against each other: E064-E066)."""
    paths = list(paths)
    issues: list[LintIssue] = []
    for path in _expand(paths):
        issues.extend(lint_file(path, vocab))
    for folder in (p for p in paths if p.is_dir()):
        issues.extend(_folder_issues(folder))
    return issues
