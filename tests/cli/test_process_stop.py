"""``process --follow`` takes SIGTERM from the command's first line: a signal that comes
while Beam is still being imported is not lost, and the follower then stops cleanly
without taking a batch (it used to die of the signal, exit -15, in the chaos test)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from cli.process import _stop_on_signal
from pipelines.process import follow
from pipelines.settings import load_settings


def test_a_sigterm_before_the_follower_runs_stops_it_cleanly(tmp_path: Path) -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = _stop_on_signal()
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal to this process
        assert stop.wait(5)
        settings = load_settings(data_dir=tmp_path / "data")
        (settings.landing / "closed").mkdir(parents=True, exist_ok=True)
        assert follow(settings, stop=stop) == 0  # no batch taken, and it returned
        # follow put back the handlers it found: the command's, which still stop it
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, saved[signal.SIGTERM])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
