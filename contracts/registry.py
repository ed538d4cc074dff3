"""Loading contracts: lint first, then build the typed model. An invalid contract never loads."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from open_data_contract_standard.model import OpenDataContractStandard

from contracts.errors import ContractInvalidError, ContractNotFoundError, LintIssue
from contracts.lint import CONTRACT_SUFFIX, DEVICES_DATASET, device_kind_issues, lint_data
from contracts.model import (
    Contract,
    Field,
    Protection,
    QualityRule,
    Retention,
    sentinel_values,
)
from contracts.vocabulary import Vocabulary, load_vocabulary

# libyaml when present (10x faster on our contracts), else the pure-Python safe loader.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["CONTRACTS_DIR", "ContractRegistry", "load_contract", "load_registry"]

CONTRACTS_DIR = Path(__file__).parent


def _custom(items: list[Any] | None) -> dict[str, Any]:
    return {item.property: item.value for item in items or [] if item.property is not None}


def _protection(raw: dict[str, Any] | None) -> Protection | None:
    if raw is None:
        return None
    return Protection(
        method=raw["method"],
        keep_last=int(raw.get("keep_last", 0)),
        step=float(raw["step"]) if "step" in raw else None,
        grain=raw.get("grain"),
        domain=raw.get("domain"),
    )


def _operator(rule: Any) -> dict[str, Any]:
    names = (
        "mustBe",
        "mustNotBe",
        "mustBeGreaterThan",
        "mustBeGreaterOrEqualTo",
        "mustBeLessThan",
        "mustBeLessOrEqualTo",
        "mustBeBetween",
        "mustNotBeBetween",
    )
    return {name: getattr(rule, name) for name in names if getattr(rule, name) is not None}


def _rule(rule: Any, field: str | None) -> QualityRule:
    impl = rule.implementation if isinstance(rule.implementation, dict) else {}
    return QualityRule(
        name=rule.name,
        severity=rule.severity,
        description=rule.description or "",
        dimension=rule.dimension,
        field=field,
        metric=rule.metric,
        arguments=dict(rule.arguments or {}),
        operator=_operator(rule),
        engine=rule.engine,
        implementation=dict(impl),
    )


def _build(path: Path, data: dict[str, Any]) -> Contract:
    odcs = OpenDataContractStandard(**data)
    obj = (odcs.schema_ or [])[0]
    fields: list[Field] = []
    rules: list[QualityRule] = [_rule(r, None) for r in obj.quality or []]
    for prop in obj.properties or []:
        custom = _custom(prop.customProperties)
        options = prop.logicalTypeOptions or {}
        fields.append(
            Field(
                name=str(prop.name),
                description=prop.description or "",
                logical_type=str(prop.logicalType),
                physical_type=str(prop.physicalType),
                required=bool(prop.required),
                classification=str(prop.classification),
                purposes=frozenset(custom.get("purposes") or []),
                protection=_protection(custom.get("protection")),
                unit=custom.get("unit"),
                minimum=options.get("minimum")
                if prop.logicalType in ("number", "integer")
                else None,
                maximum=options.get("maximum")
                if prop.logicalType in ("number", "integer")
                else None,
                allowed_values=tuple(e.value for e in prop.enum) if prop.enum else None,
                pattern=options.get("pattern"),
                max_length=options.get("maxLength"),
                primary_key_position=prop.primaryKeyPosition if prop.primaryKey else None,
                partition_position=prop.partitionKeyPosition if prop.partitioned else None,
                counter=bool(custom.get("counter", False)),
                rated_by=custom.get("ratedBy"),
                sentinels=sentinel_values(str(custom["sentinel"])) if "sentinel" in custom else (),
                subject=custom.get("subject"),
                identifies=custom.get("identifies"),
                free_text=bool(custom.get("freeText", False)),
            )
        )
        rules.extend(_rule(r, prop.name) for r in prop.quality or [])
    contract_custom = _custom(odcs.customProperties)
    retention = contract_custom["retention"]
    extras = {k: v for k, v in contract_custom.items() if k != "retention"}
    return Contract(
        id=str(odcs.id),
        version=str(odcs.version),
        dataset=str(obj.name),
        path=path,
        purpose=(odcs.description.purpose if odcs.description else None) or "",
        domain=odcs.domain or "",
        fields=tuple(fields),
        retention=Retention(
            hot_days=int(retention["hotDays"]),
            archive_days=int(retention["archiveDays"]),
            then=retention["then"],
            basis=str(retention["basis"]),
        ),
        quality=tuple(rules),
        extras=extras,
    )


def load_contract(path: Path, vocab: Vocabulary | None = None) -> Contract:
    """Lint and load one contract; raises ContractInvalidError listing every issue."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}" if where is not None else "(root)"
        problem = str(getattr(exc, "problem", None) or exc)
        issue = LintIssue(str(path), at, "E001", f"not valid YAML: {problem}")
        raise ContractInvalidError(str(path), [issue]) from exc
    issues = lint_data(str(path), data, vocab or load_vocabulary())
    if issues:
        raise ContractInvalidError(str(path), issues)
    return _build(path, data)


def _readings_by_kind(contracts: dict[str, Contract]) -> dict[str, str]:
    """Device kind -> readings dataset, from every contract that names a ``deviceKind``.

    Ordered as the device registry's ``kind`` enum lists the kinds (by dataset name when the
    folder has no device registry contract). Raises ContractInvalidError when the two
    disagree (lint codes E064-E066, contracts.lint.device_kind_issues).
    """
    readings = [
        (str(c.path), c.dataset, c.device_kind)
        for c in contracts.values()
        if c.device_kind is not None
    ]
    devices = contracts.get(DEVICES_DATASET)
    allowed = None
    if devices is not None and "kind" in devices.field_names:
        values = devices.field("kind").allowed_values
        allowed = None if values is None else tuple(str(v) for v in values)
    issues = device_kind_issues(
        readings, None if devices is None or allowed is None else (str(devices.path), allowed)
    )
    if issues:
        raise ContractInvalidError(issues[0].file, issues)
    order = {kind: i for i, kind in enumerate(allowed or ())}
    ordered = sorted(readings, key=lambda r: (order.get(r[2], 0), r[1]))
    return {kind: dataset for _, dataset, kind in ordered}


@dataclass(frozen=True, slots=True)
class ContractRegistry:
    """Every contract of a folder, by dataset name, with the vocabulary they use.

    A *readings dataset* is one whose contract names the device kind it holds the readings
    of (``customProperties.deviceKind``): adding a kind of device is adding a contract.
    """

    contracts: dict[str, Contract]
    vocabulary: Vocabulary
    # device kind -> readings dataset; derived from ``contracts`` (see _readings_by_kind)
    dataset_of_kind: dict[str, str] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_of_kind", _readings_by_kind(self.contracts))

    @property
    def readings_datasets(self) -> tuple[str, ...]:
        """The readings datasets (every contract with a ``deviceKind``), in kind order."""
        return tuple(self.dataset_of_kind.values())

    def get(self, dataset: str) -> Contract:
        try:
            return self.contracts[dataset]
        except KeyError:
            raise ContractNotFoundError(dataset, sorted(self.contracts)) from None

    def __iter__(self) -> Any:
        return iter(self.contracts.values())

    @property
    def datasets(self) -> list[str]:
        return sorted(self.contracts)


@cache
def _load_registry_cached(directory: Path) -> ContractRegistry:
    vocab = load_vocabulary()
    contracts = {}
    for path in sorted(directory.glob(f"*{CONTRACT_SUFFIX}")):
        contract = load_contract(path, vocab)
        contracts[contract.dataset] = contract
    return ContractRegistry(contracts=contracts, vocabulary=vocab)


def load_registry(directory: Path | None = None) -> ContractRegistry:
    """Load every contract of a folder (the packaged contracts by default)."""
    return _load_registry_cached((directory or CONTRACTS_DIR).resolve())
