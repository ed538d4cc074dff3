"""The HTTP door: ``POST /v1/telemetry`` plus health, readiness, metrics and OpenAPI (aiohttp).

Order of checks, cheapest first, so hostile input costs little: draining (503), the
client address's budget of failed authentications (429, before the token is looked at),
bearer token (401), per-device rate (429), content type and encoding (415), landing
backpressure (503), declared length (413); only then ``100 Continue`` if the client asked
for it, and the body is read within ``http_body_timeout_s`` (408) with limits enforced
while it streams (413), parsed strictly (400), and every reading's claimed device, client
and branch compared with the token's (403, audited). Claims are echoed and audited
truncated, with the SHA-256 of the full value. Readings are landed one envelope each,
under the device's canonical topic, and the 202 is sent only after the group commit's
fsync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from prometheus_client import CONTENT_TYPE_LATEST

from audit.log import AuditLog, address_group
from gateway.aiohttp_internals import write_continue
from gateway.body import BodyError, BodyReader, BodyRules, parse_readings, shown
from gateway.books import BookWatcher
from gateway.commit import GroupCommitter
from gateway.config import GatewayConfig, canonical_topic
from gateway.identity import DeviceIdentity
from gateway.limits import MAX_ADDRESSES, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.openapi import openapi_document
from gateway.pressure import LandingMonitor
from landing.format import Envelope, LandingError

__all__ = ["PROBLEM_BASE", "HttpDeps", "build_app", "problem", "problem_body"]

log = logging.getLogger(__name__)

PROBLEM_BASE = "urn:energylake:gateway:problem:"
_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Content too large",
    415: "Unsupported media type",
    417: "Expectation failed",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    503: "Service unavailable",
}
_JSON_TYPES = {"application/json": False, "application/x-ndjson": True}
_CLAIMS = ("client_id", "branch_id")
_READ_CHUNK = 64 * 1024


def problem_body(status: int, reason: str, detail: str) -> bytes:
    """The JSON of an RFC 9457 problem document; ``reason`` is the stable code."""
    return orjson.dumps(
        {
            "type": PROBLEM_BASE + reason,
            "title": _TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
            "reason": reason,
        }
    )


def problem(
    status: int,
    reason: str,
    detail: str,
    *,
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem response; ``reason`` is the stable code clients can match."""
    if retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(retry_after_s)}
    return web.Response(
        status=status,
        body=problem_body(status, reason, detail),
        content_type="application/problem+json",
        headers=headers,
    )


@dataclass(slots=True)
class HttpDeps:
    """What the HTTP handlers use, owned by the gateway service."""

    config: GatewayConfig
    committer: GroupCommitter
    monitor: LandingMonitor
    metrics: GatewayMetrics
    audit: AuditLog
    books: BookWatcher
    draining: Callable[[], bool]
    mqtt_ready: Callable[[], bool | None]  # None when MQTT is disabled


class _Handlers:
    def __init__(self, deps: HttpDeps) -> None:
        self.d = deps
        cfg = deps.config
        self.rules = BodyRules(
            max_body_bytes=cfg.http_max_body_bytes,
            max_decompressed_bytes=cfg.http_max_decompressed_bytes,
            max_depth=cfg.http_max_depth,
            max_readings=cfg.http_max_readings,
        )
        self.limiter = RateLimiter(cfg.http_rate_per_s, cfg.http_burst)
        self.failures = RateLimiter(
            cfg.http_auth_failures_per_s, cfg.http_auth_failure_burst, MAX_ADDRESSES
        )
        self.body_timeout_s = cfg.http_body_timeout_s
        self.openapi = orjson.dumps(openapi_document(cfg))

    def _reject(
        self, status: int, reason: str, detail: str, *, retry_after_s: int | None = None
    ) -> web.Response:
        self.d.metrics.rejected.labels("http", reason).inc()
        return problem(status, reason, detail, retry_after_s=retry_after_s)

    def _unavailable(self) -> web.Response | None:
        if self.d.draining():
            return self._reject(
                503, "shutting_down", "the gateway is shutting down", retry_after_s=1
            )
        pressure = self.d.monitor.current
        failure = self.d.committer.failure
        if failure is not None:
            return self._reject(
                503, "landing_failed", failure, retry_after_s=self.d.config.retry_after_s
            )
        if pressure.reason is not None:
            return self._reject(
                503, pressure.reason, pressure.detail, retry_after_s=self.d.config.retry_after_s
            )
        return None

    def _authenticate(
        self, request: web.Request, address: str, now: float
    ) -> DeviceIdentity | web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        remote = request.remote
        book = self.d.books.book
        if scheme.lower() != "bearer" or not token.strip():
            self.failures.take(address, now)
            self.d.audit.record("http_unauthorized", remote=remote, detail="no bearer token")
            return self._reject(401, "missing_token", "send Authorization: Bearer <token>")
        device = book.authenticate(token.strip()) if book is not None else None
        if device is None:
            self.failures.take(address, now)
            self.d.audit.record(
                "http_unauthorized", remote=remote, detail="unknown or revoked token"
            )
            return self._reject(401, "bad_token", "the token is unknown or revoked")
        return device

    def _address_limited(self, request: web.Request, address: str, wait_s: float) -> web.Response:
        self.d.audit.record(
            "http_address_limited",
            remote=request.remote,
            detail=f"{address} failed authentication too often; refused before authentication",
        )
        return self._reject(
            429,
            "address_rate_limited",
            "too many failed authentications from this address; retry later",
            retry_after_s=max(1, int(wait_s + 0.999)),
        )

    def _forbidden(
        self, device: DeviceIdentity, readings: Sequence[dict[str, Any]], remote: str | None
    ) -> web.Response | None:
        for index, reading in enumerate(readings):
            claimed = reading.get("device_id")
            wrong: list[str] = []
            if claimed is not None and claimed != device.device_id:
                wrong.append(f"device_id {shown(claimed)}")
            for key in _CLAIMS:
                value = reading.get(key)
                if value is not None and value != getattr(device, key):
                    wrong.append(f"{key} {shown(value)}")
            if wrong:
                detail = (
                    f"reading {index} claims {', '.join(wrong)}; the token belongs to device "
                    f"{device.device_id!r} of {device.client_id}/{device.branch_id}"
                )
                self.d.audit.record(
                    "http_forbidden",
                    device_id=device.device_id,
                    client_id=device.client_id,
                    branch_id=device.branch_id,
                    remote=remote,
                    detail=detail,
                )
                return self._reject(403, "identity_mismatch", detail)
        return None

    async def telemetry(self, request: web.Request) -> web.StreamResponse:
        refused = self._unavailable() if self.d.draining() else None
        if refused is not None:
            return refused
        now = time.monotonic()
        address = address_group(request.remote)
        wait_s = self.failures.wait(address, now)
        if wait_s > 0:
            return self._address_limited(request, address, wait_s)
        auth = self._authenticate(request, address, now)
        if isinstance(auth, web.Response):
            return auth
        device = auth
        wait_s = self.limiter.take(device.device_id, now)
        if wait_s > 0:
            return self._reject(
                429,
                "rate_limited",
                f"device {device.device_id!r} is over {self.d.config.http_rate_per_s:g} "
                "requests per second",
                retry_after_s=max(1, int(wait_s + 0.999)),
            )
        media = request.content_type.lower()
        if media not in _JSON_TYPES:
            return self._reject(
                415, "unsupported_media_type", "use application/json or application/x-ndjson"
            )
        charset = request.charset
        if charset is not None and charset.lower().replace("-", "") != "utf8":
            return self._reject(415, "unsupported_charset", "the body must be UTF-8")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return self._reject(
                415, "unsupported_encoding", "Content-Encoding may be gzip or identity"
            )
        refused = self._unavailable()
        if refused is not None:
            return refused
        length = request.content_length
        if length is not None and length > self.rules.max_body_bytes:
            return self._reject(
                413, "body_too_large", f"body exceeds {self.rules.max_body_bytes} bytes"
            )
        if request.headers.get("Expect") is not None and request.version >= HttpVersion11:
            # _expect let only 100-continue through; sent now that every check passed
            await write_continue(request)
        reader = BodyReader(self.rules, gzip=encoding == "gzip")
        try:
            content = request.content
            # no timer when the whole body is already here (the common, small request)
            async with asyncio.timeout(None if content.is_eof() else self.body_timeout_s):
                async for chunk in content.iter_chunked(_READ_CHUNK):
                    reader.feed(chunk)
            body = reader.finish()
            readings = parse_readings(body, self.rules, ndjson=_JSON_TYPES[media])
        except BodyError as exc:
            return self._reject(exc.status, exc.reason, exc.detail)
        except TimeoutError:
            response = self._reject(
                408, "body_timeout", f"the body did not arrive within {self.body_timeout_s:g} s"
            )
            response.force_close()
            return response
        except web.RequestPayloadError as exc:
            why = str(exc).split("\n", 1)[0][:200]
            response = self._reject(400, "bad_body_framing", f"the body's framing is broken: {why}")
            response.force_close()  # what follows on this connection cannot be trusted
            return response
        forbidden = self._forbidden(device, readings, request.remote)
        if forbidden is not None:
            return forbidden
        topic = canonical_topic(device.client_id, device.branch_id, device.device_id)
        now_us = time.time_ns() // 1000
        envelopes = [
            Envelope(now_us, "http", topic, device.device_id, _payload(reading))
            for reading in readings
        ]
        try:
            await self._commit(envelopes)
        except LandingError as exc:
            return self._reject(
                503, "landing_failed", str(exc), retry_after_s=self.d.config.retry_after_s
            )
        self.d.metrics.accepted.labels("http").inc(len(envelopes))
        return web.Response(
            status=202,
            body=orjson.dumps({"accepted": len(envelopes), "device_id": device.device_id}),
            content_type="application/json",
        )

    async def _commit(self, envelopes: list[Envelope]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self.d.metrics.inflight.inc(len(envelopes))
        try:
            self.d.committer.submit(envelopes, settle)
            await asyncio.shield(future)
        finally:
            self.d.metrics.inflight.dec(len(envelopes))

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        checks: dict[str, Any] = {}
        pressure = self.d.monitor.current
        failure = self.d.committer.failure
        checks["landing"] = {
            "ok": failure is None and pressure.reason is None,
            "reason": "landing_failed" if failure else pressure.reason,
            "detail": failure or pressure.detail,
        }
        book = self.d.books.book
        checks["identity_book"] = {
            "ok": book is not None,
            "devices": len(book) if book is not None else 0,
            "detail": self.d.books.error or "",
        }
        mqtt = self.d.mqtt_ready()
        if mqtt is not None:
            checks["mqtt"] = {"ok": mqtt}
        checks["draining"] = {"ok": not self.d.draining()}
        ready = all(c["ok"] for c in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        self.d.metrics.inflight.set(self.d.committer.inflight)
        return web.Response(
            body=self.d.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi_json(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.openapi, content_type="application/json")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    elif isinstance(error, LandingError):
        future.set_exception(error)
    else:
        future.set_exception(LandingError(f"landing log: {error}"))


def _payload(reading: dict[str, Any]) -> bytes:
    """One reading as landed: re-serialised without the client/branch claims just checked
    (the canonical topic carries them; the decoder would call them unknown fields)."""
    if any(key in reading for key in _CLAIMS):
        reading = {k: v for k, v in reading.items() if k not in _CLAIMS}
    return orjson.dumps(reading)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect``: ``100-continue`` is answered by the handler once the request passed
    every check that needs no body (authentication first); anything else is 417."""
    if request.headers.get("Expect", "").lower() == "100-continue":
        return None
    return problem(417, "expectation_failed", "only Expect: 100-continue is understood")


@web.middleware
async def _never_crash(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        reason = exc.reason.lower().replace(" ", "_")
        allow = exc.headers.get("Allow")
        return problem(
            exc.status,
            reason,
            exc.text or exc.reason,
            headers={"Allow": allow} if allow is not None else None,
        )
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return problem(500, "internal_error", "unexpected error; it was logged")
    return response


def build_app(deps: HttpDeps) -> web.Application:
    """The aiohttp application (routes, problem+json errors, body limits)."""
    handlers = _Handlers(deps)
    app = web.Application(
        middlewares=[_never_crash], client_max_size=deps.config.http_max_body_bytes
    )
    app.router.add_post("/v1/telemetry", handlers.telemetry, expect_handler=_expect)
    for path, get in (
        ("/healthz", handlers.healthz),
        ("/readyz", handlers.readyz),
        ("/metrics", handlers.metrics),
        ("/openapi.json", handlers.openapi_json),
    ):
        app.router.add_get(path, get, expect_handler=_expect)
    return app
