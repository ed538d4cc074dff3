"""How energylake runs Beam in process: the state sampler's period is short, so a bundle
does not wait up to 200 ms for the sampler's thread when it ends."""

from __future__ import annotations

import time

import pipelines.process as process


def test_the_in_process_runner_samples_state_every_10_ms_and_ends_bundles_promptly() -> None:
    process._beam_options(process.DEFAULT_RUNNER, [])
    # (Beam's own class, as the pipeline module uses it: only transforms/ and pipelines/
    # import Beam. The counter factory is only used by scoped states, not here.)
    sampler = process.StateSampler("test", counter_factory=None)
    assert sampler.sampling_period_ms == process.SAMPLING_PERIOD_MS == 10
    # A bundle of 1.5 s: with Beam's default the sampler sleeps 200 ms at a time by then.
    sampler.start()
    time.sleep(1.5)
    began = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - began < 0.1  # Beam's default: up to 0.2 s
