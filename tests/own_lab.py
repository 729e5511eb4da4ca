"""What the test modules that run a lab of their own share: starting it, and moving its pooler.

The database, backup and traffic tests each start some lab components on free ports with their
own data directory (so repointing the pooler, dropping the target or moving DNS weights breaks no
other module); the database and backup tests move PgBouncer's one [databases] line between the
clusters the way the switchover does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from lab.connections import connections_in_environment
from lab.pgbouncer import INI_TEMPLATE, admin_console, ini_path
from lab.postgres import DATABASE
from lab.processes import State
from lab.settings import LabSettings
from lab.supervisor import down, start_component


@contextlib.contextmanager
def running_lab(
    prefix: str, components: Iterable[str], *, records: int | None = None
) -> Iterator[LabSettings]:
    """Start `components` on a throwaway lab (its databases seeded with `records` rows when given),
    its Airflow connections in os.environ; purged on the way out, whatever the test did."""
    settings = LabSettings.throwaway(prefix)
    if records is not None:
        state = State(settings)
        state.seed["records"] = records
        state.save()
    try:
        for name in components:
            start_component(name, settings)
        with connections_in_environment(settings):
            yield settings
    finally:
        down(settings, purge=True)


def point_pooler(settings: LabSettings, port: int) -> None:
    """Rewrite the pooler's [databases] line to send DATABASE to the cluster on `port` (keeping the
    file's owner, which PgBouncer runs as), then RELOAD."""
    path = ini_path(settings)
    wanted = INI_TEMPLATE.split("\n")[3].format(database=DATABASE, host=settings.host, source_port=port)
    lines = [wanted if line.startswith(f"{DATABASE} = ") else line for line in path.read_text().splitlines()]
    stat = path.stat()
    path.write_text("\n".join(lines) + "\n")
    os.chown(path, stat.st_uid, stat.st_gid)
    console = admin_console(settings)
    try:
        with console.cursor() as cursor:
            cursor.execute("RELOAD")
    finally:
        console.close()
