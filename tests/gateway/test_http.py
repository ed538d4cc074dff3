"""The gateway's HTTP door over real sockets: statuses, problem JSON, landing, audit, metrics."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from gateway.identity import DeviceIdentity, IdentityBook, write_identity_book
from tests.gateway.conftest import (
    HOST,
    GatewayProc,
    landed,
    make_book,
    raw,
    running_gateway,
    wait_for,
)

pytestmark = pytest.mark.integration

DEVICES = [(f"m-{i}", "c-1", "b-1" if i < 5 else "b-2") for i in range(10)]


@dataclass
class Env:
    gw: GatewayProc
    tokens: dict[str, str]
    book: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("gw-http")
    book = data / "gateway" / "identities.json"
    tokens = make_book(book, DEVICES)
    settings = {
        "ENERGYLAKE_GATEWAY_HTTP_MAX_READINGS": "50",
        "ENERGYLAKE_GATEWAY_HTTP_MAX_BODY_BYTES": "65536",
        "ENERGYLAKE_GATEWAY_HTTP_MAX_DECOMPRESSED_BYTES": "131072",
        "ENERGYLAKE_GATEWAY_HTTP_RATE_PER_S": "2",
        "ENERGYLAKE_GATEWAY_HTTP_BURST": "30",
        "ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.5",
        "ENERGYLAKE_GATEWAY_AUDIT_REPEAT_WINDOW_S": "1",
    }
    with running_gateway(data, settings, ["--no-mqtt"]) as gw:
        yield Env(gw, tokens, book)


def reading(device: str, seq: int, **extra: object) -> dict[str, object]:
    return {
        "device_id": device,
        "seq": seq,
        "ts": 1_795_000_000_000_000 + seq,
        "readings": {"power_kw": 1.5, "voltage_l1_v": 231.0},
        **extra,
    }


def assert_problem(reply: object, status: int, reason: str) -> dict[str, object]:
    assert reply.status == status, reply.body  # type: ignore[attr-defined]
    assert reply.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    doc: dict[str, object] = reply.json()  # type: ignore[attr-defined]
    assert doc["status"] == status
    assert doc["reason"] == reason
    assert doc["type"] == f"urn:energylake:gateway:problem:{reason}"
    assert doc["title"]
    assert doc["detail"]
    return doc


@pytest.mark.slow
def test_202_only_after_the_readings_are_readable_from_the_landing_log(env: Env) -> None:
    token = env.tokens["m-0"]
    one = env.gw.post(orjson.dumps(reading("m-0", 1)), token)
    assert one.status == 202
    assert one.json() == {"accepted": 1, "device_id": "m-0"}
    # read back at once: the 202 came after fsync, so the record is in a segment now
    got = [e for e in landed(env.gw.landing) if e.identity == "m-0"]
    assert [orjson.loads(e.payload)["seq"] for e in got] == [1]
    assert got[0].source == "http"
    assert got[0].topic == "emaas/v1/c-1/b-1/m-0/telemetry"

    array = env.gw.post(orjson.dumps([reading("m-0", s) for s in (2, 3, 4)]), token)
    assert array.status == 202
    assert array.json()["accepted"] == 3
    nd = b"\n".join(orjson.dumps(reading("m-0", s)) for s in (5, 6)) + b"\n"
    ndjson = env.gw.post(nd, token, headers={"Content-Type": "application/x-ndjson"})
    assert ndjson.status == 202
    assert ndjson.json()["accepted"] == 2
    body = gzip.compress(orjson.dumps([reading("m-0", 7, client_id="c-1", branch_id="b-1")]))
    zipped = env.gw.post(body, token, headers={"Content-Encoding": "gzip"})
    assert zipped.status == 202
    assert zipped.json()["accepted"] == 1
    payloads = [orjson.loads(e.payload) for e in landed(env.gw.landing) if e.identity == "m-0"]
    assert sorted(p["seq"] for p in payloads) == [1, 2, 3, 4, 5, 6, 7]
    # the checked claims are not landed (the topic carries them)
    assert all("client_id" not in p and "branch_id" not in p for p in payloads)
    # segments roll by time so the processor sees them
    assert wait_for(lambda: any((env.gw.landing / "closed").glob("*.seg")), 5)


BAD_400 = [
    (b'{"device_id": "m-1", "seq": 1', "malformed_json"),
    (b'{"device_id": "m-\xff\xfe1", "seq": 1}', "bad_utf8"),
    (b'{"device_id": "m-1", "seq": 1, "readings": {"power_kw": NaN}}', "non_finite"),
    (b'{"device_id": "m-1", "seq": 1, "readings": {"power_kw": -Infinity}}', "non_finite"),
    (b'{"device_id": "m-1", "seq": 1, "seq": 2}', "duplicate_key"),
    (b'{"a":' * 30 + b"1" + b"}" * 30, "too_deep"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"),
    (b"[1, 2]", "not_a_reading"),
    (b'"text"', "not_a_reading"),
    (b"[]", "no_readings"),
    (b"", "malformed_json"),
    (orjson.dumps([reading("m-1", s) for s in range(51)]), "too_many_readings"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_400, ids=[r for _, r in BAD_400])
def test_400_malformed_bodies_get_a_stable_reason(env: Env, body: bytes, reason: str) -> None:
    assert_problem(env.gw.post(body, env.tokens["m-1"]), 400, reason)


def test_a_long_duplicate_key_is_echoed_cut_with_its_hash(env: Env) -> None:
    key = "k" * 30_000  # the whole key used to come back (a 500 KB key: a 500,034-char detail)
    body = b'{"' + key.encode() + b'": 1, "' + key.encode() + b'": 2}'
    reply = env.gw.post(body, env.tokens["m-1"])
    doc = assert_problem(reply, 400, "duplicate_key")
    detail = str(doc["detail"])
    assert len(detail) < 300, len(detail)
    assert hashlib.sha256(key.encode()).hexdigest() in detail  # the full key stays identifiable
    assert "30000 chars" in detail
    assert len(reply.body) < 600


def test_400_bad_gzip_and_ndjson_line(env: Env) -> None:
    token = env.tokens["m-1"]
    bad_gzip = env.gw.post(b"\x1f\x8bnot gzip", token, headers={"Content-Encoding": "gzip"})
    assert_problem(bad_gzip, 400, "bad_gzip")
    nd = orjson.dumps(reading("m-1", 1)) + b"\n{broken\n"
    bad_line = env.gw.post(nd, token, headers={"Content-Type": "application/x-ndjson"})
    assert_problem(bad_line, 400, "malformed_json")


def test_401_missing_bad_and_revoked_tokens_are_audited(env: Env) -> None:
    body = orjson.dumps(reading("m-2", 1))
    assert_problem(env.gw.post(body, None), 401, "missing_token")
    assert_problem(
        env.gw.post(body, None, headers={"Authorization": "Basic eDp5"}), 401, "missing_token"
    )
    assert_problem(env.gw.post(body, "not-a-token"), 401, "bad_token")
    # revoke m-7 in the book: the gateway reloads it without a restart
    token = env.tokens["m-7"]
    assert env.gw.post(orjson.dumps(reading("m-7", 1)), token).status == 202
    book = IdentityBook.load(env.book)
    devices = [
        DeviceIdentity(d.device_id, d.client_id, d.branch_id, d.kind, d.http_token_sha256, True)
        if d.device_id == "m-7"
        else d
        for d in book.devices()
    ]
    write_identity_book(env.book, devices)
    assert wait_for(
        lambda: env.gw.post(orjson.dumps(reading("m-7", 2)), token).status == 401, 5, 0.2
    )
    assert_problem(env.gw.post(orjson.dumps(reading("m-7", 3)), token), 401, "bad_token")
    events = _audit(env.gw)
    assert any(e["event"] == "http_unauthorized" and e["remote"] for e in events)


def _forbidden(gw: GatewayProc) -> list[dict[str, object]]:
    return [e for e in _audit(gw) if e["event"] == "http_forbidden" and e["device_id"] == "m-3"]


def _audit(gw: GatewayProc) -> list[dict[str, object]]:
    folder = gw.data_dir / "audit" / "gateway"
    return [
        orjson.loads(line) for f in folder.glob("*.jsonl") for line in f.read_bytes().splitlines()
    ]


def test_403_other_device_or_branch_is_refused_and_audited(env: Env) -> None:
    token = env.tokens["m-3"]  # c-1 / b-1
    other_device = env.gw.post(orjson.dumps([reading("m-3", 1), reading("m-6", 1)]), token)
    assert_problem(other_device, 403, "identity_mismatch")
    other_branch = env.gw.post(orjson.dumps(reading("m-3", 2, branch_id="b-2")), token)
    assert_problem(other_branch, 403, "identity_mismatch")
    other_client = env.gw.post(orjson.dumps(reading("m-3", 3, client_id="c-9")), token)
    assert_problem(other_client, 403, "identity_mismatch")
    # nothing of a refused request is landed, not even its good reading
    assert not [e for e in landed(env.gw.landing) if e.identity == "m-3"]
    # the first is written at once; the two repeats (same device and address) are folded
    # into one record with their count when the window (1 s here) ends
    forbidden = [e for e in _audit(env.gw) if e["event"] == "http_forbidden"]
    assert len(forbidden) == 1
    assert wait_for(lambda: len(_forbidden(env.gw)) == 2, 5, 0.1)
    folded = _forbidden(env.gw)[1]
    assert folded["count"] == 2
    assert "c-9" in str(folded["detail"])  # the last one's detail
    assert folded["first_ts"] <= folded["last_ts"]
    first = forbidden[0]
    assert first["component"] == "gateway"
    assert (first["device_id"], first["client_id"], first["branch_id"]) == ("m-3", "c-1", "b-1")
    assert "m-6" in str(first["detail"])
    assert set(first) == {
        "ts",
        "component",
        "event",
        "device_id",
        "client_id",
        "branch_id",
        "remote",
        "detail",
        "count",
        "seq",  # the audit chain's (docs/AUDIT.md)
        "prev",
    }
    assert first["count"] == 1


def test_413_by_declared_length_and_while_streaming(env: Env) -> None:
    token = env.tokens["m-4"]
    big = b"[" + b",".join([orjson.dumps(reading("m-4", 1))] * 1000) + b"]"
    assert len(big) > 65536
    assert_problem(env.gw.post(big, token), 413, "body_too_large")
    assert_problem(env.gw.post(big, token, chunked=True), 413, "body_too_large")
    bomb = gzip.compress(b" " * 2_000_000)  # small on the wire, 2 MB inflated
    assert len(bomb) < 65536
    assert_problem(
        env.gw.post(bomb, token, headers={"Content-Encoding": "gzip"}), 413, "body_too_large"
    )


def test_415_content_type_charset_and_encoding(env: Env) -> None:
    token, body = env.tokens["m-4"], orjson.dumps(reading("m-4", 9))
    assert_problem(
        env.gw.post(body, token, headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        env.gw.post(body, token, headers={"Content-Type": "application/json; charset=latin-1"}),
        415,
        "unsupported_charset",
    )
    assert_problem(
        env.gw.post(body, token, headers={"Content-Encoding": "br"}), 415, "unsupported_encoding"
    )
    ok = env.gw.post(body, token, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 202


def test_429_over_the_device_rate_with_retry_after(env: Env) -> None:
    token = env.tokens["m-5"]
    statuses = []
    for seq in range(40):  # burst 30, refill 2/s
        reply = env.gw.post(orjson.dumps(reading("m-5", seq)), token)
        statuses.append(reply.status)
        if reply.status == 429:
            assert_problem(reply, 429, "rate_limited")
            assert int(reply.headers["retry-after"]) >= 1
    assert statuses.count(202) >= 30
    assert statuses.count(429) >= 5
    # another device is not affected
    assert env.gw.post(orjson.dumps(reading("m-6", 1)), env.tokens["m-6"]).status == 202


def test_metrics_and_openapi_describe_the_service(env: Env) -> None:
    env.gw.post(orjson.dumps(reading("m-1", 100)), env.tokens["m-1"])
    env.gw.post(b"{", env.tokens["m-1"])
    text = env.gw.get("/metrics").body.decode()
    assert 'energylake_gateway_accepted_records_total{source="http"}' in text
    assert (
        'energylake_gateway_rejected_requests_total{reason="malformed_json",source="http"}' in text
    )
    for name in (
        "energylake_gateway_fsync_seconds_bucket",
        "energylake_gateway_landing_lag_bytes",
        "energylake_gateway_landing_lag_segments",
        "energylake_gateway_landing_oldest_closed_age_seconds",
        "energylake_gateway_inflight_records",
        "energylake_gateway_mqtt_connected",
    ):
        assert name in text
    accepted = float(text.split('accepted_records_total{source="http"} ')[1].split()[0])
    assert accepted >= 8
    doc = env.gw.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/v1/telemetry"]["post"]
    assert set(post["responses"]) == {
        "202",
        "400",
        "401",
        "403",
        "408",
        "413",
        "415",
        "417",
        "429",
        "431",
        "503",
    }
    reasons = set(doc["components"]["schemas"]["Problem"]["properties"]["reason"]["enum"])
    assert {"trailing_data", "address_rate_limited", "too_many_connections"} <= reasons
    assert {"application/json", "application/x-ndjson"} <= set(post["requestBody"]["content"])
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(doc["paths"])
    ready = env.gw.get("/readyz")
    assert ready.status == 200
    assert ready.json()["checks"]["identity_book"]["devices"] == 10


@pytest.mark.slow
def test_503_when_the_landing_disk_is_below_its_free_bound(tmp_path: Path) -> None:
    tokens = make_book(tmp_path / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    huge = str(1 << 60)  # more free bytes than any disk has
    with running_gateway(
        tmp_path, {"ENERGYLAKE_GATEWAY_MIN_FREE_BYTES": huge}, ["--no-mqtt"]
    ) as gw:
        reply = gw.post(orjson.dumps(reading("m-1", 1)), tokens["m-1"])
        assert_problem(reply, 503, "landing_disk_full")
        assert int(reply.headers["retry-after"]) >= 1
        assert gw.get("/readyz").status == 503
        assert gw.get("/healthz").status == 200
        assert not landed(gw.landing)
        assert gw.terminate() == 0


def test_sigterm_drains_closes_the_segment_and_exits_0(tmp_path: Path) -> None:
    tokens = make_book(tmp_path / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    with running_gateway(tmp_path, {"ENERGYLAKE_GATEWAY_ROLL_SECONDS": "60"}, ["--no-mqtt"]) as gw:
        for seq in range(5):
            assert gw.post(orjson.dumps(reading("m-1", seq)), tokens["m-1"]).status == 202
        assert list((gw.landing / "open").glob("*.seg"))
        started = time.monotonic()
        assert gw.terminate() == 0
        assert time.monotonic() - started < 10
    assert not list((gw.landing / "open").glob("*.seg"))
    closed = landed(gw.landing)
    assert sorted(orjson.loads(e.payload)["seq"] for e in closed) == [0, 1, 2, 3, 4]
    assert "gateway stopped" in gw.log()


# --- every byte of a body is read or the request refused (issue 12, point 1) -------------
def _seqs(gw: GatewayProc, device: str) -> list[int]:
    return sorted(
        orjson.loads(e.payload)["seq"] for e in landed(gw.landing) if e.identity == device
    )


def test_a_gzip_body_of_several_members_lands_every_reading_of_every_member(env: Env) -> None:
    token = env.tokens["m-8"]
    ndjson = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    a = gzip.compress(b"".join(orjson.dumps(reading("m-8", s)) + b"\n" for s in (1, 2)))
    b = gzip.compress(b"".join(orjson.dumps(reading("m-8", s)) + b"\n" for s in (3, 4, 5)))
    reply = env.gw.post(a + b, token, headers=ndjson)  # `cat a.gz b.gz`
    assert reply.status == 202, reply.body
    assert reply.json()["accepted"] == 5
    # one JSON array cut across two members, sent in chunks
    text = orjson.dumps([reading("m-8", s) for s in (6, 7, 8)])
    cut = len(text) // 2
    body = gzip.compress(text[:cut]) + gzip.compress(text[cut:])
    zipped = {"Content-Encoding": "gzip"}
    assert env.gw.post(body, token, headers=zipped, chunked=True).json()["accepted"] == 3
    assert _seqs(env.gw, "m-8") == [1, 2, 3, 4, 5, 6, 7, 8]


def test_bytes_after_the_gzip_member_or_the_json_are_refused_and_nothing_lands(
    env: Env,
) -> None:
    token = env.tokens["m-9"]
    zipped = {"Content-Encoding": "gzip"}
    member = gzip.compress(orjson.dumps(reading("m-9", 1)))
    garbage = env.gw.post(member + b"garbage", token, headers=zipped)
    assert "after gzip member 1" in str(assert_problem(garbage, 400, "bad_gzip")["detail"])
    truncated = env.gw.post(member + gzip.compress(b"{}")[:15], token, headers=zipped)
    assert_problem(truncated, 400, "bad_gzip")
    trailing = env.gw.post(orjson.dumps(reading("m-9", 2)) + b" garbage", token)
    assert_problem(trailing, 400, "trailing_data")
    assert _seqs(env.gw, "m-9") == []


# --- parser-level errors are problem documents too; 405 carries Allow (point 13) ---------
PARSER_ERRORS = [
    (
        "header too large",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "header_too_large",
    ),
    (
        "too many headers",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "too_many_headers",
    ),
    (
        "Content-Length and Transfer-Encoding",
        b"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "ambiguous_length",
    ),
    (
        "bad Content-Length",
        b"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Length: 12abc\r\n\r\n",
        400,
        "bad_content_length",
    ),
    (
        "two Content-Lengths",
        b"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
        400,
        "bad_content_length",
    ),
    (
        "bad chunk size",
        b"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
        400,
        "bad_chunked_body",
    ),
    ("bad request line", b"G@T / HTTP/1.1\r\nHost: gw\r\n\r\n", 400, "bad_request_line"),
]


@pytest.mark.parametrize(
    ("data", "status", "reason"), [c[1:] for c in PARSER_ERRORS], ids=[c[0] for c in PARSER_ERRORS]
)
def test_parser_errors_are_problem_json(env: Env, data: bytes, status: int, reason: str) -> None:
    doc = assert_problem(raw(env.gw.port, data), status, reason)
    assert len(str(doc["detail"])) < 300  # the rule broken, not the client's bytes echoed
    assert env.gw.get("/healthz").status == 200


def test_405_carries_allow_and_404_is_problem_json(env: Env) -> None:
    wrong = raw(env.gw.port, b"GET /v1/telemetry HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert_problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    put = raw(env.gw.port, b"PUT /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
    assert_problem(put, 405, "method_not_allowed")
    assert set(put.headers["allow"].split(",")) == {"GET", "HEAD"}
    assert_problem(raw(env.gw.port, b"GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n"), 404, "not_found")


# --- Expect: 100-continue only after authentication (point 11) ---------------------------
def _head(device: str, token: str | None, length: int, expect: str = "100-continue") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\nExpect: {expect}\r\n\r\n"
    ).encode()


def _first_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return data.split(b"\r\n", 1)[0]


def test_100_continue_comes_only_after_authentication(env: Env) -> None:
    body = orjson.dumps(reading("m-6", 50))
    for token in (None, "not-a-token"):
        with socket.create_connection((HOST, env.gw.port), timeout=5) as sock:
            sock.sendall(_head("m-6", token, len(body)))  # headers only, body held back
            assert _first_line(sock) == b"HTTP/1.1 401 Unauthorized"
    with socket.create_connection((HOST, env.gw.port), timeout=5) as sock:
        sock.sendall(_head("m-6", env.tokens["m-6"], len(body)))
        assert _first_line(sock) == b"HTTP/1.1 100 Continue"
        sock.sendall(body)
        rest = b""
        while b"HTTP/1.1 202" not in rest:
            part = sock.recv(4096)
            assert part, rest
            rest += part
    assert 50 in _seqs(env.gw, "m-6")
    with socket.create_connection((HOST, env.gw.port), timeout=5) as sock:
        sock.sendall(_head("m-6", env.tokens["m-6"], len(body), expect="magic"))
        assert _first_line(sock) == b"HTTP/1.1 417 Expectation Failed"


def test_broken_chunked_framing_mid_body_is_a_400_problem(env: Env) -> None:
    head = (
        "POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {env.tokens['m-2']}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, env.gw.port), timeout=5) as sock:
        sock.sendall(head + b'5\r\n[{"a"\r\n')  # the handler is reading the body now
        time.sleep(0.3)
        sock.sendall(b"zz\r\n:1}]\r\n0\r\n\r\n")  # not a chunk size
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"application/problem+json" in answer
    assert b'"reason":"bad_body_framing"' in answer


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    """The first ``count`` responses on ``sock`` (each with a Content-Length body)."""
    data = b""
    out: list[bytes] = []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            end = head_end + 4 + length
            if len(data) >= end:
                out.append(data[:end])
                data = data[end:]
                continue
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return out


def test_a_bad_request_pipelined_behind_a_complete_body_does_not_spoil_it(env: Env) -> None:
    body = orjson.dumps(reading("m-5", 70))
    head = (
        "POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {env.tokens['m-5']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    bad = b"POST /v1/telemetry HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n"
    with socket.create_connection((HOST, env.gw.port), timeout=5) as sock:
        sock.sendall(head + body[:10])  # the handler is reading the body now
        time.sleep(0.3)
        sock.sendall(body[10:] + bad)  # the body completes; a broken request follows it
        answers = _answers(sock, 2)
    assert len(answers) == 2, answers
    assert answers[0].startswith(b"HTTP/1.1 202"), answers[0][:300]
    assert answers[1].split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answers[1][:300]
    assert b'"reason":"bad_content_length"' in answers[1]
    assert 70 in _seqs(env.gw, "m-5")
