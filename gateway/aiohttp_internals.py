"""Every use the gateway makes of aiohttp beyond its documented API, in one place.

aiohttp has no public hook for what these do. pyproject.toml therefore allows only the
series they were read from and tested with (``aiohttp>=3.14,<3.15``) and constraints.txt
pins the exact release. ``check()`` runs before the HTTP listener is built
(``GatewayService``, before it binds), so a release that moved one of them stops the
gateway at start with a message naming it, instead of serving with a silently broken
edge. Before widening the range, run the tests named here.

1. ``aiohttp.web_protocol.RequestHandler`` (``ProtocolBase``): exported by its module but
   not documented. ``gateway/listener.py`` subclasses it to count connections for the cap,
   to be handed sockets by its own accept loop (``loop.connect_accepted_socket``) and to
   answer parser errors (``handle_error``) as RFC 9457 problem documents.
   Tests: ``test_parser_errors_are_problem_json`` (tests/gateway/test_http.py) and
   ``test_past_the_connection_cap_new_connections_get_503_and_hold_no_descriptor``
   (tests/gateway/test_http_limits.py).
2. ``RequestHandler._current_request``, ``RequestHandler._messages`` and
   ``web_protocol._ErrInfo`` (``parse_error_queued``): when a body's framing breaks in a
   later packet (a bad chunk size), aiohttp's parser ends that body without an error and
   queues the error as if for a next request, so the handler reading the body would wait
   for the body timeout. The listener reads them to hand the current request the error at
   once. Tests: ``test_broken_chunked_framing_mid_body_is_a_400_problem`` (it times out
   without this) and ``test_a_bad_request_pipelined_behind_a_complete_body_does_not_spoil_it``.
3. ``StreamWriter.output_size`` through ``request.writer`` (``response_started``,
   ``write_continue``): ``handle_error`` must not start an answer once bytes of one went
   out (aiohttp's own ``handle_error`` checks the same); ``100 Continue`` is written by the
   telemetry handler after authentication (an ``expect_handler`` runs before it) and the
   count is reset as aiohttp's own expect handler does, so aiohttp's bookkeeping sees what
   it would with its own handler. Test: ``test_100_continue_comes_only_after_authentication``
   (tests/gateway/test_http.py). In 3.14 nothing observable reads the reset count after a
   ``100 Continue`` (every handler error is answered by the app's middleware, never by
   ``handle_error``), so ``check()`` is what guards the attribute itself.

``tests/gateway/test_aiohttp_internals.py`` runs ``check()`` against the installed aiohttp.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from contracts.errors import EnergylakeError

__all__ = [
    "TESTED_SERIES",
    "AiohttpChangedError",
    "ProtocolBase",
    "check",
    "current_request",
    "parse_error_queued",
    "queued_messages",
    "response_started",
    "write_continue",
]

TESTED_SERIES: Final = "3.14"
ProtocolBase = RequestHandler
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_HANDLER_SLOTS: Final = ("_current_request", "_messages")


class AiohttpChangedError(EnergylakeError, RuntimeError):
    """An aiohttp internal the gateway uses is gone or has changed (an operator installed
    another aiohttp than the pinned one); also a ``RuntimeError``, as before the hierarchy."""


def check() -> None:
    """Raise ``AiohttpChangedError`` naming what moved if an internal used here is not where
    aiohttp 3.14 has it."""
    missing = [name for name in _HANDLER_SLOTS if name not in RequestHandler.__slots__]
    if "message" not in getattr(_ErrInfo, "__annotations__", {}):
        missing.append("_ErrInfo.message")
    if "output_size" not in getattr(AbstractStreamWriter, "__annotations__", {}):
        missing.append("AbstractStreamWriter.output_size")
    if missing:
        raise AiohttpChangedError(
            f"aiohttp {aiohttp.__version__} lacks {', '.join(missing)}, used by the gateway's "
            f"HTTP listener (tested with the {TESTED_SERIES} series): install the version "
            "pinned in constraints.txt, or adapt gateway/aiohttp_internals.py"
        )


def current_request(handler: RequestHandler) -> web.BaseRequest | None:
    """The request whose handler runs on this connection now, if any."""
    return handler._current_request


def queued_messages(handler: RequestHandler) -> int:
    """How many parsed requests (or parse errors) wait on this connection."""
    return len(handler._messages)


def parse_error_queued(handler: RequestHandler) -> str | None:
    """The parser's message if the last queued item is a parse error, else None."""
    if not handler._messages:
        return None
    message = handler._messages[-1][0]
    return message.message if isinstance(message, _ErrInfo) else None


def response_started(request: web.BaseRequest) -> bool:
    """True once bytes of an answer to ``request`` went out (none may follow)."""
    return request.writer.output_size > 0


async def write_continue(request: web.BaseRequest) -> None:
    """Send ``100 Continue`` now, as aiohttp's own expect handler would."""
    await request.writer.write(_CONTINUE)
    request.writer.output_size = 0  # the answer itself has not started
