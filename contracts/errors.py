"""The one exception hierarchy of energylake.

Every error names the thing it is about and, where there is one, the next step.
Other packages raise these (``contracts`` imports nothing of ours, so the
hierarchy lives here, at the bottom of the import graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "EXIT_BUSY",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "BusyError",
    "ConfigError",
    "ContractInvalidError",
    "ContractNotFoundError",
    "ContractViolation",
    "EnergylakeError",
    "LintIssue",
    "PolicyError",
    "UnknownPurposeError",
]


# The process exit codes of the CLI (docs/ERRORS.md): each error class carries its own
# (3 is the gateway's: it cannot listen on its address, gateway/service.py).
EXIT_ERROR = 1  # an operation failed: the message names what and the next step
EXIT_CONFIG = 2  # a setting, option, argument or file is wrong: fix it; a retry will not help
EXIT_BUSY = 4  # another process holds the lock: wait for it or stop it, then run again


class EnergylakeError(Exception):
    """Base of every error energylake raises on purpose."""

    exit_code: ClassVar[int] = 1


class ConfigError(EnergylakeError, ValueError):
    """A setting, option, argument or input file has a value energylake cannot work with.

    ``setting`` names it as the operator sets it (a setting name, a ``--option``, a file);
    ``value`` is what was given (``None`` when it is missing). Also a ``ValueError``: the
    callers that checked values before this hierarchy existed still catch it.
    """

    exit_code: ClassVar[int] = EXIT_CONFIG

    def __init__(self, message: str, *, setting: str, value: Any = None) -> None:
        self.setting = setting
        self.value = value
        super().__init__(message)


class BusyError(EnergylakeError):
    """Another process holds what this one needs (``what``: the lock file or the id held)."""

    exit_code: ClassVar[int] = EXIT_BUSY

    def __init__(self, message: str, *, what: str) -> None:
        self.what = what
        super().__init__(message)


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

    exit_code: ClassVar[int] = EXIT_CONFIG

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

    exit_code: ClassVar[int] = EXIT_CONFIG

    def __init__(self, dataset: str, known: list[str]) -> None:
        self.dataset = dataset
        self.known = known
        super().__init__(f"no contract for dataset {dataset!r}; known: {', '.join(known)}")


class UnknownPurposeError(EnergylakeError):
    """A purpose that is not in the vocabulary (contracts/vocabulary.yaml)."""

    exit_code: ClassVar[int] = EXIT_CONFIG

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
