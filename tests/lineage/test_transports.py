"""Transports: http to a real local server, a dead endpoint never fails the job, the client's
OPENLINEAGE_DISABLED switch, and the gate's assertions travelling as an input facet."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from contracts import load_registry
from lineage import (
    Assertion,
    LineageConfig,
    LineageEmitter,
    SegmentInput,
    TableDataset,
)
from pipelines.process import process_once
from simulator.config import SimConfig
from tests.lineage.conftest import EventValidator, read_events
from tests.pipeline.conftest import FAULTS, land

LAKE = "file:///srv/lake"


class _Recorder(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"posts": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _one_run(emitter: LineageEmitter) -> str:
    meter = load_registry().get("meter_readings")
    run = emitter.batch("main", 7)
    run.start([SegmentInput("file:///srv/landing", "seg-1.seg")])
    run.attach_quality(
        "tenants/acme/meter_readings",
        [
            Assertion("not_null", True, column="ts", severity="error"),
            Assertion("range", False, column="voltage_l1_v", severity="warn", actual="912.0"),
        ],
        outcome="warned",
    )
    out = TableDataset(LAKE, "tenants/acme/meter_readings", 5, meter, "acme", 10, 2048, 1)
    run.complete([out], inputs=[TableDataset(LAKE, "tenants/acme/meter_readings", 4, meter)])
    return run.run_id


def test_http_transport_posts_to_a_marquez_style_endpoint(
    receiver: tuple[str, type[_Recorder]], validator: EventValidator
) -> None:
    url, handler = receiver
    emitter = LineageEmitter(LineageConfig(transport="http", url=url, api_key="s3cret"))
    run_id = _one_run(emitter)
    assert emitter.failures == 0
    assert [p[0] for p in handler.posts] == ["/api/v1/lineage", "/api/v1/lineage"]
    assert all(p[1]["Authorization"] == "Bearer s3cret" for p in handler.posts)
    events = [p[2] for p in handler.posts]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_id}
    for event in events:
        validator.validate(event)
    assert {"dataQualityAssertions", "energylake_run"} <= validator.checked
    complete = events[-1]
    checked = complete["inputs"][-1]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [a["success"] for a in checked] == [True, False]
    assert complete["run"]["facets"]["energylake_run"]["quality"] == "warned"


@pytest.mark.slow
def test_a_dead_endpoint_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emitter = LineageEmitter(LineageConfig(transport="http", url=f"http://127.0.0.1:{port}"))
    _one_run(emitter)
    assert emitter.failures == 2
    assert "LINEAGE_EMIT_FAILED" in caplog.text


def test_bad_quality_outcome_and_bad_config_are_clear_errors() -> None:
    emitter = LineageEmitter(LineageConfig(directory=Path("/nonexistent-unused")))
    with pytest.raises(ValueError, match="quality outcome"):
        emitter.batch("main", 1).attach_quality("t", [], outcome="great")
    from contracts.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a url") as caught:
        LineageConfig(transport="http")
    assert caught.value.setting == "lineage_url"
    with pytest.raises(ConfigError, match="not one of") as caught:
        LineageConfig(transport="kafka")  # type: ignore[arg-type]
    assert (caught.value.setting, caught.value.value) == ("lineage_transport", "kafka")


def test_disable_switch_emits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _, _ = land(tmp_path, SimConfig(clients=1, branches=1, days=1, seed=2, faults=FAULTS))
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert LineageEmitter.from_settings(settings).disabled
    report = process_once(settings)
    assert report is not None
    assert report.rows  # the batch ran and committed
    assert read_events(tmp_path / "lineage") == []
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    assert not LineageEmitter.from_settings(settings).disabled


def test_file_transport_failure_never_fails_the_batch(tmp_path: Path) -> None:
    settings, _, _ = land(tmp_path, SimConfig(clients=1, branches=1, days=1, seed=4, faults=FAULTS))
    (tmp_path / "lineage").write_text("a file where the lineage folder should be")
    report = process_once(settings)
    assert report is not None
    assert report.committed
