"""Helpers for tests that run the real gateway: a gateway process on a free port, and an
HTTP client (used by tests/gateway, tests/e2e, tests/simulator and bench/ingest.py).

``start_gateway`` runs ``python -m cli gateway`` (the real command) as a
subprocess configured through ENERGYLAKE_* variables, waits for ``/healthz``, and the test
ends it by its PID (``terminate()`` sends SIGTERM and returns the exit code). Given an
``ssl_context`` (a client context trusting the test's CA) it talks HTTPS. ``raw`` sends
bytes exactly as given over a plain socket and parses the answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.stack import StackError, free_port
from gateway.identity import DeviceIdentity, token_digest, write_identity_book
from landing.format import Envelope
from landing.reader import read_segment

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
    timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    source: str | None = None,
) -> Reply:
    bind = (source, 0) if source is not None else None
    conn = (
        http.client.HTTPSConnection(
            HOST, port, timeout=timeout_s, context=ssl_context, source_address=bind
        )
        if ssl_context is not None
        else http.client.HTTPConnection(HOST, port, timeout=timeout_s, source_address=bind)
    )
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


def raw(port: int, data: bytes, *, timeout_s: float = 10.0) -> Reply:
    """Send ``data`` as is on a new connection; the answer parsed by http.client."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, response.read())


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
    ssl_context: ssl.SSLContext | None = None

    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    def post(self, body: bytes, token: str | None, **kw: Any) -> Reply:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        headers.update(kw.pop("headers", {}))
        return request(
            self.port, "POST", "/v1/telemetry", body, headers, ssl_context=self.ssl_context, **kw
        )

    def get(self, path: str) -> Reply:
        return request(self.port, "GET", path, ssl_context=self.ssl_context)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

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
    ssl_context: ssl.SSLContext | None = None,
    preexec_fn: Any = None,
) -> GatewayProc:
    """Start the gateway on ``port`` (a free one by default) and wait for ``/healthz``
    (over HTTPS with ``ssl_context``); ``preexec_fn`` runs in the child (e.g. setrlimit)."""
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
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "cli", "gateway", *(args or [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=data_dir,
            preexec_fn=preexec_fn,
        )
    gw = GatewayProc(proc, port, data_dir, log_path, ssl_context)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"gateway exited with {proc.returncode}:\n{gw.log()[-3000:]}")
        try:
            if gw.get("/healthz").status == 200:
                return gw
        except OSError:
            time.sleep(0.05)
    gw.kill()
    raise StackError(f"gateway did not answer /healthz:\n{gw.log()[-3000:]}")


@contextlib.contextmanager
def running_gateway(
    data_dir: Path,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    **kw: Any,
) -> Iterator[GatewayProc]:
    gw = start_gateway(data_dir, env, args, **kw)
    try:
        yield gw
    finally:
        gw.kill()


def wait_for(predicate: Any, timeout_s: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
