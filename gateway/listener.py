"""The HTTP listener: our own accept loop in front of aiohttp's request handler.

aiohttp's ``TCPSite`` hands accepting to asyncio, which has two gaps at the edge: no cap on
connections, and on EMFILE (descriptors exhausted) CPython 3.11's accept loop goes on
calling ``accept()`` within the same wake-up, logging a traceback and scheduling a retry
for every failure (a probe logged 967,157 of them in 80 s). Here instead:

- at most ``max_connections`` connections are open (TLS handshakes included), and at most
  ``max_per_address`` from one client address (IPv6: one /64), so one client cannot hold
  every slot. One past a cap is accepted and at once answered ``503 too_many_connections``
  (or ``too_many_address_connections``; plain HTTP, a TLS connection is just closed), so it
  never holds a descriptor;
- EMFILE, ENFILE, ENOBUFS and ENOMEM stop accepting for ``RESOURCE_PAUSE_S``: the waiting
  connections stay in the kernel's backlog and are taken when descriptors come back;
- every repeated log line goes through ``LogThrottle`` (at most one per key and window,
  with the count of what was held back), and ``throttled_exception_handler`` does the
  same for the event loop's own error reports;
- each connection is served by aiohttp's ``RequestHandler`` (``_ProblemRequestHandler``)
  with its keep-alive timeout (which data does not extend, so it also bounds how long the
  headers of the next request may take) and with parser-level errors answered as RFC 9457
  problem documents like every other error.

Sockets are handed to asyncio with ``loop.connect_accepted_socket`` (TLS included).
The handler subclass relies on aiohttp internals (its base class, the current request and
the parser's queue, the writer's output count); every such use goes through
``gateway/aiohttp_internals.py``, which says why, names the tests that fail if one stops
working and is checked before the gateway starts. For that reason pyproject.toml allows
only the tested 3.14 series of aiohttp and constraints.txt pins the exact release.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import http_exceptions, web

from audit.log import address_group
from contracts.errors import EnergylakeError
from gateway import aiohttp_internals as internals
from gateway.http import problem_body

__all__ = [
    "RESOURCE_PAUSE_S",
    "HttpListener",
    "ListenError",
    "LogThrottle",
    "open_listen_socket",
    "parser_problem",
    "server_tls_context",
    "throttled_exception_handler",
]

log = logging.getLogger(__name__)

RESOURCE_PAUSE_S = 0.5
_LOG_WINDOW_S = 60.0
_ACCEPTS_PER_WAKEUP = 64
_BACKLOG = 512
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ListenError(EnergylakeError):
    """The HTTP listener cannot start: the address, the port or the TLS files."""

    def __init__(self, message: str, *, config: bool) -> None:
        super().__init__(message)
        self.config = config  # True: a setting or file is wrong; False: the port is taken


class LogThrottle:
    """At most one log line per key and window; the lines held back are counted."""

    def __init__(self, window_s: float = _LOG_WINDOW_S) -> None:
        self._window_s = window_s
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None: stay quiet. Else log now; the int is how many were held back since."""
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._next) > 1024:  # keys are a few fixed strings; never let them grow
            self._next.clear()
            self._held.clear()
        self._next[key] = now + self._window_s
        return self._held.pop(key, 0)


def throttled_exception_handler(
    throttle: LogThrottle,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler that reports each kind of error once per window."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        key = f"{context.get('message')}|{type(exc).__name__}"
        held = throttle(key)
        if held is None:
            return
        if held:
            context = {**context, "message": f"{context.get('message')} ({held} more held back)"}
        loop.default_exception_handler(context)

    return handle


# --- problem documents for what the parser refuses -----------------------------------------
def parser_problem(exc: BaseException | None, status: int) -> tuple[int, str, str]:
    """(status, reason, detail) for an error aiohttp's parser raised (the detail names the
    rule broken, never the client's bytes)."""
    if status != 400 or not isinstance(exc, http_exceptions.HttpProcessingError):
        return status, "internal_error" if status >= 500 else "bad_request", "request refused"
    first = str(exc.message).split(":\n", 1)[0].strip()
    if isinstance(exc, http_exceptions.LineTooLong):
        return 431, "header_too_large", "the request line or a header field is too long"
    if "Too many headers" in first:
        return 431, "too_many_headers", "the request has too many header fields"
    if "Transfer-Encoding" in first and "Content-Length" in first:
        return (
            400,
            "ambiguous_length",
            "Transfer-Encoding and Content-Length together are refused (RFC 9112 6.3)",
        )
    if "Content-Length" in first:
        return 400, "bad_content_length", first[:200]
    if "Transfer-Encoding" in first:
        return 400, "bad_transfer_encoding", first[:200]
    if "chunk" in first.lower():
        return 400, "bad_chunked_body", first[:200]
    if isinstance(exc, http_exceptions.BadStatusLine):
        return 400, "bad_request_line", first[:200]
    return 400, "bad_request", first[:200]


class _ProblemRequestHandler(internals.ProtocolBase):
    """aiohttp's connection handler, counted by the listener, with problem+json errors."""

    def __init__(
        self, listener: HttpListener, manager: web.Server, address: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=listener.loop, **kwargs)
        self._listener = listener
        self._address = address
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._listener.released(self._address)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.release()

    def data_received(self, data: bytes) -> None:
        # When a body's framing breaks in a later packet (a bad chunk size), aiohttp's C
        # parser drops that request's payload without an error and queues a 400 as if for
        # a next request: the handler reading the body would wait for its body timeout.
        # Hand the handler the parser's error at once instead (it answers 400 and closes),
        # but only while its body is incomplete: an error of a request pipelined behind a
        # complete body is that next request's own (answered after this one).
        reading = internals.current_request(self)
        if reading is None or reading.content.is_eof():
            super().data_received(data)
            return
        queued = internals.queued_messages(self)
        super().data_received(data)
        if internals.queued_messages(self) > queued and not reading.content.is_eof():
            error = internals.parse_error_queued(self)
            if error is not None:
                reading.content.set_exception(web.RequestPayloadError(error))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, reason, detail = parser_problem(exc, status)
        self._listener.refused(reason)
        held = self._listener.throttle(f"parser:{reason}")
        if held is not None:
            log.info(
                "HTTP request from %s refused: %s (%s)%s",
                request.remote,
                reason,
                detail,
                f"; {held} more held back" if held else "",
            )
        if internals.response_started(request):
            raise ConnectionError("a response was already started; closing the connection")
        response = web.Response(
            status=status,
            body=problem_body(status, reason, detail),
            content_type="application/problem+json",
        )
        response.force_close()
        return response


def _busy_response(retry_after_s: int, reason: str, detail: str) -> bytes:
    body = problem_body(503, reason, detail)
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after_s}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def open_listen_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket; ``ListenError`` names the address if not.
    An IPv6 ``host`` listens on IPv6; ``::`` on IPv4 as well (dual stack) where the
    system can."""
    ipv6 = ":" in host
    try:
        sock = socket.create_server(
            (host, port),
            family=socket.AF_INET6 if ipv6 else socket.AF_INET,
            backlog=_BACKLOG,
            dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6(),
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = {
            errno.EADDRINUSE: "another process holds the port: stop it or set gateway_http_port",
            errno.EACCES: "ports below 1024 need privileges: set gateway_http_port",
            errno.EADDRNOTAVAIL: "no interface has this address: set gateway_http_host",
        }.get(exc.errno or 0, "check gateway_http_host and gateway_http_port")
        raise ListenError(
            f"cannot listen for HTTP on {f'[{host}]' if ipv6 else host}:{port}: "
            f"{reason.lower()} ({hint})",
            config=False,
        ) from exc
    sock.setblocking(False)
    return sock


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The HTTPS server context: TLS 1.2 at least, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenError(
            f"cannot load the HTTPS certificate {cert} with key {key}: {exc} "
            "(check gateway_http_tls_cert and gateway_http_tls_key: PEM files, the key "
            "matching the certificate, readable by the gateway)",
            config=True,
        ) from exc
    return context


class HttpListener:
    """Accepts connections on ``sock`` and serves them with aiohttp's ``server``."""

    def __init__(
        self,
        server: web.Server,
        sock: socket.socket,
        *,
        max_connections: int,
        max_per_address: int | None = None,
        handshake_timeout_s: float,
        retry_after_s: int,
        handler_kwargs: dict[str, Any],
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[str], None] = lambda reason: None,
        throttle: LogThrottle | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.throttle = throttle or LogThrottle()
        self._server = server
        self._sock = sock
        self._max = max_connections
        self._max_per_address = max_per_address or max_connections
        self._per_address: dict[str, int] = {}  # open connections by address group
        self._handshake_timeout_s = handshake_timeout_s
        self._kwargs = handler_kwargs
        self._ssl = ssl_context
        self._on_refused = on_refused
        self._busy = _busy_response(
            retry_after_s,
            "too_many_connections",
            "the gateway serves as many connections as it may; retry later",
        )
        self._busy_address = _busy_response(
            retry_after_s,
            "too_many_address_connections",
            "this client address holds as many connections as one address may; "
            "close one or retry later",
        )
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume: asyncio.TimerHandle | None = None
        self._reading = False
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    def start(self) -> None:
        self._watch()

    def close(self) -> None:
        """Stop accepting and close the listening socket (served connections go on)."""
        self._closed = True
        self._unwatch()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._sock.close()

    def refused(self, reason: str) -> None:
        self._on_refused(reason)

    def released(self, address: str) -> None:
        self._open -= 1
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    def _watch(self) -> None:
        if not self._reading and not self._closed:
            self.loop.add_reader(self._sock.fileno(), self._accept)
            self._reading = True

    def _unwatch(self) -> None:
        if self._reading:
            self.loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn.setblocking(False)
            if self._open >= self._max:
                self._turn_away(conn, "too_many_connections", self._busy)
                continue
            address = address_group(_addr[0] if isinstance(_addr, tuple) else None)
            held = self._per_address.get(address, 0)
            if held >= self._max_per_address:
                self._turn_away(conn, "too_many_address_connections", self._busy_address)
                continue
            self._per_address[address] = held + 1
            self._open += 1
            task = self.loop.create_task(self._serve(conn, address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _accept_failed(self, exc: OSError) -> None:
        resource = exc.errno in _RESOURCE_ERRNOS
        self.refused("accept_failed")
        held = self.throttle(f"accept:{exc.errno}")
        if held is not None:
            log.error(
                "HTTP accept failed: %s; %s%s",
                exc,
                f"not accepting for {RESOURCE_PAUSE_S:g} s (raise the descriptor limit, "
                "ulimit -n, or lower gateway_http_max_connections)"
                if resource
                else "retrying",
                f"; {held} more held back" if held else "",
            )
        # pause either way: an error that repeats must not spin the loop
        self._unwatch()
        if self._resume is None:
            self._resume = self.loop.call_later(RESOURCE_PAUSE_S, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        self._watch()

    def _turn_away(self, conn: socket.socket, reason: str, answer: bytes) -> None:
        self.refused(reason)
        held = self.throttle(reason)
        if held is not None:
            log.warning(
                "HTTP connection cap reached (%s): turning connections away%s",
                f"{self._open} open of {self._max}"
                if reason == "too_many_connections"
                else f"{self._max_per_address} from one address",
                f"; {held} more held back" if held else "",
            )
        try:
            if self._ssl is None:
                conn.send(answer)
                conn.shutdown(socket.SHUT_WR)
                conn.recv(65536)  # what the client already sent: closing on it would reset
        except OSError:
            pass
        finally:
            conn.close()

    def _make_handler(self, address: str) -> _ProblemRequestHandler:
        return _ProblemRequestHandler(self, self._server, address, **self._kwargs)

    async def _serve(self, conn: socket.socket, address: str) -> None:
        handler = self._make_handler(address)
        try:
            await self.loop.connect_accepted_socket(
                lambda: handler,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout_s if self._ssl else None,
            )
        except (TimeoutError, OSError, asyncio.CancelledError) as exc:
            # a TLS handshake that failed or took too long (plain HTTP on the TLS port),
            # or a client gone before it was served
            handler.release()
            conn.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            held = self.throttle("handshake")
            if held is not None:
                log.info(
                    "HTTP connection dropped before serving: %s%s",
                    exc,
                    f"; {held} more held back" if held else "",
                )
