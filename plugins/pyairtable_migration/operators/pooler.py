"""Preflight of the poolers' files, run where the switchover will run (the poolers' queue).

The switchover repoints writers by rewriting each PgBouncer's ini (a temporary file beside it, then
a rename) and sending RELOAD, so the worker that runs it must share the pooler's filesystem: read
the ini, find the database's line, and create files in its folder. Checked before anything changes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Context

from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.pgbouncer import PgBouncerHook
from pyairtable_migration.operators.base import MigrationOperator, bulleted, fail


class CheckPoolerFilesOperator(MigrationOperator):
    """Every pooler's ini readable, holding its database's line, and replaceable from this worker.

    :param poolers: `{"name", "admin_conn_id", "database"}` per pooler, as the config names them
    """

    template_fields = ("poolers",)

    poolers: Sequence[Mapping[str, str]]

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(context, *(f"check pooler {p['name']}'s ini from this worker" for p in self.poolers)):
            return {"mode": "plan"}
        worker = socket.gethostname()
        problems, files = [], {}
        for pooler in self.poolers:
            name = pooler["name"]
            hook = PgBouncerHook(pooler["admin_conn_id"])
            try:
                path = hook.ini_path()
                hook.configured(pooler["database"])
            except (MigrationError, OSError) as exc:
                problems.append(f"pooler {name}: {exc}")
                continue
            if not os.access(path.parent, os.W_OK | os.X_OK):
                problems.append(
                    f"pooler {name}: cannot create files in {path.parent}, where {path.name} is replaced"
                )
                continue
            files[name] = str(path)
            self.log.info("Pooler %s: %s readable, its folder writable from worker %s", name, path, worker)
        if problems:
            raise fail(
                bulleted(f"worker {worker} cannot rewrite the poolers' files (run it beside them)", problems)
            )
        return {"worker": worker, "files": files}
