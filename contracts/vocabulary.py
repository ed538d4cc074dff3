"""The shared vocabulary of contracts: purposes, classifications, protections, units, codes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["VOCABULARY_PATH", "Vocabulary", "load_vocabulary"]

VOCABULARY_PATH = Path(__file__).with_name("vocabulary.yaml")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What a contract may say. Loaded once from ``vocabulary.yaml``."""

    version: str
    purposes: dict[str, dict[str, str]]
    classifications: dict[str, dict[str, Any]]
    protections: dict[str, dict[str, Any]]
    units: dict[str, dict[str, Any]]
    reason_codes: dict[str, str]
    quality_flags: dict[str, str]
    quality_rules: dict[str, str]
    subjects: dict[str, dict[str, str]]
    identifiers: dict[str, dict[str, str]]

    @property
    def purpose_ids(self) -> list[str]:
        return list(self.purposes)

    def requires_protection(self, classification: str) -> bool:
        return bool(self.classifications[classification]["requires_protection"])

    def unit_suffix(self, unit: str) -> str | None:
        suffix = self.units[unit]["suffix"]
        return None if suffix is None else str(suffix)


def _parse(raw: dict[str, Any]) -> Vocabulary:
    return Vocabulary(
        version=str(raw["version"]),
        purposes=dict(raw["purposes"]),
        classifications=dict(raw["classifications"]),
        protections=dict(raw["protections"]),
        units={str(k): dict(v) for k, v in raw["units"].items()},
        reason_codes=dict(raw["reason_codes"]),
        quality_flags=dict(raw["quality_flags"]),
        quality_rules=dict(raw["quality_rules"]),
        subjects={str(k): dict(v) for k, v in (raw.get("subjects") or {}).items()},
        identifiers={str(k): dict(v) for k, v in (raw.get("identifiers") or {}).items()},
    )


@cache
def _load_cached(path: Path) -> Vocabulary:
    with path.open(encoding="utf-8") as handle:
        # libyaml when present, as for the contracts (contracts/registry.py).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return _parse(yaml.load(handle, Loader=loader))  # noqa: S506 - a safe loader


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    """Load the vocabulary (the packaged one unless a path is given)."""
    return _load_cached((path or VOCABULARY_PATH).resolve())
