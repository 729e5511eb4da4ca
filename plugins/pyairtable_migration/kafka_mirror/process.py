"""The mirror as a detached process (pyairtable_migration.detached), started and stopped by the
migration's tasks.

A task is short; the mirror runs from the database phase until the producers moved and it drained.
All its progress is in Kafka (its group's committed offsets on the source, the copies' headers on
the target): a killed mirror started again resumes there. This stands in for what runs the copy on a
real platform (a MirrorMaker 2 deployment, or cluster linking on Confluent).
"""

from __future__ import annotations

from pathlib import Path

from pyairtable_migration.detached import Detached, DetachedError
from pyairtable_migration.kafka_mirror.client import KafkaMirrorError
from pyairtable_migration.kafka_mirror.mirror import MirrorSpec

STOP_TIMEOUT_SECONDS = 40.0


def mirror_process(state_dir: Path) -> Detached:
    return Detached(state_dir, "mirror", "pyairtable_migration.kafka_mirror.mirror_runner")


def running_pid(state_dir: Path) -> int | None:
    return mirror_process(state_dir).running_pid()


def start(spec: MirrorSpec, state_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[int, bool]:
    """(pid, started now); a mirror already running with this spec is left alone, another refused."""
    try:
        return mirror_process(state_dir).start(spec.to_dict(), extra_env)
    except DetachedError as exc:
        raise KafkaMirrorError(str(exc)) from None


def stop(state_dir: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """SIGTERM (it flushes and commits), SIGKILL after `timeout`; False if none was running."""
    return mirror_process(state_dir).stop(timeout)
