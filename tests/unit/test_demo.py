"""`make demo` never waits forever: a run where no task moves is named, its stacks logged, then stopped."""

from __future__ import annotations

import datetime as dt
import io
import re
import signal
import time
from types import FrameType

import pytest

from lab.demo import Console, RunWatcher


class Interrupted(Exception):
    """What SIGINT raises here instead of KeyboardInterrupt, so pytest's own handling stays out of it."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def test_a_run_where_nothing_moves_is_named_then_interrupted(capfd: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    # The watcher reads the test session's real metadata database, where no run started since now.
    watcher = RunWatcher(
        Console(out, time.monotonic()),
        dt.datetime.now(dt.UTC),
        live=lambda running: "",
        warn_after=1.0,
        give_up_after=3.0,
    )
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        watcher.start()
        with pytest.raises(Interrupted):
            time.sleep(60)  # the main thread, blocked as dag.test() would be
    finally:
        signal.signal(signal.SIGINT, previous)
        watcher.stop()
    said = out.getvalue().splitlines()
    assert len(said) == 2, said
    assert "no task has changed state for" in said[0]
    assert "waiting on: the run to start" in said[0]
    assert re.search(r"giving up: no task changed state for \d+ s; stopping the run and the lab$", said[1])
    assert watcher.gave_up.startswith("no task changed state for")
    # faulthandler wrote every thread's stack, the watcher's own among them, where Airflow's log goes.
    assert "in guard" in capfd.readouterr().err
