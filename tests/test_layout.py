"""The import direction of docs/ARCHITECTURE.md, checked on the source (arrows point one way)."""

from __future__ import annotations

import ast
import subprocess
import sys
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
    "cli",
    "landing",
    "durable",
    "devstack",
    "audit",
    "batch",
    "retention",
    "reporting",
}
# package -> the packages of ours it may import (docs/ARCHITECTURE.md, "Packages and
# import direction"; the
# simulator is a test-data source that writes segments through the landing log).
ALLOWED = {
    "contracts": set(),
    "durable": set(),
    "audit": {"contracts", "durable"},
    "lake": {"contracts", "durable"},
    "lineage": {"contracts", "durable"},
    "gateway": {"contracts", "durable", "landing", "audit"},
    "transforms": {"contracts", "lake", "lineage", "landing", "batch"},
    "analytics": {"contracts", "durable", "lake", "lineage", "audit", "batch"},
    "simulator": {"contracts", "landing"},
    "landing": {"contracts", "durable"},
    "batch": {"contracts", "durable", "lake", "lineage"},
    "retention": {"contracts", "durable", "lake", "lineage", "audit", "landing"},
    "reporting": {"contracts", "durable", "lake", "lineage", "audit", "analytics"},
    "pipelines": OURS - {"cli", "devstack"},
    "devstack": OURS - {"cli"},
    "cli": OURS,
}
NO_BEAM = {
    "contracts",
    "durable",
    "lake",
    "analytics",
    "gateway",
    "lineage",
    "simulator",
    "cli",
    "landing",
    "devstack",
    "audit",
    "batch",
    "retention",
    "reporting",
}


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


# Tests mirror the packages. A test module tests the one package of ours it imports together
# only with what that package may itself import (ALLOWED) and with the inputs below; it lives
# in tests/<package>/ (the pipelines package's tests in tests/pipeline/).
# - What any test may import to build its data without that deciding what it tests (SHARED):
#   contracts (the vocabulary), the simulator (test data) and the landing log (landing: the
#   gateway writes it, the pipeline reads it). So a module that imports only these
#   (tests/contracts/, the simulator's own tests, the landing log's) is not placed by this rule.
# - A module's imports count with those of the test helpers it imports (tests.*, followed),
#   not with the fixtures its folder's conftest.py offers implicitly: otherwise a conftest
#   would make every module beside it look like a test of whatever the conftest imports.
# - A module that reaches pipelines (the composition) or cli drives a whole batch: it is an
#   integration test of the part it checks and may live with that part (tests/quality,
#   tests/lineage, tests/e2e, ...). A module that needs two parts that do not import each other
#   (gateway and transforms) is not placed by this rule either.
SHARED = {"contracts", "simulator", "landing", "devstack"}
TEST_HOME = {package: package for package in ALLOWED} | {"pipelines": "pipeline"}


def _used(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Our packages a test module imports, itself and through the tests.* helpers it imports."""
    seen = set() if seen is None else seen
    seen.add(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in OURS:
                found.add(top)
            elif top == "tests":
                helper = ROOT.joinpath(*module.split("."))
                for candidate in (helper.with_suffix(".py"), helper / "__init__.py"):
                    if candidate.is_file() and candidate not in seen:
                        found |= _used(candidate, seen)
    return found


def _tested_package(path: Path) -> str | None:
    """The package a test module tests by the rule above, or None when the rule does not say."""
    used = _used(path)
    if used & {"pipelines", "cli"}:  # the composition, or the command line above it
        return "pipelines"
    subjects = [
        package
        for package in sorted(used & set(ALLOWED) - SHARED)
        if used - {package} <= ALLOWED[package] | SHARED
    ]
    if not subjects:
        return None  # only what every test builds on, or two parts that do not import each other
    (package,) = subjects  # the import direction has no cycle: at most one fits
    return package


def test_tests_mirror_the_packages() -> None:
    """A test module of one package lives in tests/<package>/ (the rule and its limits are in
    the comment above SHARED): a decode or series test, which imports transforms and
    what transforms may import, is in tests/transforms/, not in tests/pipeline/; and each
    module in tests/transforms/ or tests/pipeline/ tests that package (a module in
    tests/pipeline/ reaches pipelines; one in tests/transforms/ tests transforms alone)."""
    misplaced = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        where = path.relative_to(ROOT / "tests").parts
        tested = _tested_package(path)
        home = TEST_HOME.get(tested or "")
        if tested is not None and tested != "pipelines" and where[0] != home:
            misplaced.append(f"{path.relative_to(ROOT)} tests {tested}/: move it to tests/{home}/")
        elif where[0] in ("transforms", "pipeline") and home != where[0]:
            misplaced.append(
                f"{path.relative_to(ROOT)} is in tests/{where[0]}/ but tests "
                f"{tested or 'no single package'}: move it to the folder of what it tests"
            )
    assert not misplaced, "\n".join(misplaced)


def test_a_data_folder_does_not_shadow_our_packages(tmp_path: Path) -> None:
    """A process started in a data folder (its working directory first on sys.path) holding
    landing/, lake/ and audit/ folders still imports our packages, not those folders."""
    for name in ("landing", "lake", "audit", "lineage"):
        (tmp_path / name).mkdir()
    code = "import landing, lake, lineage; print(landing.__file__, lake.__file__, lineage.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(ROOT / name / "__init__.py") for name in ("landing", "lake", "lineage")]


def test_every_module_is_on_the_map() -> None:
    """docs/ARCHITECTURE.md names every module of ours (its map says what each one owns)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for package in sorted(ALLOWED)
        for path in sorted((ROOT / package).rglob("*.py"))
        if f"`{path.relative_to(ROOT)}`" not in text
    ]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"


def test_benchmarks_do_not_import_the_tests() -> None:
    """bench/ and tests/ share the development stack (devstack/), not each other's code."""
    for path in sorted((ROOT / "bench").rglob("*.py")):
        assert "tests" not in _imports(path), f"{path.relative_to(ROOT)} imports tests"
