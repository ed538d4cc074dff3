"""The import direction of docs/ARCHITECTURE.md, checked on the source (arrows point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {
    "contracts",
    "transforms",
    "pipelines",
    "lineage",
    "gateway",
    "lake",
    "analytics",
    "simulator",
}
# package -> the packages of ours it may import (docs/ARCHITECTURE.md, "Packages and
# import direction"; the
# simulator is a test-data source that uses contracts and, later, the landing log).
ALLOWED = {
    "contracts": set(),
    "lake": {"contracts"},
    "lineage": {"contracts"},
    "gateway": {"contracts"},
    "transforms": {"contracts", "lake", "lineage"},
    "analytics": {"contracts", "lake", "lineage"},
    "simulator": {"contracts", "gateway"},
    "pipelines": OURS,
}
NO_BEAM = {"contracts", "lake", "analytics", "gateway", "lineage", "simulator"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        imported = _imports(path)
        wrong = (imported & OURS) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
        if package in NO_BEAM:
            assert "apache_beam" not in imported, f"{path.relative_to(ROOT)} imports Beam"


def test_layout_of_the_brief() -> None:
    for name in (
        "pipelines",
        "transforms",
        "contracts",
        "lineage",
        "infra",
        "tests",
        "docs",
        "gateway",
        "lake",
        "analytics",
    ):
        assert (ROOT / name).is_dir(), name
    for name in ("pyproject.toml", "README.md", "Makefile", ".ci/run"):
        assert (ROOT / name).is_file(), name
