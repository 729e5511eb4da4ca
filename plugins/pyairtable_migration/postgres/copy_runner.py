"""`python -m pyairtable_migration.postgres.copy_runner`: the parallel initial copy as a detached
process (pyairtable_migration.detached), so the session holding the exported snapshot outlives the
task that started it: a task killed half-way and cleared finds the copy still running and waits for
it, and nothing is copied twice or started over. Its spec (connection ids and settings, no
password) comes from the environment; it reaches the databases through Airflow's connections.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyairtable_migration.detached import Detached, runner_spec, write_result


@dataclass(frozen=True)
class CopySpec:
    source_conn_id: str
    target_conn_id: str
    slot: str
    publication: str
    workers: int
    split_bytes: int
    progress_seconds: float
    pg_bin_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def copy_process(state_dir: Path) -> Detached:
    """The copy's detached process, its files under `state_dir`."""
    return Detached(state_dir, "copy", "pyairtable_migration.postgres.copy_runner")


def main() -> int:
    # Imported here: the hook brings Airflow, which the parent's start() need not wait for.
    from pyairtable_migration.hooks.database import MigrationPostgresHook
    from pyairtable_migration.postgres import snapshot_copy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("pyairtable_migration.copy_runner")
    spec = CopySpec(**runner_spec())
    source, target = MigrationPostgresHook(spec.source_conn_id), MigrationPostgresHook(spec.target_conn_id)
    try:
        with snapshot_copy.exported_snapshot(
            source, target, slot=spec.slot, publication=spec.publication, log=log
        ) as snapshot:
            progress = snapshot_copy.copy_snapshot(
                source,
                target,
                snapshot,
                workers=spec.workers,
                split_bytes=spec.split_bytes,
                # The task that starts or finds this process checks where writers are each time.
                refuse_if_writers_on_target=lambda: None,
                log=log,
                on_progress=lambda now: log.info("Copy: %s", now.describe()),
                progress_seconds=spec.progress_seconds,
                pg_bin_dir=spec.pg_bin_dir,
            )
    except Exception as exc:
        log.exception("The copy failed")
        write_result({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_result({"progress": progress.summary()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
