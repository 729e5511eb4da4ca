"""Run a DAG that is not in dags/ with dag.test(): serialize it first, as the dag-processor would."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, SupportsIndex

# An answered task dag.test() has taken: it runs again, or has ended.
TAKEN = ("running", "success", "failed", "skipped", "upstream_failed")
# How long an answer may take to be taken before it is given again.
ANSWER_AGAIN_SECONDS = 3.0
# dag.test()'s pause when a loop finds no task to run (Airflow's own is 1 s; it has no setting).
DAG_TEST_POLL_SECONDS = 0.1


@contextmanager
def dag_test_polls_faster() -> Iterator[None]:
    """dag.test() sleeps 1 s whenever a loop of it finds no task to run: while a failure or a skip
    spreads downstream (one level of the DAG per loop) and while a Human-in-the-loop task waits.
    Its own sleeps are shortened to DAG_TEST_POLL_SECONDS; every other caller gets time.sleep as is."""
    from airflow.sdk.definitions.dag import DAG

    real_sleep = time.sleep
    dag_test = DAG.test.__code__

    def sleep(seconds: float | SupportsIndex) -> None:
        if sys._getframe(1).f_code is dag_test:
            seconds = min(float(seconds), DAG_TEST_POLL_SECONDS)
        real_sleep(seconds)

    time.sleep = sleep
    try:
        yield
    finally:
        time.sleep = real_sleep


def registered(dag: Any) -> Any:
    """Store the DAG in the metadata database under the dags-folder bundle (created if missing)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.dag_processing.dagbag import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    return dag


def clear_alone_and_run(dag: Any, run: Any, task_id: str) -> Any:
    """Clear `task_id` alone in the finished `run` of the registered `dag`, as the UI's Clear does
    without downstream (Airflow's own clear: the run's clear number goes up, the run is queued
    again), then carry the run on as dag.test() carries its own: the scheduler's dependency checks,
    each ready task run in this process, a deferral's trigger run inline. Returns the run as it ended.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk import timezone
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    assert settings.Session is not None  # dag.test()'s own session, as it takes it
    session = settings.Session()
    cleared = session.scalars(
        select(TaskInstance).where(
            TaskInstance.dag_id == run.dag_id,
            TaskInstance.run_id == run.run_id,
            TaskInstance.task_id == task_id,
        )
    ).all()
    assert len(cleared) == 1, (task_id, cleared)
    clear_task_instances(list(cleared), session)
    session.commit()
    dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id))
    assert dag_run is not None and dag_run.state == DagRunState.QUEUED, dag_run
    # What the scheduler does with a queued run, then dag.test()'s loop.
    dag_run.state, dag_run.start_date = DagRunState.RUNNING, timezone.utcnow()
    dag_run.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    session.commit()
    while dag_run.state == DagRunState.RUNNING:
        session.expire_all()
        for ti in dag_run.update_state(session=session)[0]:
            ti.try_number += 1
            ti.state, ti.scheduled_dttm = TaskInstanceState.SCHEDULED, timezone.utcnow()
        session.commit()
        for ti in dag_run.get_task_instances(state=[TaskInstanceState.SCHEDULED], session=session):
            _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
    return dag_run


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    """What `task_id` pushed under `key` in `run`, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run.run_id, key=key, task_ids=task_id, dag_ids=run.dag_id)
        ).first()
        assert row is not None, (task_id, key)
        return XComModel.deserialize_value(row)


def run_id_at(logical_date: Any) -> str:
    """The run id `dag.test(logical_date=...)` gives its run: a responder answers only that run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    return str(
        DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=logical_date, run_after=logical_date)
    )


def sweeper() -> Any:
    """The scheduler's runner, for its periodic checks only (no executor, no loop)."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    return SchedulerJobRunner(job=Job(), executors=[])


def prepare_orm() -> None:
    """Import every Airflow model and configure the mappers, in the main thread before dag.test():
    the first ORM query of a process does it under SQLAlchemy's global lock, and a helper thread
    doing that while dag.test() imports `airflow.models.dagrun` deadlocks both."""
    from airflow.models import import_all_models
    from sqlalchemy.orm import configure_mappers

    import_all_models()
    configure_mappers()


def task_state(dag_id: str, run_id: str, task_id: str) -> str | None:
    """A task's state in the metadata database now (None: no row, or not scheduled yet); from a
    helper thread beside dag.test(), once `prepare_orm()` ran in the main thread."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
            )
        )
    return None if state is None else str(state)


class Responder:
    """Answers one Human-in-the-loop task of one run, as the api-server's HITL route does; or, with
    `choice` None, nobody answers: once the task's response timeout has passed, the scheduler's own
    timeout sweep (SchedulerJobRunner.check_awaiting_input_timeouts) resolves it, as a running
    scheduler would (dag.test() has no scheduler loop).

    Build it in the main thread, before dag.test() (`prepare_orm`). `answer()` then runs in a
    helper thread (tests.watchdog.helper_thread, so anything unexpected fails the test at once).
    """

    def __init__(
        self, dag_id: str, run_id: str, task_id: str, choice: str | None, user: str = "oncall"
    ) -> None:
        prepare_orm()
        self.dag_id, self.run_id, self.task_id, self.choice, self.user = dag_id, run_id, task_id, choice, user
        self.sweeper = sweeper() if choice is None else None  # built here, in the main thread

    def answer(self, stop: Any) -> bool:
        """Answer once the task awaits input; False if `stop` (a threading.Event) was set first.

        dag.test() runs the task in this process and writes the task instance it holds back when
        the task's run ends, which can be just after the task parked itself awaiting input: an
        answer given in between is overwritten (the row is back at awaiting_input, the answer
        recorded). So the answer is given again while the task stays parked, until dag.test()
        has taken it (the task runs again or has ended).
        """
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.sdk import timezone
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from sqlalchemy import select

        answered_at: float | None = None
        while not stop.is_set():
            with create_session() as session:
                ti = session.scalar(
                    select(TaskInstance).where(
                        TaskInstance.dag_id == self.dag_id,
                        TaskInstance.run_id == self.run_id,
                        TaskInstance.task_id == self.task_id,
                    )
                )
                state = None if ti is None else ti.state
                if answered_at is not None and state in TAKEN:
                    return True
                stale = answered_at is None or time.monotonic() - answered_at > ANSWER_AGAIN_SECONDS
                if ti is not None and state == "awaiting_input" and stale and self.sweeper is not None:
                    if ti.trigger_timeout is not None and ti.trigger_timeout < timezone.utcnow():
                        self.sweeper.check_awaiting_input_timeouts(session=session)
                        answered_at = time.monotonic()
                elif ti is not None and state == "awaiting_input" and stale and self.choice is not None:
                    detail = session.get(HITLDetail, ti.id)
                    if detail is None:
                        raise AssertionError(f"{self.task_id} of {self.run_id} awaits input, no HITL detail")
                    detail.responded_by = {"id": "7", "name": self.user}
                    detail.responded_at = timezone.utcnow()
                    detail.chosen_options = [self.choice]
                    detail.params_input = {}
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                    answered_at = time.monotonic()
            stop.wait(0.5)
        return False
