"""Backpressure: may the gateway acknowledge more right now?

The landing log cannot take more when its disk is nearly full, when the writer has failed
(ENOSPC, EIO), or when the processor lags too far behind (the bytes still under
``<landing>/closed`` are exactly what it has not taken yet). A ``LandingMonitor`` looks
every ``interval`` seconds and keeps the answer; HTTP answers 503 and MQTT stops
consuming while ``reason`` is set, and both resume on their own once it clears.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LagStats", "LandingMonitor", "Pressure", "landing_lag"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LagStats:
    """What the processor has not taken yet: closed segments, their bytes, the oldest's age."""

    segments: int
    bytes: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class Pressure:
    """One look at the landing log. ``reason`` is None when everything may be acked."""

    reason: str | None
    detail: str
    free_bytes: int
    lag: LagStats


def _stamp_epoch(name: str) -> float | None:
    try:
        return datetime.strptime(name[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def landing_lag(root: Path, now: float | None = None) -> LagStats:
    """Count the closed segments under ``root`` (the processor's backlog)."""
    folder = Path(root) / "closed"
    now = time.time() if now is None else now
    count = size = 0
    oldest: float | None = None
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return LagStats(0, 0, 0.0)
    for entry in entries:
        if not entry.name.endswith(".seg"):
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:  # the processor took it meanwhile
            continue
        count += 1
        size += stat.st_size
        opened = _stamp_epoch(entry.name) or stat.st_mtime
        oldest = opened if oldest is None else min(oldest, opened)
    return LagStats(count, size, max(0.0, now - oldest) if oldest is not None else 0.0)


class LandingMonitor:
    """Looks at the landing log on a timer; ``current`` is the latest ``Pressure``."""

    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int,
        max_lag_bytes: int,
        max_lag_age_s: float,
        interval_s: float = 1.0,
        writer_failure: Callable[[], str | None] = lambda: None,
        on_update: Callable[[Pressure], None] | None = None,
    ) -> None:
        self._root = Path(root)
        self._min_free = min_free_bytes
        self._max_lag_bytes = max_lag_bytes
        self._max_lag_age_s = max_lag_age_s
        self._interval_s = interval_s
        self._writer_failure = writer_failure
        self._on_update = on_update
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landing-monitor", daemon=True)
        self.current = self.check()

    def check(self) -> Pressure:
        """Look now (also called by the timer)."""
        try:
            free = shutil.disk_usage(self._root).free
        except OSError:
            free = 0
        lag = landing_lag(self._root)
        failure = self._writer_failure()
        reason: str | None = None
        detail = ""
        if failure is not None:
            reason, detail = "landing_failed", failure
        elif free < self._min_free:
            reason = "landing_disk_full"
            detail = f"{free} bytes free on the landing disk, below the {self._min_free} bound"
        elif lag.bytes > self._max_lag_bytes:
            reason = "processor_lag"
            detail = f"{lag.bytes} bytes wait for the processor (bound {self._max_lag_bytes})"
        elif lag.oldest_age_s > self._max_lag_age_s:
            reason = "processor_lag"
            detail = (
                f"the oldest closed segment is {lag.oldest_age_s:.0f} s old "
                f"(bound {self._max_lag_age_s:.0f} s)"
            )
        pressure = Pressure(reason, detail, free, lag)
        self.current = pressure
        if self._on_update is not None:
            self._on_update(pressure)
        return pressure

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval_s):
            try:
                self.check()
            except OSError as exc:  # e.g. no descriptor left (EMFILE): look again next tick
                if not failing:
                    log.error("landing monitor cannot look (keeps trying): %s", exc)
                failing = True
                continue
            if failing:
                log.info("landing monitor looks again")
            failing = False
