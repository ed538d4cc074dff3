"""Every use energylake makes of Beam beyond its documented API, in one place.

1. **The state sampler's default period** (``apache_beam.runners.worker.statesampler``).
   Beam's state sampler (per-step msec metrics) runs a thread per bundle that sleeps
   between samples, ramping from 2 ms to 200 ms over about a second; ending the bundle
   joins that thread, so every bundle longer than a second waits up to 200 ms more (Beam
   PR #5466 describes the ramp). ``BundleProcessor`` builds its ``StateSampler`` with the
   period's default and no pipeline option sets it, so :func:`quick_state_sampler` makes
   the default of ``StateSampler.__init__`` 10 ms for this process (sampling stays on, at
   100 wake-ups a second). It is applied for the in-process runner only (``FnApiRunner``,
   ``pipelines/process.py``); SDK workers in other processes keep Beam's default.
   Measured: 0.64 s of a batch's main thread was this join; in process, the benchmark
   batch's 11 bundles spent 0.138 s in the sampler's ``stop`` with Beam's default and
   0.030 s with 10 ms, about 0.1 s of the batch's wall time (docs/BENCHMARKS.md); ending a
   3 s bundle's sampler alone took 82 ms on average (3 to 180 ms, five runs) with Beam's
   default and 6 ms with 10 ms.
   Tests: ``tests/transforms/test_beam_runtime.py`` (the period a real ``FnApiRunner``
   bundle samples with, and how long ending a 1.5 s bundle takes). If Beam renames the
   parameter, :func:`quick_state_sampler` leaves it alone, logs a warning and returns
   False, and those tests fail.

Used on purpose and documented by Beam, so not listed above: ``WindowedValue`` outputs of
``DoFn.finish_bundle`` (``transforms/beam.py``) and the coder registry (``transforms/coders.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.runners.worker.statesampler import StateSampler, get_current_tracker

__all__ = ["SAMPLING_PERIOD_MS", "StateSampler", "bundle_sampling_period_ms", "quick_state_sampler"]

log = logging.getLogger(__name__)

SAMPLING_PERIOD_MS = 10
_PARAMETER = "sampling_period_ms"


def quick_state_sampler() -> bool:
    """Make :data:`SAMPLING_PERIOD_MS` the default period of Beam's ``StateSampler`` in this
    process (see the module doc); False, with a warning, when Beam's signature changed."""
    init = StateSampler.__init__
    names = init.__code__.co_varnames[: init.__code__.co_argcount]
    defaults = init.__defaults__ or ()
    if names[-len(defaults) :][-1:] != (_PARAMETER,):
        log.warning(
            "Beam's StateSampler has no trailing %s default any more: its sampling period "
            "is left as it is (see transforms/beam_internals.py)",
            _PARAMETER,
        )
        return False
    init.__defaults__ = (*defaults[:-1], SAMPLING_PERIOD_MS)
    return True


class _SamplingPeriod(beam.DoFn):
    def process(self, element: object) -> Iterator[object]:
        tracker = get_current_tracker()
        _PERIOD_GAUGE.set(tracker.sampling_period_ms if tracker is not None else -1)
        yield element


_PERIOD_GAUGE = Metrics.gauge("energylake.beam_internals", "sampling_period_ms")


def bundle_sampling_period_ms() -> int:
    """The period a bundle of the in-process ``FnApiRunner`` samples its state with, as the
    runner builds its sampler (one tiny pipeline, about a second; -1 when no sampler ran).
    The value travels back as a Beam metric, not through memory shared with the driver."""
    quick_state_sampler()
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = pipeline | beam.Create([0]) | beam.ParDo(_SamplingPeriod())
    result = pipeline.run()
    result.wait_until_finish()
    gauges = result.metrics().query(MetricsFilter().with_name("sampling_period_ms"))["gauges"]
    return int(gauges[0].committed.value) if gauges else -1
