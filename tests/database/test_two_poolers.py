"""Two poolers, one of which cannot log in to the target: the switchover's branch where writes have
reached the target through one pooler while the other's writers still wait.

Production runs PgBouncer replicas side by side (`database.poolers` lists each); the lab runs one,
so this module starts a second, a real PgBouncer on a free port beside the pair's. Its [databases]
line logs in to the servers as a role of its own (ROLE_B, a member of the application's role), whose
password on the target is not the one the pooler holds: the source serves it, the target refuses
it, as a stale password or pg_hba.conf would in production. With writers on both poolers, the
switch must stand (transactions went through the first pooler: undoing it would lose them),
complete, and fail naming the second pooler; once its login is mended, its writers commit on the
target after PgBouncer's login retry, and neither pooler's writers lost an acknowledged write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from lab.credentials import APP_ROLE, PGBOUNCER_ADMIN, secrets
from lab.loadgen import LoadGenerator
from lab.pgbouncer import ADMIN_DATABASE, PgBouncer, ini_path
from lab.postgres import DATABASE
from lab.processes import start_detached, wait_until_answers, write_private
from lab.settings import LabSettings, free_ports
from pyairtable_migration.config import MigrationConfig, Pooler
from tests.database.pair import Pair, pooler_port
from tests.database.runner import POSTGRES_STEPS, run_fast, wait_until

pytestmark = pytest.mark.lab

ROLE_B = "pyairtable_app_b"
POOLER_B = "pgbouncer-b"
ADMIN_CONN_B = "pyairtable_pgbouncer_b_admin"
RATE = 200  # commits/s through each pooler


@dataclasses.dataclass
class SecondPooler:
    settings: LabSettings
    password: str  # ROLE_B's on the source and in the pooler's userlist

    def dsn(self) -> str:
        password = secrets(self.settings)[APP_ROLE]
        return f"postgresql://{APP_ROLE}:{password}@{self.settings.host}:{self.settings.pgbouncer_port}/{DATABASE}"


def set_role_b_password(pair: Pair, side: str, password: str) -> None:
    with pair.superuser(side) as connection, connection.cursor() as cursor:
        cursor.execute(f"ALTER ROLE {ROLE_B} PASSWORD %s", (password,))
    connection.close()


@pytest.fixture(scope="module")
def second_pooler(pair: Pair) -> Iterator[SecondPooler]:
    """A second PgBouncer in front of the source, logging in as ROLE_B, which the target refuses."""
    pair.reset()
    password = os.urandom(18).hex()
    for side, its_password in (("source", password), ("target", "not-the-one-the-pooler-holds")):
        with pair.superuser(side) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE ROLE {ROLE_B} LOGIN PASSWORD %s IN ROLE {APP_ROLE}", (its_password,))
        connection.close()
    data_dir = pair.settings.data_dir / "pooler-b"
    data_dir.mkdir(mode=0o755)
    shutil.copy(pair.settings.data_dir / "secrets.json", data_dir / "secrets.json")
    settings = dataclasses.replace(pair.settings, data_dir=data_dir, pgbouncer_port=free_ports(1)[0])
    component = PgBouncer()
    component.prepare(settings)
    userlist = data_dir / "pgbouncer" / "userlist.txt"
    write_private(userlist, userlist.read_text() + f'"{ROLE_B}" "{password}"\n', for_service=True)
    ini = ini_path(settings)
    ini.write_text(
        re.sub(rf"^({DATABASE} = .*)$", rf"\1 user={ROLE_B}", ini.read_text(), count=1, flags=re.MULTILINE)
    )
    process = start_detached(component, settings)
    try:
        wait_until_answers(component, settings, process)
        yield SecondPooler(settings, password)
    finally:
        component.stop(settings, process.pid)
        pair.reset()
        for side in ("source", "target"):
            with pair.superuser(side) as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP ROLE IF EXISTS {ROLE_B}")
            connection.close()


@pytest.fixture(scope="module")
def two_poolers(config: MigrationConfig, second_pooler: SecondPooler) -> Iterator[MigrationConfig]:
    """The config listing both poolers, the second's admin connection in the environment."""
    first = config.database.poolers[0]
    settings = second_pooler.settings
    connection = {
        "conn_type": "postgres",
        "host": settings.host,
        "port": settings.pgbouncer_port,
        "login": PGBOUNCER_ADMIN,
        "password": secrets(settings)[PGBOUNCER_ADMIN],
        "schema": ADMIN_DATABASE,
        "extra": {"ini_path": str(ini_path(settings)), "database": DATABASE},
    }
    second = Pooler(name=POOLER_B, admin_conn_id=ADMIN_CONN_B, database=DATABASE, queue=first.queue)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{ADMIN_CONN_B.upper()}", json.dumps(connection))
        yield config.model_copy(
            update={"database": config.database.model_copy(update={"poolers": [first, second]})}
        )


def start_load(dsn: str, ledger: Path) -> LoadGenerator:
    generator = LoadGenerator(dsn=dsn, db_rate=RATE, ledger_path=ledger, edge=None, http_rate=0)
    generator.start()
    return generator


def test_a_pooler_that_cannot_log_in_to_the_target_is_named_and_the_switch_stands(
    pair: Pair,
    two_poolers: MigrationConfig,
    second_pooler: SecondPooler,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ledgers = tmp_path_factory.mktemp("ledgers")
    ledger_of = {"pgbouncer": ledgers / "first.log", POOLER_B: ledgers / "second.log"}
    loads = {
        "pgbouncer": start_load(pair.app_dsn(), ledger_of["pgbouncer"]),
        POOLER_B: start_load(second_pooler.dsn(), ledger_of[POOLER_B]),
    }
    try:
        for task_id in ("preflight.check_database", *POSTGRES_STEPS):
            run_fast(two_poolers, task_id)
        for name, load in loads.items():
            assert load.report()["db_commits"] > 0, f"no commit through {name} before the switch"

        with pytest.raises(AirflowFailException, match="is complete, but pooler pgbouncer-b") as failure:
            run_fast(two_poolers, "switchover.switch_database")
        message = str(failure.value)
        assert re.search(rf"pooler {POOLER_B}: [1-9]\d* client\(s\) waiting, no server connection", message)
        assert "fix that pooler's login to the target" in message
        assert "pooler pgbouncer:" not in message  # the first pooler served: not named
        # The switch stands and is complete: both poolers on the target, resumed; reverse
        # replication runs, forward replication is gone.
        assert pair.pooler_port() == pair.settings.postgres_target_port
        assert pooler_port(second_pooler.settings) == pair.settings.postgres_target_port
        assert pair.subscriptions("source") == ["pyairtable_rollback"]
        assert pair.subscriptions("target") == [] and pair.slots("source") == []
        # The first pooler's writers commit on the target meanwhile.
        first = loads["pgbouncer"].report()["db_commits"]
        wait_until(
            lambda: loads["pgbouncer"].report()["db_commits"] > first + RATE, what="commits on the target"
        )

        # A run again checks again: the second pooler is still named, nothing is undone.
        with pytest.raises(AirflowFailException, match=rf"is complete, but pooler {POOLER_B}: [1-9]"):
            run_fast(two_poolers, "switchover.switch_database")
        assert pooler_port(second_pooler.settings) == pair.settings.postgres_target_port

        # The login mended, the second pooler's writers commit on the target after its login retry.
        set_role_b_password(pair, "target", second_pooler.password)
        waiting = loads[POOLER_B].report()["db_commits"]
        wait_until(
            lambda: loads[POOLER_B].report()["db_commits"] > waiting + RATE,
            timeout=60,
            what=f"commits through {POOLER_B} after its login was mended",
        )
        # Run again, the task finds the switch complete and every pooler serving.
        assert run_fast(two_poolers, "switchover.switch_database") == {
            "changed": False,
            "writers_on": "target",
        }
    finally:
        figures = {name: load.stop() for name, load in loads.items()}
    for name, report in figures.items():
        assert report["db_failures"] == 0, (name, report["db_errors"])
        ledger = pair.ledger_report(
            "target", ledgers / ("first.log" if name == "pgbouncer" else "second.log")
        )
        assert ledger.checked == report["db_commits"] and ledger.lost == 0, (name, ledger.summary())
