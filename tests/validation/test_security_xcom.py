"""The security check reads this run's XComs through the Task SDK, renders every task's template
fields as the run does, reads the run's task logs, and names a leaked password's place; a search
with no password to look for fails instead of passing having proved nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator, TaskGroup, task

from pyairtable_migration.operators.validation import SecurityOperator
from tests.dagrun import registered, run_id_at, task_states, xcom

SECRET = "hunter2-not-a-real-password"


class Templated(BaseOperator):
    template_fields = ("dsn",)

    def __init__(self, *, dsn: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn = dsn

    def execute(self, context: Any) -> None:
        """Writes nothing anywhere: the leak is in what its template renders to."""


def security_check(connection_ids: list[str]) -> SecurityOperator:
    return SecurityOperator(
        task_id="security",
        source_conn_id="unused",
        target_conn_id="unused",
        allowed={},
        kubernetes_conn_id="unused",
        namespace="unused",
        services=[],
        connection_ids=connection_ids,
    )


@pytest.fixture
def only_the_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The password search alone (no clusters to list, no Kubernetes objects to read), the connection
    `test_secret_db` holding SECRET, and task logs under a folder of the test's own."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_SECRET_DB",
        json.dumps({"conn_type": "postgres", "host": "db", "login": "u", "password": SECRET}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_TEST_NO_PASSWORD", json.dumps({"conn_type": "postgres", "host": "db"}))
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path))
    monkeypatch.setattr(SecurityOperator, "leftovers", lambda self: ({}, []))
    monkeypatch.setattr(SecurityOperator, "colors", lambda self: ({}, []))
    monkeypatch.setattr(SecurityOperator, "platform", lambda self, active: [])
    return tmp_path


@pytest.mark.usefixtures("airflow_db")
def test_a_password_in_an_xcom_a_template_or_a_log_fails_the_security_check(only_the_search: Path) -> None:
    with DAG("security_xcom_test", schedule=None, params={"mode": "apply"}) as dag:
        with TaskGroup("database"):

            @task(task_id="careless")
            def careless() -> dict[str, Any]:
                return {"dsn": f"postgresql://u:{SECRET}@db/pyairtable"}

            @task(task_id="careful")
            def careful() -> dict[str, Any]:
                return {"dsn": "postgresql://u@db/pyairtable"}

            leaked, clean = careless(), careful()
            # Its template puts the password into the task when rendered: found without running it.
            templated = Templated(
                task_id="templated", dsn="postgresql://u:{{ conn.test_secret_db.password }}@db"
            )
        with TaskGroup("validation"):
            security = security_check(["test_secret_db"])
        [leaked, clean, templated] >> security
    # dag.test() runs tasks in-process and keeps no log files: this run's log of a task that printed
    # the DSN is written where Airflow's task runner keeps it (the default file layout).
    when = datetime.now(UTC)
    log = only_the_search / f"dag_id={dag.dag_id}" / f"run_id={run_id_at(when)}" / "task_id=database.careful"
    log.mkdir(parents=True)
    (log / "attempt=1.log").write_text(f"connecting to postgresql://u:{SECRET}@db/pyairtable\n")
    run = registered(dag).test(logical_date=when, run_after=when, run_conf={"mode": "apply"})
    states = task_states(run)
    assert states["validation.security"] == "failed"
    figures = xcom(run, "validation.security", "figures")
    assert figures["problems"] == [
        "secret found in XCom return_value of database.careless: password of connection test_secret_db",
        "secret found in rendered fields of database.templated: password of connection test_secret_db",
        "secret found in log task_id=database.careful/attempt=1.log: password of connection test_secret_db",
    ]
    assert figures["logs_searched"] == 1
    assert SECRET not in json.dumps(figures)


@pytest.mark.usefixtures("airflow_db")
def test_a_search_with_no_password_to_look_for_fails(only_the_search: Path) -> None:
    with DAG("security_nothing_to_search", schedule=None, params={"mode": "apply"}) as dag:

        @task(task_id="result")
        def result() -> dict[str, Any]:
            return {"rows": 1}

        result() >> security_check(["test_no_password", "no_such_connection"])
    run = registered(dag).test(run_conf={"mode": "apply"})
    assert task_states(run)["security"] == "failed"
    figures = xcom(run, "security", "figures")
    assert figures["secrets_searched"] == 0
    assert figures["problems"] == [
        "no password to search for: test_no_password: no password; "
        "no_such_connection: unreadable (AirflowNotFoundException)"
    ]
