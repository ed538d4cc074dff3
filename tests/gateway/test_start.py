"""Start-up failures say their cause and end (issue 12, point 12): a port held by a real
socket, a half HTTPS configuration; and ``energylake run`` gives up on them with the reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gateway.conftest import HOST, free_port, make_book

pytestmark = pytest.mark.integration


def _env(data: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    return env | {
        "ENERGYLAKE_DATA_DIR": str(data),
        "ENERGYLAKE_GATEWAY_HTTP_PORT": str(port),
        "ENERGYLAKE_GATEWAY_MQTT_PORT": str(free_port()),  # nothing listens: never reached
        "ENERGYLAKE_GATEWAY_MIN_FREE_BYTES": "0",
        **extra,
    }


def _gateway_files(data: Path) -> None:
    make_book(data / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    creds = data / "gateway" / "gateway-mqtt.json"
    creds.write_text(json.dumps({"username": "energylake-gateway", "password": "pw"}))
    creds.chmod(0o600)


def _held_port() -> socket.socket:
    sock = socket.create_server((HOST, 0))  # a real listener holds the port
    return sock


def _run_gateway(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "gateway"],
        env=env,
        cwd=data,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_port_in_use_is_named_and_the_gateway_exits_3(tmp_path: Path) -> None:
    _gateway_files(tmp_path)
    with _held_port() as holder:
        port = holder.getsockname()[1]
        started = time.monotonic()
        done = _run_gateway(tmp_path, _env(tmp_path, port))  # MQTT on, as in production
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert f"cannot listen for HTTP on {HOST}:{port}: address already in use" in output
    assert "gateway_http_port" in output  # the next step
    assert "Traceback" not in output
    assert "cannot join thread" not in output
    assert time.monotonic() - started < 30
    # nothing was started, so nothing was written
    assert not list((tmp_path / "landing").glob("*/*.seg"))


@pytest.mark.slow
def test_half_an_https_configuration_is_refused_with_exit_2(tmp_path: Path) -> None:
    _gateway_files(tmp_path)
    cert = tmp_path / "server.crt"
    cert.write_text("not used")
    env = _env(tmp_path, free_port(), ENERGYLAKE_GATEWAY_HTTP_TLS_CERT=str(cert))
    done = _run_gateway(tmp_path, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gateway_http_tls_cert is set, gateway_http_tls_key is not" in done.stderr
    # both given, but not a certificate: named, exit 2 as well
    env["ENERGYLAKE_GATEWAY_HTTP_TLS_KEY"] = str(tmp_path / "missing.key")
    done = _run_gateway(tmp_path, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot load the HTTPS certificate {cert}" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _run(data: Path, env: dict[str, str], *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.app import main; main()",
            "run",
            "--no-mqtt",
            "--data-dir",
            str(data),
            *args,
        ],
        env=env,
        cwd=data,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.slow
def test_run_gives_up_on_a_port_in_use_and_on_a_bad_setting_and_says_why(
    tmp_path: Path,
) -> None:
    _gateway_files(tmp_path)
    with _held_port() as holder:
        port = holder.getsockname()[1]
        code, output, took = _run(tmp_path, _env(tmp_path, port), "--max-restarts", "1")
    assert code == 1, output
    assert output.count("address already in use") == 2, output  # the first start and one retry
    assert (
        "run: gateway cannot run (exit 3: it cannot listen on its HTTP port (in use or not "
        "permitted); see its message above); it failed 2 times in a row" in " ".join(output.split())
    ), output
    assert "stopping everything" in output
    assert "run: process exited with 0" in output  # the other child drained
    assert took < 60

    # a setting that is wrong is not retried at all
    env = _env(tmp_path, free_port(), ENERGYLAKE_GATEWAY_HTTP_TLS_KEY=str(tmp_path / "k"))
    code, output, took = _run(tmp_path, env)
    assert code == 1, output
    assert output.count("gateway_http_tls_key is set") == 1, output
    assert "restarting cannot fix it" in output
    assert took < 60
