"""Run a DAG that is not in dags/ with dag.test(): serialize it first, as the dag-processor would."""

from __future__ import annotations

from typing import Any


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
