"""The lab's passwords: generated once per lab, kept in <data_dir>/secrets.json (mode 0600).

The same passwords serve both PostgreSQL clusters, so PgBouncer's one userlist logs writers into
whichever cluster its [databases] line points at, before and after the switchover.
"""

from __future__ import annotations

import json
from secrets import token_urlsafe

from lab.processes import write_private
from lab.settings import LabSettings

APP_ROLE = "pyairtable_app"
MIGRATOR_ROLE = "migrator"
PGBOUNCER_ADMIN = "pgbouncer_admin"
ROLES = (APP_ROLE, MIGRATOR_ROLE, PGBOUNCER_ADMIN)


def secrets(settings: LabSettings) -> dict[str, str]:
    """Role name -> password; missing ones are generated and saved before returning."""
    path = settings.data_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [role for role in ROLES if not stored.get(role)]
    if missing:
        # URL-safe characters only: the passwords go into URLs, a userlist and shell lines unquoted.
        stored.update({role: token_urlsafe(24) for role in missing})
        write_private(path, json.dumps(stored, indent=2) + "\n")
    return stored
