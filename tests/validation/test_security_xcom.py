"""The security check reads this run's XComs through the Task SDK, renders every task's template
fields as the run does, and names a leaked password's place."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator, TaskGroup, task

from pyairtable_migration.operators.validation import SecurityOperator
from tests.dagrun import registered, task_states, xcom

SECRET = "hunter2-not-a-real-password"


class Templated(BaseOperator):
    template_fields = ("dsn",)

    def __init__(self, *, dsn: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn = dsn

    def execute(self, context: Any) -> None:
        """Writes nothing anywhere: the leak is in what its template renders to."""


@pytest.mark.usefixtures("airflow_db")
def test_a_password_in_an_xcom_fails_the_security_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_SECRET_DB",
        json.dumps({"conn_type": "postgres", "host": "db", "login": "u", "password": SECRET}),
    )
    # Only the XCom search is under test: no clusters to list, no Services to read.
    monkeypatch.setattr(SecurityOperator, "leftovers", lambda self: ({}, []))
    monkeypatch.setattr(SecurityOperator, "colors", lambda self: ({}, []))

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
            security = SecurityOperator(
                task_id="security",
                source_conn_id="unused",
                target_conn_id="unused",
                allowed={},
                kubernetes_conn_id="unused",
                namespace="unused",
                services=[],
                connection_ids=["test_secret_db"],
            )
        [leaked, clean, templated] >> security
    run = registered(dag).test(run_conf={"mode": "apply"})
    states = task_states(run)
    assert states["validation.security"] == "failed"
    figures = xcom(run, "validation.security", "figures")
    assert figures["problems"] == [
        "secret found in XCom return_value of database.careless: password of connection test_secret_db",
        "secret found in rendered fields of database.templated: password of connection test_secret_db",
    ]
    assert SECRET not in json.dumps(figures)
