"""The one exception hierarchy of energylake.

Every error names the thing it is about and, where there is one, the next step.
Other packages raise these (``contracts`` imports nothing of ours, so the
hierarchy lives here, at the bottom of the import graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ContractInvalidError",
    "ContractNotFoundError",
    "ContractViolation",
    "EnergylakeError",
    "LintIssue",
    "PolicyError",
    "UnknownPurposeError",
]


class EnergylakeError(Exception):
    """Base of every error energylake raises on purpose."""

    exit_code: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class LintIssue:
    """One finding of the contract linter: where, what, and a stable code."""

    file: str
    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message} [{self.code}]"


class ContractInvalidError(EnergylakeError):
    """A contract file does not pass the linter; carries every issue found."""

    def __init__(self, file: str, issues: list[LintIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(
            f"contract {file} is invalid ({len(issues)} issue(s)); "
            f"run `energylake contracts lint` for details:\n{lines}"
        )


class ContractNotFoundError(EnergylakeError):
    """No contract for the dataset asked for."""

    def __init__(self, dataset: str, known: list[str]) -> None:
        self.dataset = dataset
        self.known = known
        super().__init__(f"no contract for dataset {dataset!r}; known: {', '.join(known)}")


class UnknownPurposeError(EnergylakeError):
    """A purpose that is not in the vocabulary (contracts/vocabulary.yaml)."""

    def __init__(self, purpose: str, known: list[str]) -> None:
        self.purpose = purpose
        self.known = known
        super().__init__(
            f"unknown purpose {purpose!r}; the privacy policy's purposes are: {', '.join(known)}"
        )


class PolicyError(EnergylakeError):
    """A table cannot be shaped for a purpose (a column its contract does not describe)."""


class ContractViolation(EnergylakeError):  # noqa: N818 - the domain's own word
    """A value breaks its contract: which contract, which field, why, and the value."""

    def __init__(self, *, contract: str, field: str, reason: str, value: Any = None) -> None:
        self.contract = contract
        self.field = field
        self.reason = reason
        self.value = value
        super().__init__(f"{contract}: {field}: {reason} (value {value!r})")
