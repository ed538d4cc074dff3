"""``energylake run``: the gateway and ``process --follow`` as children; SIGTERM drains both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.gateway.conftest import free_port, make_book, request, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_supervises_gateway_and_processor_and_sigterm_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens = make_book(data / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    env |= {
        "ENERGYLAKE_GATEWAY_HTTP_PORT": str(port),
        "ENERGYLAKE_GATEWAY_MIN_FREE_BYTES": "0",
        "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
        "ENERGYLAKE_FOLLOW_INTERVAL_S": "0.5",
    }
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from cli.app import main; main()",
                "run",
                "--no-mqtt",
                "--data-dir",
                str(data),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
        )
    try:

        def healthy() -> bool:
            try:
                return request(port, "GET", "/healthz").status == 200
            except OSError:
                return False

        assert wait_for(healthy, 30, 0.1), log_path.read_text()
        body = orjson.dumps(
            {"device_id": "m-1", "seq": 1, "ts": 1_795_000_000_000_000, "readings": {}}
        )
        reply = request(
            port,
            "POST",
            "/v1/telemetry",
            body,
            {"Authorization": f"Bearer {tokens['m-1']}", "Content-Type": "application/json"},
        )
        assert reply.status == 202
        # the processor (the other child) takes the closed segment out of closed/
        assert wait_for(lambda: "batch 1" in log_path.read_text(), 60, 0.2), log_path.read_text()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()
        assert time.monotonic() - started < 60
        text = log_path.read_text()
        assert "run: gateway exited with 0" in text
        assert "run: process exited with 0" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
