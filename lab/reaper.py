"""Processes a test run started outlive it only as long as it takes to notice it is gone.

A test process marks its environment with `PYAIRTABLE_LAB_OWNER=<pid>:<start time>`; every
process it starts (lab components, Airflow, load workers, their descendants) inherits the mark.
When the owner ends however it ends (SIGKILL, SIGTERM, a watchdog's exit), its watcher — a small
process in a session of its own, holding the read end of a pipe only the owner writes to — sees
end-of-file and stops everything carrying the owner's mark. `reap_orphans()` does the same for an
owner that is gone and whose watcher was killed too; the next test session and `make lab-down` call it.

python -m lab.reaper --watch OWNER    (stdin: the pipe) wait for the owner to end, then reap it
python -m lab.reaper                  reap every process whose owner is gone; prints what it stopped
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

from lab.processes import MARKER_VARIABLE, OWNER_VARIABLE, OWNERS_DIR

# Throwaway labs and test Airflow homes live here; the shared lab's data (.lab) is never removed.
TEMPORARY_LABS = Path(tempfile.gettempdir())
THROWAWAY_PREFIX = "pyairtable-"


def owner_mark(pid: int) -> str:
    """`pid:start time`: a pid reused by another process later does not count as the owner."""
    return f"{pid}:{psutil.Process(pid).create_time():.2f}"


def owner_alive(mark: str) -> bool:
    pid_text = mark.partition(":")[0]
    try:
        return owner_mark(int(pid_text)) == mark
    except (ValueError, psutil.Error):
        return False


def owned_processes(owner: str | None = None) -> list[psutil.Process]:
    """Live processes carrying `owner`'s mark (every orphaned one when `owner` is None)."""
    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        try:
            if process.pid == me or process.status() == psutil.STATUS_ZOMBIE:
                continue
            mark = process_owner(process)
        except psutil.Error:
            continue
        if mark is None:
            continue
        if (owner is not None and mark == owner) or (owner is None and not owner_alive(mark)):
            found.append(process)
    return found


def process_owner(process: psutil.Process) -> str | None:
    """The owner's mark from the environment, or from its lab's record for a process whose
    environment was overwritten by its title (it runs in, or below, its lab's data directory)."""
    mark = process.environ().get(OWNER_VARIABLE)
    recorded_in = None if mark is not None else _recording_lab(process)
    if recorded_in is not None:
        with contextlib.suppress(OSError):
            mark = (recorded_in / OWNERS_DIR / str(process.pid)).read_text().strip() or None
    return mark


def working_directories(process: psutil.Process) -> set[Path]:
    """The lab data directory and the Airflow home a process works in (when it has them)."""
    environment = process.environ()
    found = {Path(environment[key]) for key in (MARKER_VARIABLE, "AIRFLOW_HOME") if environment.get(key)}
    recorded_in = _recording_lab(process)
    return found | ({recorded_in} if recorded_in else set())


def _recording_lab(process: psutil.Process) -> Path | None:
    cwd = Path(process.cwd())
    return next((d for d in [cwd, *cwd.parents][:4] if (d / OWNERS_DIR / str(process.pid)).is_file()), None)


def reap(processes: Sequence[psutil.Process], grace_seconds: float = 10.0) -> list[str]:
    """SIGTERM each process's group and the process itself, SIGKILL what is left after the grace
    period; remove the throwaway labs and Airflow homes they worked in. Returns one line each."""
    stopped, lab_dirs = [], set()
    targets: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            lab_dirs.update(working_directories(process))
            targets.extend([process, *process.children(recursive=True)])
            stopped.append(f"pid {process.pid} ({process.name()})")
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for process in targets:
            _signal(process, signum)
        _, targets = psutil.wait_procs(targets, timeout=grace_seconds if signum == signal.SIGTERM else 5)
        if not targets:
            break
    for lab_dir in lab_dirs:
        if lab_dir.parent == TEMPORARY_LABS and lab_dir.name.startswith(THROWAWAY_PREFIX):
            shutil.rmtree(lab_dir, ignore_errors=True)
    return stopped


def _signal(process: psutil.Process, signum: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error, OSError):
        if os.getpgid(process.pid) == process.pid:  # it leads a group (start_new_session): all of it
            os.killpg(process.pid, signum)
        process.send_signal(signum)


def reap_orphans() -> list[str]:
    """Stop what owners that are gone left running (a run killed together with its watcher)."""
    return reap(owned_processes())


def start_watcher(owner_pid: int) -> subprocess.Popen[bytes]:
    """Watch `owner_pid` (the caller) from a process of its own; keep the returned object alive.

    The pipe's write end lives only in the owner: it closes when the owner ends, by any means.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    environment = {key: value for key, value in os.environ.items() if key != OWNER_VARIABLE}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "lab.reaper", "--watch", owner_mark(owner_pid)],
        stdin=read_end,
        start_new_session=True,  # a signal to the owner's process group does not reach it
        env=environment,
    )
    os.close(read_end)
    # Kept open (never written) for the owner's whole life; the OS closes it when the owner ends.
    watcher.owner_pipe = os.fdopen(write_end, "wb")  # type: ignore[attr-defined]
    return watcher


def watch(owner: str) -> list[str]:
    """Block until the owner's pipe closes, then reap every process carrying its mark."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the owner's group may be signalled as a whole
    while sys.stdin.buffer.read(4096):
        pass
    time.sleep(0.5)  # let a clean shutdown finish stopping its own processes first
    return reap(owned_processes(owner))


def print_lines(lines: Iterable[str], heading: str) -> None:
    for line in lines:
        print(f"{heading}: {line}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.reaper", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--watch", metavar="OWNER", help="pid:start-time of the owner to watch (stdin: pipe)")
    args = parser.parse_args(argv)
    if args.watch:
        print_lines(watch(args.watch), f"stopped, left by test process {args.watch.split(':')[0]}")
    else:
        print_lines(reap_orphans(), "stopped, left by an ended test run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
