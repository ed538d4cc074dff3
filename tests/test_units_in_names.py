"""Units in names: no parameter of ours is a bare duration (``timeout``, ``wait``, ...: is it
seconds or milliseconds?), and settings say their unit the one way (``_s``, not ``_seconds``;
an old name survives only as a deprecated alias)."""

from __future__ import annotations

import ast
from pathlib import Path

from pipelines.settings import _RENAMED, Settings
from tests.test_layout import OURS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(OURS)  # every package of ours (the layout test's list)
BARE = {"timeout", "wait", "retry_after", "interval", "delay", "ttl", "period", "age"}


def test_no_parameter_is_a_bare_duration() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    args = node.args
                    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                        if arg.arg in BARE:
                            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {arg.arg}")
    assert not found, f"name the unit (timeout_s, wait_s, ...): {found}"


def test_settings_name_seconds_one_way() -> None:
    spelled_out = {n for n in Settings.model_fields if n.endswith("_seconds")}
    assert spelled_out == set(_RENAMED), "a duration setting ends in _s (or _ms)"
    assert all(new in Settings.model_fields for new in _RENAMED.values())
