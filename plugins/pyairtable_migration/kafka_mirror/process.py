"""The mirror as a process of its own, started and stopped by the migration's tasks.

A task is short; the mirror runs from the database phase until the producers moved and it drained.
So it runs detached (own session), its pid in `<state_dir>/mirror.pid`, its spec in
`<state_dir>/mirror.json`, its log in `<state_dir>/mirror.log`. All its progress is in Kafka (its
group's committed offsets on the source, the copies' headers on the target): a killed mirror
started again resumes there. This stands in for what runs the copy on a real platform (a
MirrorMaker 2 deployment, or cluster linking on Confluent).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyairtable_migration.kafka_mirror.client import KafkaMirrorError
from pyairtable_migration.kafka_mirror.mirror import MirrorSpec

SPEC_VARIABLE = "PYAIRTABLE_KAFKA_MIRROR_SPEC"
STOP_TIMEOUT_SECONDS = 40.0
START_TIMEOUT_SECONDS = 10.0


def pid_path(state_dir: Path) -> Path:
    return state_dir / "mirror.pid"


def running_pid(state_dir: Path) -> int | None:
    """The mirror's pid if it runs (its command line names the mirror, so a reused pid is not it)."""
    try:
        pid = int(pid_path(state_dir).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"pyairtable_migration.kafka_mirror" in command and state != "Z" else None


def start(spec: MirrorSpec, state_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[int, bool]:
    """(pid, started now); a mirror already running with this spec is left alone, another refused."""
    state_dir.mkdir(parents=True, exist_ok=True)
    spec_path = state_dir / "mirror.json"
    pid = running_pid(state_dir)
    if pid is not None:
        running = json.loads(spec_path.read_text()) if spec_path.exists() else None
        if running != spec.to_dict():
            raise KafkaMirrorError(f"another mirror runs from {state_dir} (pid {pid}): stop it first")
        return pid, False
    spec_path.write_text(json.dumps(spec.to_dict(), sort_keys=True))
    # The child imports this package as the task did: from Airflow's plugins folder, which Airflow
    # puts on its own sys.path but not in the environment a child inherits.
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    environment = {
        **os.environ,
        "PYTHONPATH": path,
        **(extra_env or {}),
        SPEC_VARIABLE: json.dumps(spec.to_dict()),
    }
    with open(state_dir / "mirror.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyairtable_migration.kafka_mirror.mirror_runner"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )
    pid_path(state_dir).write_text(str(process.pid))
    # Until the child has exec'd, its command line is still ours: wait for it to be the mirror.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while running_pid(state_dir) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            log_tail = (state_dir / "mirror.log").read_text(errors="replace").splitlines()[-5:]
            raise KafkaMirrorError(
                f"the mirror did not start (exit {process.returncode}): {' | '.join(log_tail)}"
            )
        time.sleep(0.02)
    return process.pid, True


def stop(state_dir: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """SIGTERM (it flushes and commits), SIGKILL after `timeout`; False if none was running."""
    pid = running_pid(state_dir)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(state_dir) is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if running_pid(state_dir) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
