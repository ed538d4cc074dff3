"""The aiohttp internals the HTTP listener relies on are where it expects them, the gateway
refuses to start otherwise, and the allowed aiohttp range is the tested series (issue 12)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway import aiohttp_internals
from gateway.aiohttp_internals import TESTED_SERIES, AiohttpChangedError, check

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_aiohttp_has_every_internal_used() -> None:
    check()


def test_the_allowed_range_the_pin_and_the_installed_release_are_the_tested_series() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [d for d in project["project"]["dependencies"] if d.startswith("aiohttp")]
    assert wanted == [f"aiohttp>={TESTED_SERIES},<3.15"]
    pins = [
        line.strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("aiohttp==")
    ]
    assert len(pins) == 1, pins
    assert pins[0].startswith(f"aiohttp=={TESTED_SERIES}."), pins
    assert pins[0] == f"aiohttp=={aiohttp.__version__}"
    listener_doc = (ROOT / "gateway" / "listener.py").read_text()
    assert f"tested {TESTED_SERIES} series" in listener_doc
    assert "gateway/aiohttp_internals.py" in listener_doc


@pytest.mark.parametrize(
    ("owner", "attribute", "value", "named"),
    [
        (
            RequestHandler,
            "__slots__",
            tuple(s for s in RequestHandler.__slots__ if s != "_current_request"),
            "_current_request",
        ),
        (
            RequestHandler,
            "__slots__",
            tuple(s for s in RequestHandler.__slots__ if s != "_messages"),
            "_messages",
        ),
        (_ErrInfo, "__annotations__", {"status": int}, "_ErrInfo.message"),
        (AbstractStreamWriter, "__annotations__", {}, "AbstractStreamWriter.output_size"),
    ],
)
def test_a_moved_internal_is_named_and_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, owner: type, attribute: str, value: object, named: str
) -> None:
    monkeypatch.setattr(owner, attribute, value)  # what an aiohttp release could do
    with pytest.raises(AiohttpChangedError, match=named) as caught:
        aiohttp_internals.check()
    assert "constraints.txt" in str(caught.value)
