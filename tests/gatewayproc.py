"""Helpers for tests that run the real gateway: a gateway process on a free port, and an
HTTP client (used by tests/gateway, tests/e2e, tests/simulator and bench/ingest.py).

``start_gateway`` runs ``python -m pipelines.cli_gateway gateway`` (the real command) as a
subprocess configured through ENERGYLAKE_* variables, waits for ``/healthz``, and the test
ends it by its PID (``terminate()`` sends SIGTERM and returns the exit code).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.identity import DeviceIdentity, token_digest, write_identity_book
from gateway.landing import Envelope, read_segment
from pipelines.stack import free_port

HOST = "127.0.0.1"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
    timeout: float = 10.0,
) -> Reply:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if chunked and body is not None:
            conn.putrequest(method, path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            step = 64 * 1024
            try:
                for i in range(0, len(body), step):
                    part = body[i : i + step]
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed; read its answer
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def make_book(path: Path, devices: list[tuple[str, str, str]]) -> dict[str, str]:
    """Write an identity book for (device_id, client_id, branch_id); tokens by device."""
    tokens = {d: f"token-{d}-{os.urandom(8).hex()}" for d, _, _ in devices}
    write_identity_book(
        path,
        [DeviceIdentity(d, c, b, "meter", token_digest(tokens[d])) for d, c, b in devices],
    )
    return tokens


def landed(landing: Path) -> list[Envelope]:
    """Every record in the landing log, open and closed segments (read_segment each)."""
    out: list[Envelope] = []
    for folder in ("closed", "open"):
        for seg in sorted((landing / folder).glob("*.seg")):
            with contextlib.suppress(FileNotFoundError):
                out.extend(read_segment(seg).envelopes())
    return out


@dataclass
class GatewayProc:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    def post(self, body: bytes, token: str | None, **kw: Any) -> Reply:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        headers.update(kw.pop("headers", {}))
        return request(self.port, "POST", "/v1/telemetry", body, headers, **kw)

    def get(self, path: str) -> Reply:
        return request(self.port, "GET", path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_gateway(
    data_dir: Path,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    *,
    port: int | None = None,
) -> GatewayProc:
    """Start the gateway on ``port`` (a free one by default) and wait for ``/healthz``."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    full_env.update(
        {
            "ENERGYLAKE_DATA_DIR": str(data_dir),
            "ENERGYLAKE_GATEWAY_HTTP_PORT": str(port),
            "ENERGYLAKE_GATEWAY_MONITOR_INTERVAL_S": "0.2",
            "ENERGYLAKE_GATEWAY_MIN_FREE_BYTES": "0",
        }
    )
    full_env.update(env or {})
    log_path = data_dir / f"gateway-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli_gateway", "gateway", *(args or [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=data_dir,
        )
    gw = GatewayProc(proc, port, data_dir, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited with {proc.returncode}:\n{gw.log()[-3000:]}")
        try:
            if gw.get("/healthz").status == 200:
                return gw
        except OSError:
            time.sleep(0.05)
    gw.kill()
    pytest.fail(f"gateway did not answer /healthz:\n{gw.log()[-3000:]}")


@contextlib.contextmanager
def running_gateway(
    data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None
) -> Iterator[GatewayProc]:
    gw = start_gateway(data_dir, env, args)
    try:
        yield gw
    finally:
        gw.kill()


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
