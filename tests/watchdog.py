"""Bounds that fire with Airflow in the process: a per-test deadline and helper threads that fail
the test the moment they fail.

pytest-timeout's signal method arms SIGALRM, which Airflow's own timeouts take over (the task
runner, the DAG importer), so a test running Airflow code in-process could wait forever. This
plugin uses SIGUSR1 instead, and raises `TestTimedOut` (a BaseException: Airflow's
`except Exception` around a task does not swallow it) in the main thread; it raises again every
few seconds until the test ends, and if the test still has not ended a minute past its deadline it
prints every thread's stack and ends the process (the lab reaper stops what the run started).

`@pytest.mark.timeout(seconds)` sets a test's bound; the `timeout` ini value is the default.
`helper_thread(target)` runs a function beside the test; its exception is raised in the test at once.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

DEFAULT_SECONDS = 600.0
REPEAT_SECONDS = 5.0
HARD_EXIT_AFTER_SECONDS = 60.0
HARD_EXIT_STATUS = 3
TEARDOWN_SECONDS = 240.0


class TestTimedOut(BaseException):
    """The test ran past its bound."""

    __test__ = False  # not a test class, despite its name


class HelperFailed(BaseException):
    """A thread working for the test raised; the test fails with that exception as the cause."""


_pending: list[BaseException] = []


@dataclass
class _Bound:
    """The running test's deadline and when it passed (None: not yet); teardown gets a fresh one."""

    deadline: float = 0.0
    timed_out_at: float | None = None


_bound = _Bound()
_lock = threading.Lock()
# Set while a test phase (setup, call, teardown) runs: raised anywhere else, in pytest's own code,
# the exception would end the whole session instead of failing one test.
_in_phase = threading.Event()


def _raise_pending(signum: int, frame: Any) -> None:
    with _lock:
        if not _pending or not _in_phase.is_set():
            return
        exception = _pending[0]
    raise exception


def interrupt_main(exception: BaseException) -> None:
    """Raise `exception` in the main thread as soon as it runs Python code or sleeps."""
    with _lock:
        if not _pending:
            _pending.append(exception)
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)


@contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Run the block under a deadline of `seconds`; past it, `TestTimedOut` names `what`."""
    previous = signal.signal(signal.SIGUSR1, _raise_pending)
    done = threading.Event()
    _bound.deadline, _bound.timed_out_at = time.monotonic() + seconds, None

    def watch() -> None:
        while not done.wait(max(0.1, min(REPEAT_SECONDS, _bound.deadline - time.monotonic()))):
            now = time.monotonic()
            timed_out_at = _bound.timed_out_at
            if timed_out_at is None and now >= _bound.deadline:
                _bound.timed_out_at = timed_out_at = now
                print(f"\n{what} ran past its {seconds:.0f} s bound; stacks:", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                interrupt_main(TestTimedOut(f"{what} ran past its {seconds:.0f} s bound"))
            elif _pending and _in_phase.is_set():  # caught (a task runner's `except BaseException`)
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
            if timed_out_at is not None and now - timed_out_at > HARD_EXIT_AFTER_SECONDS:
                print(f"\n{what} did not stop; ending the test process", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(HARD_EXIT_STATUS)

    watcher = threading.Thread(target=watch, name=f"watchdog {what}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        with _lock:
            _pending.clear()
        signal.signal(signal.SIGUSR1, previous)


def helper_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Start `target` in a daemon thread; if it raises, the test fails at once with its exception."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            traceback.print_exc()
            failure = HelperFailed(f"helper thread {name!r} failed: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            interrupt_main(failure)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): this test's bound (tests/watchdog.py)")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("timeout", "default bound of a test, in seconds (tests/watchdog.py)", default="600")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup, call and teardown of one test run under one bound."""
    marker = item.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker else float(item.config.getini("timeout") or DEFAULT_SECONDS)
    with bounded(seconds, item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _phase():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _phase():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # Its own allowance, also after a test that timed out: a teardown interrupted half-way leaves
    # module fixtures half torn down, and every later test in the process fails on them.
    _bound.deadline, _bound.timed_out_at = time.monotonic() + TEARDOWN_SECONDS, None
    with _phase():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.excinfo is not None and _number_every_line(call.excinfo.value, set()):
        call.excinfo = pytest.ExceptionInfo.from_exception(call.excinfo.value)
    return (yield)


@contextmanager
def _phase() -> Iterator[None]:
    """Arm the interrupt for one phase; what it raised is reported, so the next phase starts clean
    (a timed-out test still tears down, under the watchdog's last minute). A phase that ran past
    its bound, or whose helper thread failed, fails even if the code under test caught the interrupt
    and returned (a task runner's `except BaseException` marks the task failed, the run ends)."""
    _in_phase.set()
    try:
        yield
        with _lock:
            undelivered = _pending[0] if _pending else None
        if undelivered is not None:
            raise undelivered
    finally:
        _in_phase.clear()
        with _lock:
            _pending.clear()


def _number_every_line(exception: BaseException, seen: set[int]) -> bool:
    """Give each traceback entry of `exception` (and of its cause and context) a line number.

    A signal's handler can raise where the interpreter has no line for the frame (between two
    lines' instructions); such an entry's `tb_lineno` is None, and pytest, rendering the failure,
    then ends the whole session with an INTERNALERROR. The frame's first line stands in. Returns
    whether any entry needed one.
    """
    if id(exception) in seen:
        return False
    seen.add(id(exception))
    entries = []
    entry = exception.__traceback__
    while entry is not None:
        entries.append(entry)
        entry = entry.tb_next
    renumbered = any(entry.tb_lineno is None for entry in entries)
    if renumbered:
        rebuilt: types.TracebackType | None = None
        for entry in reversed(entries):
            line = entry.tb_lineno if entry.tb_lineno is not None else entry.tb_frame.f_code.co_firstlineno
            rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, line)
        exception.__traceback__ = rebuilt
    for linked in (exception.__cause__, exception.__context__):
        if linked is not None:
            renumbered = _number_every_line(linked, seen) or renumbered
    return renumbered
