"""Hostile bodies: each refused in under a second, memory bounded, the gateway unharmed."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import orjson
import psutil
import pytest

from tests.gateway.conftest import make_book, running_gateway

pytestmark = pytest.mark.integration

RSS_GROWTH_BOUND = 128 * 1024 * 1024  # over the whole barrage


def _bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes, made without holding them in memory."""
    squash = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [squash.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, squash.flush()])


@pytest.mark.slow
def test_hostile_bodies_are_refused_fast_without_memory_growth(tmp_path: Path) -> None:
    tokens = make_book(tmp_path / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    # limits above the hostile sizes, so deep nesting and the long array reach the parser
    limits = {
        "ENERGYLAKE_GATEWAY_HTTP_MAX_BODY_BYTES": str(8 << 20),
        "ENERGYLAKE_GATEWAY_HTTP_MAX_DECOMPRESSED_BYTES": str(8 << 20),
        "ENERGYLAKE_GATEWAY_HTTP_RATE_PER_S": "1000",
        "ENERGYLAKE_GATEWAY_HTTP_BURST": "1000",
    }
    token = tokens["m-1"]
    bomb = _bomb(1 << 30)  # 1 GiB inflated, about 1 MB on the wire
    cases = [
        ("10 MB body", b"[" + b"0," * (5 << 20) + b"0]", {}, 413, "body_too_large", False),
        ("10 MB chunked", b" " * (10 << 20), {}, 413, "body_too_large", True),
        ("gzip bomb", bomb, {"Content-Encoding": "gzip"}, 413, "body_too_large", False),
        ("nested 1e6", b"[" * 1_000_000 + b"]" * 1_000_000, {}, 400, "too_deep", False),
        ("objects 1e6 deep", b'{"a":' * 1_000_000 + b"}" * 1_000_000, {}, 400, "too_deep", False),
        ("array 1e6", b"[" + b"0," * 999_999 + b"0]", {}, 400, "too_many_readings", False),
        (
            "1e6 readings ndjson",
            b"{}\n" * 1_000_000,
            {"Content-Type": "application/x-ndjson"},
            400,
            "too_many_readings",
            False,
        ),
    ]
    with running_gateway(tmp_path, limits, ["--no-mqtt"]) as gw:
        proc = psutil.Process(gw.proc.pid)
        ok = orjson.dumps({"device_id": "m-1", "seq": 0, "ts": 1, "readings": {}})
        assert gw.post(ok, token).status == 202
        before = proc.memory_info().rss
        for name, body, headers, status, reason, chunked in cases:
            started = time.monotonic()
            reply = gw.post(body, token, headers=headers, chunked=chunked)
            elapsed = time.monotonic() - started
            assert reply.status == status, (name, reply.body[:300])
            if reason:
                assert reply.json()["reason"] == reason, name
            assert elapsed < 1.0, f"{name} took {elapsed:.2f} s"
            assert proc.is_running()
        grown = proc.memory_info().rss - before
        assert grown < RSS_GROWTH_BOUND, f"RSS grew by {grown / 2**20:.0f} MiB"
        # still healthy and still accepting
        assert gw.get("/healthz").status == 200
        assert gw.post(ok.replace(b'"seq":0', b'"seq":1'), token).status == 202
        assert gw.terminate() == 0
