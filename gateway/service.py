"""The gateway process: one landing writer, the MQTT consumer and the HTTP server.

``Gateway.run()`` serves until SIGTERM or SIGINT, then drains: HTTP answers 503 to new
requests, the MQTT consumer stops taking messages and lets in-flight ones be fsynced and
acked, the HTTP listener closes once running requests are answered, the group commit
writes what is queued and the open segment is closed into ``closed/`` for the processor.

Start-up takes the HTTP port (and loads the HTTPS certificate) before anything else runs,
so a port in use or a bad certificate stops the process at once with ``GatewayStartError``
naming the cause and its exit code: ``EXIT_CONFIG`` (2) for a setting or file to fix,
``EXIT_LISTEN`` (3) when the address cannot be bound (in use, not permitted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import ClassVar

from aiohttp import web

from audit.log import AuditLog
from contracts.errors import EXIT_CONFIG, EnergylakeError
from gateway import aiohttp_internals
from gateway.books import BookWatcher
from gateway.commit import GroupCommitter
from gateway.config import GatewayConfig
from gateway.http import HttpDeps, build_app
from gateway.listener import (
    HttpListener,
    ListenError,
    LogThrottle,
    open_listen_socket,
    server_tls_context,
    throttled_exception_handler,
)
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttDoor
from gateway.pressure import LandingMonitor, Pressure
from landing.writer import LandingWriter

__all__ = ["EXIT_CONFIG", "EXIT_LISTEN", "Gateway", "GatewayListenError", "GatewayStartError"]

log = logging.getLogger(__name__)

# EXIT_CONFIG (2, contracts/errors.py): a setting or file is wrong; restarting will not help
EXIT_LISTEN = 3  # the HTTP address cannot be bound (in use, not permitted)
_FD_RESERVE = 256  # descriptors kept for segments, the broker, audit and the interpreter
_FD_PER_MQTT_SESSION = 4  # its socket, paho's wake-up socket pair, one spare


class GatewayStartError(EnergylakeError):
    """The gateway cannot start: a setting or file is wrong (``exit_code`` EXIT_CONFIG)."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class GatewayListenError(GatewayStartError):
    """The gateway cannot listen on its HTTP address (in use, not permitted): EXIT_LISTEN."""

    exit_code: ClassVar[int] = EXIT_LISTEN


def _fit_descriptor_limit(max_connections: int, mqtt_sessions: int = 0) -> None:
    """Raise the soft descriptor limit towards the hard one when the connection cap and
    the MQTT sessions (one per tenant) need it; warn when it cannot (accepts then pause on
    EMFILE instead of serving the cap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = _FD_RESERVE + mqtt_sessions * _FD_PER_MQTT_SESSION
    want = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < want:
            log.warning(
                "descriptor limit %d is below gateway_http_max_connections (%d) + %d "
                "(%d for %d MQTT session(s)): raise `ulimit -n` (or LimitNOFILE) or lower the "
                "cap; meanwhile accepts pause whenever descriptors run out",
                soft,
                max_connections,
                reserve,
                mqtt_sessions * _FD_PER_MQTT_SESSION,
                mqtt_sessions,
            )


class Gateway:
    """Everything one gateway process runs; ``run()`` blocks until drained."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.audit = AuditLog(
            config.audit_dir,
            repeat_window_s=config.audit_repeat_window_s,
            max_first_records=config.audit_max_first_records,
            anchor_dir=config.audit_anchor_dir,
            anchor_every_records=config.audit_anchor_every_records,
            anchor_interval_s=config.audit_anchor_interval_s,
        )
        self.books = BookWatcher(config.identity_book)
        self.committer = GroupCommitter(
            self._open_writer,
            flush_interval_s=config.flush_interval_s,
            flush_max_records=config.flush_max_records,
            on_fsync=self.metrics.observe_fsync,
        )
        self._draining = False
        self.monitor = LandingMonitor(
            config.landing_dir,
            min_free_bytes=config.min_free_bytes,
            max_lag_bytes=config.max_lag_bytes,
            max_lag_age_s=config.max_lag_age_s,
            interval_s=config.monitor_interval_s,
            writer_failure=lambda: self.committer.failure,
            on_update=self._on_pressure,
        )
        self.mqtt: MqttDoor | None = None
        if config.mqtt_enabled:  # one MQTT session per tenant (gateway/sessions.py)
            self.mqtt = MqttDoor(
                config, self.committer, self.metrics, self.audit, paused=self._mqtt_paused
            )
        self._stop: asyncio.Event | None = None
        self._mqtt_started = False
        self.throttle = LogThrottle()
        self.listener: HttpListener | None = None

    def _open_writer(self) -> LandingWriter:
        cfg = self.config
        return LandingWriter(
            cfg.landing_dir,
            cfg.writer_id,
            roll_bytes=cfg.roll_bytes,
            roll_seconds=cfg.roll_seconds,
            fsync=cfg.fsync,
        )

    def _on_pressure(self, pressure: Pressure) -> None:
        self.metrics.observe_pressure(pressure)
        self.books.refresh()  # same timer: a revoked token stops working within a tick
        self.audit.flush_due()  # and the counts of repeated audit events whose window ended

    def _bind_http(self) -> tuple[socket.socket, ssl.SSLContext | None]:
        """The HTTP socket and TLS context, before anything else starts."""
        cfg = self.config
        try:
            aiohttp_internals.check()
        except aiohttp_internals.AiohttpChangedError as exc:
            raise GatewayStartError(str(exc)) from exc
        try:
            context = None
            if cfg.http_tls_cert is not None and cfg.http_tls_key is not None:
                context = server_tls_context(cfg.http_tls_cert, cfg.http_tls_key)
            sock = open_listen_socket(cfg.http_host, cfg.http_port)
        except ListenError as exc:
            raise (GatewayStartError if exc.config else GatewayListenError)(str(exc)) from exc
        return sock, context

    def _reject_connection(self, reason: str) -> None:
        self.metrics.rejected.labels("http", reason).inc()

    def _mqtt_ready(self) -> bool | None:
        return self.mqtt.connected if self.mqtt is not None else None

    def _mqtt_paused(self) -> bool:
        return self.monitor.current.reason is not None or self.committer.failure is not None

    @property
    def draining(self) -> bool:
        return self._draining

    def request_stop(self) -> None:
        """Begin the drain (safe from a signal handler on the event loop)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Start everything, serve until ``request_stop()``, then drain and close.

        Raises ``GatewayStartError`` before starting anything when the HTTP port cannot
        be bound or the HTTPS certificate cannot be loaded.
        """
        cfg = self.config
        self._stop = asyncio.Event()
        bound = self._bind_http() if cfg.http_enabled else None
        sessions = len(self.mqtt.consumers) if self.mqtt is not None else 0
        _fit_descriptor_limit(cfg.http_max_connections if cfg.http_enabled else 0, sessions)
        runner: web.AppRunner | None = None
        try:
            self.committer.start()
            self.monitor.start()
            if bound is not None:
                sock, context = bound
                deps = HttpDeps(
                    config=cfg,
                    committer=self.committer,
                    monitor=self.monitor,
                    metrics=self.metrics,
                    audit=self.audit,
                    books=self.books,
                    draining=lambda: self._draining,
                    mqtt_ready=self._mqtt_ready,
                )
                runner = web.AppRunner(
                    build_app(deps), handle_signals=False, shutdown_timeout=cfg.drain_timeout_s
                )
                await runner.setup()
                assert runner.server is not None  # set by setup()
                self.listener = HttpListener(
                    runner.server,
                    sock,
                    max_connections=cfg.http_max_connections,
                    max_per_address=cfg.http_max_connections_per_address,
                    handshake_timeout_s=cfg.http_idle_timeout_s,
                    retry_after_s=cfg.retry_after_s,
                    ssl_context=context,
                    on_refused=self._reject_connection,
                    throttle=self.throttle,
                    handler_kwargs={
                        "access_log": None,
                        "auto_decompress": False,  # gzip is inflated by BodyReader, bounded
                        # closes a connection whose next request's headers are not complete
                        # this long after it opened or after the previous answer (data does
                        # not extend it): the idle and the header read timeout
                        "keepalive_timeout": cfg.http_idle_timeout_s,
                        # a body refused early (413, 408) is drained this long at most, so
                        # the client can read the answer before the connection closes
                        "lingering_time": min(10.0, cfg.http_body_timeout_s),
                    },
                )
                self.listener.start()
            if self.mqtt is not None:
                self.mqtt.start()
                self._mqtt_started = True
            scheme = "https" if bound is not None and bound[1] is not None else "http"
            log.info(
                "gateway ready: http=%s mqtt=%s landing=%s",
                f"{scheme}://{cfg.http_host}:{cfg.http_port}" if cfg.http_enabled else "off",
                f"{cfg.mqtt_host}:{cfg.mqtt_port}" if self.mqtt else "off",
                cfg.landing_dir,
            )
            if on_ready is not None:
                on_ready()
            await self._stop.wait()
        finally:
            if self.listener is None and bound is not None:
                bound[0].close()  # start-up failed before the listener took the socket
            await self._drain(runner)

    async def _drain(self, runner: web.AppRunner | None) -> None:
        log.info("gateway draining")
        self._draining = True
        loop = asyncio.get_running_loop()
        if self.mqtt is not None and self._mqtt_started:
            await loop.run_in_executor(None, self.mqtt.stop, self.config.drain_timeout_s)
        if self.listener is not None:
            self.listener.close()  # no new connections
        if runner is not None:
            await runner.cleanup()  # closes idle connections, waits for running requests
        await loop.run_in_executor(None, self.committer.stop, self.config.drain_timeout_s)
        self.monitor.stop()
        self.audit.close()
        log.info("gateway stopped; open segment closed")

    def run(self) -> None:
        """Serve until SIGTERM / SIGINT, then drain. Returns normally after a clean drain."""
        sys.setswitchinterval(self.config.switch_interval_s)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(throttled_exception_handler(self.throttle))
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, self.request_stop)
            await self.serve()

        asyncio.run(main())
