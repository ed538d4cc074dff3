"""The gateway process: one landing writer, the MQTT consumer and the HTTP server.

``Gateway.run()`` serves until SIGTERM or SIGINT, then drains: HTTP answers 503 to new
requests, the MQTT consumer stops taking messages and lets in-flight ones be fsynced and
acked, the HTTP listener closes once running requests are answered, the group commit
writes what is queued and the open segment is closed into ``closed/`` for the processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.audit import AuditLog
from gateway.books import BookWatcher
from gateway.commit import GroupCommitter
from gateway.config import GatewayConfig
from gateway.http import HttpDeps, build_app
from gateway.landing import LandingWriter
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttDoor
from gateway.pressure import LandingMonitor, Pressure

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process runs; ``run()`` blocks until drained."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.audit = AuditLog(config.audit_dir)
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
        """Start everything, serve until ``request_stop()``, then drain and close."""
        cfg = self.config
        self._stop = asyncio.Event()
        self.committer.start()
        self.monitor.start()
        runner: web.AppRunner | None = None
        try:
            if cfg.http_enabled:
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
                    build_app(deps),
                    access_log=None,
                    handle_signals=False,
                    shutdown_timeout=cfg.drain_timeout_s,
                    auto_decompress=False,  # gzip is inflated by BodyReader, with a limit
                )
                await runner.setup()
                site = web.TCPSite(runner, cfg.http_host, cfg.http_port, backlog=512)
                await site.start()
            if self.mqtt is not None:
                self.mqtt.start()
            log.info(
                "gateway ready: http=%s mqtt=%s landing=%s",
                f"{cfg.http_host}:{cfg.http_port}" if cfg.http_enabled else "off",
                f"{cfg.mqtt_host}:{cfg.mqtt_port}" if self.mqtt else "off",
                cfg.landing_dir,
            )
            if on_ready is not None:
                on_ready()
            await self._stop.wait()
        finally:
            await self._drain(runner)

    async def _drain(self, runner: web.AppRunner | None) -> None:
        log.info("gateway draining")
        self._draining = True
        loop = asyncio.get_running_loop()
        if self.mqtt is not None:
            await loop.run_in_executor(None, self.mqtt.stop, self.config.drain_timeout_s)
        if runner is not None:
            await runner.cleanup()  # closes the listener, waits for running requests
        await loop.run_in_executor(None, self.committer.stop, self.config.drain_timeout_s)
        self.monitor.stop()
        self.audit.close()
        log.info("gateway stopped; open segment closed")

    def run(self) -> None:
        """Serve until SIGTERM / SIGINT, then drain. Returns normally after a clean drain."""
        sys.setswitchinterval(self.config.switch_interval_s)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, self.request_stop)
            await self.serve()

        asyncio.run(main())
