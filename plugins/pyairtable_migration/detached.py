"""Work that outlives the task that starts it: a process of its own (own session), found again by
the next try or a clear.

A task is short and may be killed (a worker lost, a clear); the work it starts (the Kafka mirror,
the parallel initial copy) must go on meanwhile and be found again. Each runs detached, its files in
a state directory: `<name>.pid`, `<name>.json` (its spec, so another spec is refused while it runs),
`<name>.log` and, once it ended, `<name>.result.json` (what its runner wrote). The spec reaches the
child in an environment variable, never its command line, so no address or setting shows in the
process list. The task that starts it and the next that looks must run on the same host: the
tasks run on one worker's queue where a deployment has several.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEC_VARIABLE = "PYAIRTABLE_DETACHED_SPEC"
# Where the runner writes its result: the state directory and its name there.
STATE_DIR_VARIABLE = "PYAIRTABLE_DETACHED_STATE_DIR"
NAME_VARIABLE = "PYAIRTABLE_DETACHED_NAME"
START_TIMEOUT_SECONDS = 10.0


class DetachedError(Exception):
    """A detached process could not be started, or another one runs from the same state directory."""


@dataclass(frozen=True)
class Detached:
    """One detached process: `module` run as `python -m module`, its files under `state_dir`."""

    state_dir: Path
    name: str
    module: str

    def path(self, suffix: str) -> Path:
        return self.state_dir / f"{self.name}{suffix}"

    def running_pid(self) -> int | None:
        """Its pid if it runs (its command line names the module, so a reused pid is not it; one
        that ended as this process's child stays a zombie, not running, until this process ends)."""
        try:
            pid = int(self.path(".pid").read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        return pid if self.module.encode() in command and state != "Z" else None

    def start(self, spec: dict[str, Any], extra_env: dict[str, str] | None = None) -> tuple[int, bool]:
        """(pid, started now); one already running with this spec is left alone, another refused."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pid = self.running_pid()
        if pid is not None:
            running = json.loads(self.path(".json").read_text()) if self.path(".json").exists() else None
            if running != spec:
                raise DetachedError(
                    f"another {self.name} runs from {self.state_dir} (pid {pid}): stop it first"
                )
            return pid, False
        self.path(".json").write_text(json.dumps(spec, sort_keys=True))
        self.path(".result.json").unlink(missing_ok=True)
        # The child imports this package as the task did: from Airflow's plugins folder, which Airflow
        # puts on its own sys.path but not in the environment a child inherits.
        package_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        environment = {
            **os.environ,
            "PYTHONPATH": path,
            **(extra_env or {}),
            SPEC_VARIABLE: json.dumps(spec),
            STATE_DIR_VARIABLE: str(self.state_dir),
            NAME_VARIABLE: self.name,
        }
        with open(self.path(".log"), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )
        self.path(".pid").write_text(str(process.pid))
        # Until the child has exec'd, its command line is still ours: wait for it to be the module.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.running_pid() is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise DetachedError(
                    f"the {self.name} did not start (exit {process.returncode}): {self.log_tail()}"
                )
            time.sleep(0.02)
        return process.pid, True

    def stop(self, timeout: float) -> bool:
        """SIGTERM, SIGKILL after `timeout`; False if none was running. What SIGTERM does is the
        runner's: the mirror flushes and commits; the copy just ends (its committed ranges stay)."""
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running_pid() is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if self.running_pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        _reap(pid)
        return True

    def result(self) -> dict[str, Any] | None:
        """What the runner wrote when it ended (None: it has not, or was killed first)."""
        try:
            return dict(json.loads(self.path(".result.json").read_text()))
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.path(".log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return " | ".join(tail) or "(nothing logged yet)"


def runner_spec() -> dict[str, Any]:
    """In the runner: its spec, as `Detached.start` passed it."""
    return dict(json.loads(os.environ[SPEC_VARIABLE]))


def write_result(result: dict[str, Any]) -> None:
    """In the runner: what it ended with, for the task that looks next (written whole, then renamed)."""
    target = Path(os.environ[STATE_DIR_VARIABLE]) / f"{os.environ[NAME_VARIABLE]}.result.json"
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, sort_keys=True, default=str))
    temporary.replace(target)


def _reap(pid: int) -> None:
    """Collect the exit status of a child this process started, so it lingers as no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
