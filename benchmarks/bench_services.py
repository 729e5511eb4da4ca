"""Services phase: wall time against the critical path's sum of rollout waits.

Goal: orchestration overhead (wall time / critical-path rollout waits - 1) <= 25 %.

The phase's real tasks, built by the project's builder from a configuration, run against the
Kubernetes emulator through an ordinary Airflow connection. An in-process executor stands in for
the scheduler: a pool of worker threads (Airflow's default parallelism, 32) starts each task as
soon as its upstream tasks are done, honouring trigger rules; deferred tasks wait together in one
asyncio loop, as on the triggerer. The Airflow scheduler's own latency between a task ending and
the next starting (about a second per hop with the LocalExecutor) is not part of these figures.

Every pod becomes Ready `--pod-ready` seconds after it starts, standing in for a real rollout;
the rollout wait of each service is what its wait_rollout trigger measured. Infrastructure
checks are marked external (no database here), so they end skipped at once.

    python -m benchmarks.bench_services [--pod-ready 3] [--count 100] [--poll 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
from kubernetes import client, config

from benchmarks.table import Figure, at_most, format_table, note
from lab.kube import KubeEmulator
from lab.synthetic_graph import random_acyclic_services, real_document, with_services
from pyairtable_migration.builder import build_airflow_graph
from pyairtable_migration.config import MigrationConfig, parse_config
from pyairtable_migration.plan import MigrationPlan, build_plan

PHASE = "services"
CONN_ID = "pyairtable_kubernetes"
GOAL = 0.25
WORKERS = 32


@dataclass
class TaskRecord:
    start: float = 0.0
    end: float = 0.0
    state: str = ""
    waited: float = 0.0  # seconds spent deferred (the rollout wait, for wait_rollout)
    error: str = ""


@dataclass
class PhaseRun:
    wall: float
    records: dict[str, TaskRecord] = field(default_factory=dict)


class InProcessExecutor:
    """Runs a DAG's tasks as the scheduler would order them: parallel workers, one triggerer loop."""

    def __init__(self, dag: DAG, workers: int = WORKERS) -> None:
        self.dag = dag
        self.workers = workers
        self.records = {task_id: TaskRecord() for task_id in dag.task_dict}
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._finished: set[str] = set()

    def run(self) -> PhaseRun:
        loop = asyncio.new_event_loop()
        triggerer = threading.Thread(target=loop.run_forever, name="triggerer", daemon=True)
        triggerer.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="worker") as pool:
            self._pool, self._loop = pool, loop
            for task in self.dag.tasks:
                if not task.upstream_task_ids:
                    self._submit(task.task_id)
            self._done.wait()
        wall = time.perf_counter() - started
        loop.call_soon_threadsafe(loop.stop)
        triggerer.join()
        return PhaseRun(wall, self.records)

    def _submit(self, task_id: str) -> None:
        self.records[task_id].start = time.perf_counter()
        self._pool.submit(self._execute, task_id, None)

    def _execute(self, task_id: str, resume: tuple[str, Any] | None) -> None:
        operator: Any = self.dag.task_dict[task_id]
        context: Any = {"params": {"mode": "apply"}}
        try:
            if resume is None:
                operator.execute(context)
            else:
                method, event = resume
                getattr(operator, method)(context, event=event)
        except TaskDeferred as deferred:
            waited_from, method = time.perf_counter(), deferred.method_name
            future = asyncio.run_coroutine_threadsafe(_first_event(deferred.trigger), self._loop)

            def resumed(done: Future[Any]) -> None:
                self.records[task_id].waited += time.perf_counter() - waited_from
                self._pool.submit(self._execute, task_id, (method, done.result()))

            future.add_done_callback(resumed)
            return
        except AirflowSkipException:
            self._finish(task_id, "skipped")
            return
        except Exception as exc:
            self.records[task_id].error = f"{type(exc).__name__}: {exc}"
            self._finish(task_id, "failed")
            return
        self._finish(task_id, "success")

    def _finish(self, task_id: str, state: str) -> None:
        record = self.records[task_id]
        record.end, record.state = time.perf_counter(), state
        with self._lock:
            self._finished.add(task_id)
            ready = self._cascade(task_id)
            if len(self._finished) == len(self.dag.task_dict):
                self._done.set()
        for ready_id in ready:
            self._submit(ready_id)

    def _cascade(self, task_id: str) -> list[str]:
        """The downstream tasks of `task_id` now ready to run; those decided without running
        (skipped / upstream_failed) settle their own downstream too."""
        ready: list[str] = []
        for downstream_id in self.dag.task_dict[task_id].downstream_task_ids:
            downstream = self.dag.task_dict[downstream_id]
            if downstream_id in self._finished or not downstream.upstream_task_ids <= self._finished:
                continue
            verdict = self._trigger_rule(downstream)
            if verdict == "run":
                ready.append(downstream_id)
            else:
                self._finished.add(downstream_id)
                self.records[downstream_id].state = verdict
                ready.extend(self._cascade(downstream_id))
        return ready

    def _trigger_rule(self, task: Any) -> str:
        states = {self.records[u].state for u in task.upstream_task_ids}
        if states & {"failed", "upstream_failed"}:
            return "upstream_failed"
        if str(task.trigger_rule) in ("none_failed", "TriggerRule.NONE_FAILED") or states <= {"success"}:
            return "run"
        return "skipped"


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("trigger ended without an event")


def services_dag(config: MigrationConfig, dag_id: str) -> DAG:
    plan = build_plan(config)
    keep = {task_id for task_id, step in plan.steps.items() if step.phase == "services"}
    phase = MigrationPlan(
        steps={task_id: plan.steps[task_id] for task_id in keep},
        edges={(a, b) for a, b in plan.edges if a in keep and b in keep},
    )
    dag = DAG(dag_id, schedule=None)
    build_airflow_graph(phase, dag)
    return dag


def bench_config(document: dict[str, Any], version: str, poll_seconds: float) -> MigrationConfig:
    document = copy.deepcopy(document)
    document["blue_green"].update(
        rollback_window_seconds=0.01, rollout_poll_seconds=poll_seconds, smoke_requests=10
    )
    for node in document["services"].values():
        if node.get("kind") == "infrastructure":
            node["external"] = True
        else:
            node["image"] = node["image"].rsplit(":", 1)[0] + f":{version}"
    return parse_config(yaml.safe_dump(document))


def critical_path(config: MigrationConfig, weight: Callable[[str], float]) -> float:
    longest: dict[str, float] = {}
    for name in config.topological_order():
        node = config.services[name]
        longest[name] = weight(name) + max((longest[d] for d in node.depends_on), default=0.0)
    return max(longest.values(), default=0.0)


@contextmanager
def emulator(pod_ready_seconds: float) -> Iterator[KubeEmulator]:
    with (
        KubeEmulator(pod_ready_delay_seconds=pod_ready_seconds) as kube,
        tempfile.TemporaryDirectory() as scratch,
    ):
        kubeconfig = Path(scratch) / "config"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "lab", "cluster": {"server": kube.url}}],
                    "users": [{"name": "lab", "user": {}}],
                    "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
                    "current-context": "lab",
                }
            )
        )
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        )
        kube.kubeconfig = kubeconfig  # type: ignore[attr-defined]
        yield kube


def prepare_namespace(kube: KubeEmulator, config: MigrationConfig) -> None:
    api = config_client(kube)
    core = client.CoreV1Api(api)
    production = config.environments.production
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=production.namespace)))
    if production.service_secret:
        core.create_namespaced_secret(
            production.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=production.service_secret),
                string_data={"DATABASE_URL": "postgresql://app@127.0.0.1:1/pyairtable"},
            ),
        )


def config_client(kube: KubeEmulator) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[attr-defined]


def measure(label: str, config: MigrationConfig, dag_id: str) -> dict[str, float]:
    run = InProcessExecutor(services_dag(config, dag_id)).run()
    failed = {task_id: r.error for task_id, r in run.records.items() if r.state not in ("success", "skipped")}
    if failed:
        raise RuntimeError(
            f"{label}: {len(failed)} task(s) did not succeed: {dict(list(failed.items())[:3])}"
        )
    waits = {}
    for task_id, record in run.records.items():
        parts = task_id.split(".")
        if parts[-1] == "wait_rollout":
            waits[parts[2]] = record.waited
    path = critical_path(config, lambda name: waits.get(name, 0.0))
    overhead = run.wall / path - 1 if path else float("inf")
    busy: dict[str, list[float]] = {}
    for task_id, record in run.records.items():
        if record.state == "success":
            busy.setdefault(task_id.rsplit(".", 1)[-1], []).append(record.end - record.start - record.waited)
    steps = {step: sum(times) / len(times) for step, times in busy.items()}
    return {
        "wall": run.wall,
        "critical": path,
        "overhead": overhead,
        "tasks": len(run.records),
        **{f"step:{step}": seconds for step, seconds in steps.items()},
    }


def quiet_logs() -> None:
    """Task and trigger logs at ERROR, to stderr: stdout carries only the figures."""
    from airflow.sdk.log import configure_logging

    logging.disable(logging.WARNING)
    configure_logging.cache_clear()
    configure_logging(log_level="ERROR", output=sys.stderr)


def figures(pod_ready: float = 3.0, count: int = 100, poll: float = 0.25) -> list[Figure]:
    quiet_logs()
    generated = with_services(random_acyclic_services(count, seed=count))
    cases = [("PyAirtable (16 nodes)", real_document()), (f"generated ({count} services)", generated)]
    note(
        f"  services phase, pods Ready after {pod_ready:g} s, rollout poll {poll:g} s, "
        f"{WORKERS} workers + 1 triggerer loop"
    )
    result = []
    with emulator(pod_ready) as kube:
        for index, (label, document) in enumerate(cases):
            first = bench_config(document, "1.0.0", poll)
            upgrade = bench_config(document, "2.0.0", poll)
            namespace = first.environments.production.namespace
            if index:
                client.CoreV1Api(config_client(kube)).delete_namespace(namespace)
                time.sleep(pod_ready)  # let the previous case's pods drain
            prepare_namespace(kube, first)
            for scenario, cfg in (("first deploy", first), ("blue -> green", upgrade)):
                figures = measure(label, cfg, f"bench_services_{index}_{scenario[:5].strip()}")
                busy = {key[5:]: value * 1000 for key, value in figures.items() if key.startswith("step:")}
                note(
                    f"  {label}, {scenario}: {figures['tasks']:.0f} tasks, wall {figures['wall']:.1f} s, "
                    f"critical-path rollouts {figures['critical']:.1f} s; mean task time outside waits, ms: "
                    + ", ".join(f"{step} {ms:.0f}" for step, ms in sorted(busy.items()))
                )
                result.append(
                    at_most(
                        PHASE,
                        f"orchestration overhead, {label}, {scenario}",
                        figures["overhead"] * 100,
                        "%",
                        GOAL * 100,
                    )
                )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--pod-ready", type=float, default=3.0, help="seconds until a pod is Ready (default 3)"
    )
    parser.add_argument(
        "--count", type=int, default=100, help="services in the generated graph (default 100)"
    )
    parser.add_argument("--poll", type=float, default=0.25, help="rollout poll interval, s (default 0.25)")
    args = parser.parse_args()
    print(format_table(figures(args.pod_ready, args.count, args.poll)))


if __name__ == "__main__":
    main()
