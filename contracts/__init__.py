"""Data contracts (ODCS v3) and the code that loads, lints and applies them.

This package imports nothing else of energylake; everything else may import it.
"""

from contracts.errors import (
    ContractInvalidError,
    ContractNotFoundError,
    ContractViolation,
    EnergylakeError,
    LintIssue,
    PolicyError,
    UnknownPurposeError,
)
from contracts.lint import lint_file, lint_paths
from contracts.model import Contract, Field, Protection, QualityRule, Retention
from contracts.policy import Action, FieldPlan, PurposePlan, TenantKey, apply_plan, plan_for
from contracts.registry import CONTRACTS_DIR, ContractRegistry, load_contract, load_registry
from contracts.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    "CONTRACTS_DIR",
    "Action",
    "Contract",
    "ContractInvalidError",
    "ContractNotFoundError",
    "ContractRegistry",
    "ContractViolation",
    "EnergylakeError",
    "Field",
    "FieldPlan",
    "LintIssue",
    "PolicyError",
    "Protection",
    "PurposePlan",
    "QualityRule",
    "Retention",
    "TenantKey",
    "UnknownPurposeError",
    "Vocabulary",
    "apply_plan",
    "lint_file",
    "lint_paths",
    "load_contract",
    "load_registry",
    "load_vocabulary",
    "plan_for",
]
