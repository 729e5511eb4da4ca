"""The command line's parts that need no Airflow: what `validate` asks the DAG for (a preflight-only
run, here through dag.test()), the rollback arguments it refuses, and its exit status when Airflow
cannot be reached or no password is given. Against a real api-server: tests/browser/test_airflow_ui.py.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest

from lab.settings import free_ports
from lab.synthetic_graph import REAL_CONFIG
from pyairtable_migration.airflow_rest import log_lines
from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.cli import UsageError, main, migrate_conf, parser, rollback_conf
from pyairtable_migration.config import load_config
from pyairtable_migration.plan import PREFLIGHT_GATE
from pyairtable_migration.rollback import rollback_params

# The rollback DAG's params as GET /dags/{id}/details shows them (Param.dump()).
DETAILS = {name: param.dump() for name, param in rollback_params(load_config(REAL_CONFIG)).items()}


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.mark.usefixtures("airflow_db")
def test_a_preflight_only_run_checks_and_skips_everything_after() -> None:
    dag = build_migration_dag(load_config(REAL_CONFIG))
    run = dag.test(run_conf={"mode": "plan", "preflight_only": True})
    found = states(run)
    assert run.state == "success"
    preflight = {t: s for t, s in found.items() if t.startswith("preflight.")}
    assert set(preflight.values()) == {"success"} and PREFLIGHT_GATE in preflight, preflight
    later = {t: s for t, s in found.items() if not t.startswith("preflight.")}
    assert later and set(later.values()) == {"skipped"}, later


@pytest.mark.usefixtures("airflow_db")
def test_a_refused_preflight_only_run_fails_and_writes_no_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply mode with no connection reachable: the preflight refuses; nothing later starts, and the
    report (all_done, the run's last task) fails without writing a report, so the run fails; the
    undos (all_done too) find nothing to undo."""
    for name in list(os.environ):
        if name.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(name)
    dag = build_migration_dag(load_config(REAL_CONFIG))
    run = dag.test(run_conf={"mode": "apply", "preflight_only": True})
    found = states(run)
    assert run.state == "failed"
    assert found["preflight.check_database"] == "failed"
    assert found[PREFLIGHT_GATE] == "upstream_failed"
    started_later = {
        t: s
        for t, s in found.items()
        if not t.startswith("preflight.") and s not in (None, "upstream_failed")
    }
    undos = ("services.undo", "switchover.undo", "traffic.undo")
    assert started_later == {"validation.report": "failed", **dict.fromkeys(undos, "skipped")}


def arguments(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"scope": None, "services": None, "from_phase": None, **given})


def test_migrate_arguments_become_the_migration_conf() -> None:
    """What `migrate` triggers (through the same `trigger` that validate and rollback use against the
    real api-server in tests/browser): approvals on unless refused, the DAG's bake time unless given."""
    assert migrate_conf(parser().parse_args(["migrate"])) == {"mode": "apply", "require_approvals": True}
    given = parser().parse_args(["migrate", "--no-approvals", "--bake-seconds", "3"])
    assert migrate_conf(given) == {"mode": "apply", "require_approvals": False, "bake_seconds": 3.0}


def test_rollback_arguments_become_the_rollback_conf() -> None:
    config = load_config(REAL_CONFIG)
    assert rollback_conf(arguments(), config, DETAILS) == {"mode": "apply", "scope": "all"}
    assert rollback_conf(arguments(services="web-bff, api-gateway"), config, DETAILS) == {
        "mode": "apply",
        "scope": "services",
        "services": ["web-bff", "api-gateway"],
    }
    phase = rollback_conf(arguments(scope="from_phase", from_phase="services"), config, DETAILS)
    assert phase == {"mode": "apply", "scope": "from_phase", "from_phase": "services"}


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"scope": "everything"}, "unknown scope 'everything'"),
        ({"services": "web-bff,billing-engine"}, "unknown service(s) billing-engine"),
        ({"scope": "services"}, "needs --services"),
        ({"scope": "traffic", "services": "web-bff"}, "--services goes with scope services"),
        ({"scope": "from_phase", "from_phase": "preflight"}, "--from-phase, one of database"),
        ({"from_phase": "traffic"}, "--from-phase goes with scope from_phase"),
    ],
)
def test_bad_rollback_arguments_are_refused_naming_the_problem(given: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named.replace("(", r"\(").replace(")", r"\)")):
        rollback_conf(arguments(**given), load_config(REAL_CONFIG), DETAILS)


def closed_port() -> int:
    (port,) = free_ports(1)
    return port


def test_no_password_or_no_airflow_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW_PASSWORD", raising=False)
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["migrate", "--airflow-url", url]) == 2
    assert "set AIRFLOW_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("AIRFLOW_PASSWORD", "not-shown-anywhere")
    assert main(["rollback", "--scope", "traffic", "--airflow-url", url]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Airflow at {url}" in err and "not-shown-anywhere" not in err


def test_a_failed_tasks_log_tail_says_the_exception_not_only_that_there_was_one() -> None:
    """The api-server's log entries keep a failure's message in `error_detail`; the tail the command
    line prints under a FAIL must carry it (the refusal is what the engineer needs to read)."""
    content = [
        {"event": "Filling up the DagBag from dags/pyairtable_rollback.py", "level": "info"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": [
                {
                    "exc_type": "AirflowFailException",
                    "exc_value": "run parameters refused:\n- migration m is running: r1 (running)",
                    "frames": [{"filename": "params.py", "lineno": 150, "name": "execute"}],
                }
            ],
        },
        "a plain line",
    ]
    assert log_lines(content) == [
        "Filling up the DagBag from dags/pyairtable_rollback.py",
        "Task failed with exception",
        "AirflowFailException: run parameters refused:",
        "- migration m is running: r1 (running)",
        "a plain line",
    ]
