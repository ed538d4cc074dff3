"""How energylake runs Beam in process: the state sampler's period is short, so a bundle
does not wait up to 200 ms for the sampler's thread when it ends (transforms/beam_internals.py
says why; these tests fail when the patch stops taking effect)."""

from __future__ import annotations

import time

import pytest

from transforms.beam_internals import (
    SAMPLING_PERIOD_MS,
    StateSampler,
    bundle_sampling_period_ms,
    quick_state_sampler,
)


@pytest.mark.slow
def test_the_in_process_runner_samples_state_every_10_ms_and_ends_bundles_promptly() -> None:
    assert quick_state_sampler()
    # (Beam's own class, the one FnApiRunner's BundleProcessor builds. The counter factory
    # is only used by scoped states, not here.)
    sampler = StateSampler("test", counter_factory=None)
    assert sampler.sampling_period_ms == SAMPLING_PERIOD_MS == 10
    # A bundle of 1.5 s: with Beam's default the sampler sleeps 200 ms at a time by then.
    sampler.start()
    time.sleep(1.5)
    began = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - began < 0.1  # Beam's default: up to 0.2 s


def test_a_real_fnapirunner_bundle_is_sampled_with_the_short_period() -> None:
    # What the patch is for: the sampler that FnApiRunner's BundleProcessor builds itself.
    assert bundle_sampling_period_ms() == SAMPLING_PERIOD_MS
