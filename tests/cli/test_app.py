"""The shape of the command line: one catch of ``EnergylakeError`` at the root (one line on
stderr, the error's exit code), bugs keep their traceback, one way of registering commands,
and no module-level mutable state in ``cli/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from cli.app import app
from contracts import ContractNotFoundError, EnergylakeError, UnknownPurposeError

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "cli"
ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))


def _stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_an_energylake_error_is_one_line_on_stderr_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The root, not the command, turns the error into a line and a code: a subclass's
    own ``exit_code`` is the process's."""
    assert EnergylakeError.exit_code == 1
    monkeypatch.setattr(UnknownPurposeError, "exit_code", 7)
    result = CliRunner().invoke(app, ["contracts", "show", "contacts", "--purpose", "marketing"])
    assert result.exit_code == 7, result.output
    (line,) = _stderr_lines(result)
    assert line.startswith("error: unknown purpose 'marketing'; the privacy policy's purposes")
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit)  # handled: no traceback, no exception


def test_an_error_exits_with_its_class_code() -> None:
    """A missing contract is a file to fix (exit 2, docs/ERRORS.md); the base default is 1."""
    assert EnergylakeError.exit_code == 1
    result = CliRunner().invoke(app, ["contracts", "show", "invoices"])
    assert result.exit_code == ContractNotFoundError.exit_code == 2
    (line,) = _stderr_lines(result)
    assert line.startswith("error: no contract for dataset 'invoices'; known: ")


def test_the_console_script_prints_one_line_and_exits_with_the_code(tmp_path: Path) -> None:
    """The same through the installed ``energylake`` in a process of its own."""
    done = subprocess.run(
        [ENERGYLAKE, "contracts", "show", "invoices"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == ContractNotFoundError.exit_code
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: no contract for dataset 'invoices'")
    assert "Traceback" not in done.stderr


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    """Anything that is not an EnergylakeError is not swallowed into a line."""
    args = ["--clients", "1", "--branches", "1", "--cadence", "900", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "cli", "simulate", *args, "--out", "/dev/null/sim"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "NotADirectoryError" in done.stderr


def _command_modules() -> list[Path]:
    return sorted(
        p
        for p in CLI.glob("*.py")
        if p.stem
        not in {
            "__init__",
            "__main__",
            "app",
            "common",
            "render",
            "demo_steps",
            "demo_reports",
            "demo_vendors",
        }
    )


def test_every_command_module_registers_the_same_way() -> None:
    """Each command module exposes ``app = typer.Typer(...)`` and no ``register``; the root
    adds every one of them, and every command of theirs answers under the root."""
    import importlib

    modules = [importlib.import_module(f"cli.{p.stem}") for p in _command_modules()]
    assert len(modules) >= 10
    root_commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for module in modules:
        assert isinstance(module.app, typer.Typer), module.__name__
        assert not hasattr(module, "register"), f"{module.__name__} has a register()"
        name = module.app.info.name
        if isinstance(name, str):  # a command group
            assert name in root_commands, f"{module.__name__}: group {name} not under the root"
        else:  # top-level commands join the root
            for info in module.app.registered_commands:
                command = info.name or (info.callback.__name__ if info.callback else "")
                assert command in root_commands, f"{module.__name__}: {command} not at the root"


_IMMUTABLE_CALLS = {"typer.Typer", "re.compile", "logging.getLogger", "frozenset", "tuple"}
_MUTATORS = {"append", "extend", "insert", "pop", "clear", "update", "add", "setdefault", "remove"}


def _mutated_names(trees: list[ast.Module]) -> set[str]:
    """Names some code in ``cli/`` mutates: ``NAME[...] = ...`` or ``NAME.append(...)``."""
    found = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                target = node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _MUTATORS
            ):
                target = node.func.value
            else:
                continue
            if isinstance(target, ast.Name):
                found.add(target.id)
    return found


def _module_level_state(path: Path, tree: ast.Module, mutated: set[str]) -> list[str]:
    """Module-level names bound to an object made by a call (other than the allowed ones),
    or to a list, dict or set that code mutates; and any ``global`` statement."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        value = node.value
        display = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
        made = isinstance(value, ast.Call) and ast.unparse(value.func) not in _IMMUTABLE_CALLS
        if made or (isinstance(value, display) and names & mutated):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:60]}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{path.name}:{node.lineno} global {', '.join(node.names)}")
    return found


def test_no_module_level_mutable_cli_state() -> None:
    """Settings and the console travel in ``ctx.obj``; nothing assigned at import is
    mutated later (a shared Console, a dict of options, a list of flags)."""
    paths = sorted(CLI.glob("*.py"))
    trees = [ast.parse(p.read_text(), filename=str(p)) for p in paths]
    mutated = _mutated_names(trees)
    found = []
    for path, tree in zip(paths, trees, strict=True):
        found += _module_level_state(path, tree, mutated)
    assert not found, "\n".join(found)
