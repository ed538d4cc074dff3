"""Validate emitted events against the official OpenLineage JSON Schemas, offline.

Every file of the vendored schemas (``tests/fixtures/openlineage/``, see its README for the
version and licence) and our own facet schemas go into one
``referencing.Registry`` keyed by ``$id``; each event is validated against OpenLineage.json
and each facet against the schema its ``_schemaURL`` names (wrapped under its key).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "fixtures" / "openlineage"
OURS = ROOT / "lineage" / "schemas"


def _load() -> tuple[Registry, dict[str, dict[str, Any]]]:
    if not (SPEC / "OpenLineage.json").is_file():
        pytest.fail(f"the OpenLineage spec is missing at {SPEC}")
    by_file: dict[str, dict[str, Any]] = {}
    resources = []
    for path in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]:
        by_file[path.name] = json.loads(path.read_text())
    for path in sorted(OURS.glob("*.json")):
        by_file[path.name] = json.loads(path.read_text())
    for doc in by_file.values():
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources), by_file


REGISTRY, SCHEMAS = _load()


class EventValidator:
    """Validates events; remembers which facet schemas it used."""

    def __init__(self) -> None:
        self.checked: set[str] = set()
        fmt = Draft202012Validator.FORMAT_CHECKER
        self.event = Draft202012Validator(
            SCHEMAS["OpenLineage.json"], registry=REGISTRY, format_checker=fmt
        )
        self.facet = {
            name: Draft202012Validator(doc, registry=REGISTRY, format_checker=fmt)
            for name, doc in SCHEMAS.items()
            if name != "OpenLineage.json"
        }

    def _facets(self, facets: dict[str, Any] | None) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from (facets or {}).items()

    def validate(self, event: dict[str, Any]) -> None:
        self.event.validate(event)
        groups = [event["run"].get("facets"), event["job"].get("facets")]
        for d in [*event.get("inputs", []), *event.get("outputs", [])]:
            groups += [d.get("facets"), d.get("inputFacets"), d.get("outputFacets")]
        for group in groups:
            for key, facet in self._facets(group):
                url = facet["_schemaURL"]
                name = url.split("#")[0].rsplit("/", 1)[-1]
                validator = self.facet.get(name)
                if validator is None:
                    continue  # a facet the client adds itself (tags): the event schema covers it
                (prop,) = SCHEMAS[name]["properties"]
                assert prop == key, f"facet {key!r} should be named {prop!r}"
                validator.validate({key: facet})
                self.checked.add(key)


def read_events(lineage_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((lineage_dir / "events").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


@pytest.fixture
def validator() -> EventValidator:
    return EventValidator()
