"""`make demo`: the whole migration on a fresh lab, under load, told as an operator's console.

Starts a clean lab, runs the load generator (HTTP through the weighted edge, commits through
the pooler, logged-in users writing their Redis sessions through the edge, each write an event on
Kafka; every acknowledged commit, session write and event in a ledger), runs the migration DAG in
apply mode with `dag.test()`, and prints one line per task as it finishes (services and preflight: one per
service and one for all checks) with the figures that matter there: lag, weights, gate samples,
the write stall. Airflow's own output goes to a log file whose path is printed first. Then the
summary: phase durations, both write stalls, failed requests, lost writes, sessions and events, rows
validated, the report's path. Exits non-zero if the migration failed or anything was lost.

The lab's config (lab/migration_config.py) shortens the waits that protect real users (bake,
cutover TTL, rollback window), and the demo seeds the records with a short DNS TTL (`--ttl`,
`make demo TTL=300` to wait out production's), so the run fits in a few minutes. Demo mode answers
no approvals: `require_approvals` is off for this run, and the console says so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import faulthandler
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import psycopg2
import redis

from lab.connections import environment
from lab.kafka_ledger import check_kafka_ledger
from lab.kube_seed import kafka_ledger_dir
from lab.ledger import check_ledger
from lab.loadgen import LoadProcess, app_dsn
from lab.migration_config import CONFIG_ENV, lab_config_path
from lab.session_ledger import check_session_ledger
from lab.settings import REPO_ROOT, LabSettings
from lab.supervisor import down, up
from pyairtable_migration.config import load_config
from pyairtable_migration.plan import PHASES, PREFLIGHT_GATE

DAG_ID = "pyairtable_production_migration"
# Long enough that clients really cache and the cutover really waits; short enough for a demo.
DEMO_TTL_SECONDS = 10
BAKE_SECONDS = 15
# Logged-in users writing to their Redis sessions through the edge, as in the e2e tests.
USERS = 20
SESSION_RATE = 40.0
FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")
# No task changing state for this long (beyond the DNS TTL the cutover waits out) is no wait of the
# lab's config: the console names what runs and the log gets every thread's stack; later the demo stops.
QUIET_WARN_SECONDS = 300
QUIET_GIVE_UP_SECONDS = 900


# --- the console ----------------------------------------------------------------------------------


class Console:
    """Lines for the operator on the terminal the demo started on; Airflow's output goes elsewhere."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out, self.started = out, started
        self.lock = threading.Lock()
        self.live = ""

    def clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"[{seconds // 60:2d}:{seconds % 60:02d}]"

    def line(self, text: str) -> None:
        with self.lock:
            self._clear_live()
            self.out.write(f"{self.clock()} {text}\n")
            self._draw_live()
            self.out.flush()

    def status(self, text: str) -> None:
        """A figure that changes every second (lag, bake): one line, redrawn in place on a terminal."""
        if not self.out.isatty():
            return
        with self.lock:
            self._clear_live()
            self.live = f"{self.clock()}   … {text}"[:150]
            self._draw_live()
            self.out.flush()

    def _clear_live(self) -> None:
        if self.live:
            self.out.write("\r\033[K")

    def _draw_live(self) -> None:
        if self.live:
            self.out.write(self.live)


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (and its children's) to `log_path`; yield the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    saved_err = os.dup(2)
    with log_path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(terminal.fileno(), 1)
            os.dup2(saved_err, 2)
            os.close(saved_err)


# --- what each finished task says --------------------------------------------------------------------


def _size(value: Any) -> str:
    number = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(number) < 1024 or unit == "GB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return ""


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.2f} %"


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f} s"


def figures(task_id: str, value: Any) -> str:
    """The figures a finished task's summary (XCom) holds that an operator wants to see, in words."""
    if not isinstance(value, Mapping):
        return ""
    name = task_id.rsplit(".", 1)[-1]
    describe = FIGURES.get(name) or (FIGURES["shift_to"] if name.startswith("shift_to_") else None)
    try:
        return describe(value) if describe else ""
    except (KeyError, TypeError, ValueError):  # a summary of another shape: the log has it
        return ""


def _gate(value: Mapping[str, Any]) -> str:
    gate = value.get("gate") or {}
    peaks, limits = gate.get("peaks") or {}, gate.get("limits") or {}
    return (
        f"production {value['weight']} % · gate {gate.get('status')}: {gate.get('complete_samples')}/"
        f"{gate.get('samples')} samples, peak errors {_pct(peaks.get('error_ratio'))} "
        f"(≤ {_pct(limits.get('error_ratio'))}), p99 {_seconds(peaks.get('p99'))} "
        f"(≤ {_seconds(limits.get('p99'))})"
    )


def _ttl(value: Mapping[str, Any]) -> str:
    changed = value.get("changed") or []
    said = changed[0].split(": ", 1)[-1] if changed else "TTL unchanged"
    waited = value.get("wait_seconds")
    return said + (f"; waited out the old TTL ({waited} s)" if waited is not None else "")


def _alerting(figures: Mapping[str, Any] | None) -> str:
    """The monitoring check's alerting, when it checked it: rules, and who delivered the test alert."""
    if figures is None:
        return ""
    delivered = [name for name, counts in figures.get("integrations", {}).items() if counts["delivered"]]
    return (
        f"; {figures['rules_healthy']}/{figures['rules']} alert rules healthy, test alert "
        f"notified by {', '.join(delivered) or 'nobody'}"
    )


def _verdicts(value: Mapping[str, Any]) -> str:
    verdicts = [str(s.get("verdict")) for s in (value.get("services") or {}).values()]
    return ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))) + " (p95 against the budget)"


FIGURES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "copy_schema": lambda v: (
        f"{v['tables']} tables, {len(v.get('deferred_indexes') or [])} indexes"
        + (f" and {len(v['deferred_keys'])} keys" if v.get("deferred_keys") else "")
        + " deferred"
    ),
    "wait_initial_sync": lambda v: (
        f"{v['tables']} tables replicating (state r) after {float(v['seconds']):.1f} s"
    ),
    "lag_gate": lambda v: (
        f"lag {' → '.join(_size(x) for x in v['lags'])} over the last {len(v['lags'])} samples; "
        f"a commit arrives in {v['lag_seconds'] * 1000:.0f} ms"
    ),
    "validate_data": lambda v: (
        f"{v.get('rows_validated', v.get('rows'))} rows compared (counts, chunked hashes), "
        f"{len(v.get('differences') or [])} differences"
    ),
    "sync_redis": lambda v: f"{v['mode']}, caught up in {float(v['seconds']):.1f} s",
    "validate_redis": lambda v: f"{v['keys']} keys, {v['expiring']} with a TTL, the same on both sides",
    "switch_database": lambda v: (
        f"writers on the {v['writers_on']}; write stall {v['write_stall_ms']} ms "
        f"(catch-up {v['catch_up_ms']} ms), served there {v['served_ms']} ms after, "
        f"{v['sequences_moved']} sequences moved"
    ),
    "switch_redis": lambda v: (
        f"writers moved through the endpoint: stall {v['stall_ms']} ms (catch-up {v['catch_up_ms']} ms), "
        f"marked switched at {v['switched_at']}"
        if "stall_ms" in v
        else f"target promoted ({v['mode']}), marked switched at {v['switched_at']}"
    ),
    "lower_ttl": _ttl,
    "finalize": _ttl,
    "shift_to": _gate,
    "approve": lambda v: f"approved by {v['by']}",
    "approve_100": lambda v: f"approved by {v['by']}",
    "latency_slos": _verdicts,
    "data_parity": lambda v: (
        f"{v['rows']:,} rows in {v['tables']} tables, {len(v['differences'])} differences ({v['compared']})"
    ),
    "full_backup": lambda v: (
        f"full backup {v['backup']['label']} in {v['seconds']} s"
        if v["taken"]
        else "this run's backup exists"
    ),
    "backup": lambda v: (
        f"backup {v['backup']['label']} verified, restored to a scratch cluster in "
        f"{v['restore_seconds']:.1f} s, {v['compare']['rows']:,} rows in {v['compare']['tables']} tables "
        "equal to production"
    ),
    "security": lambda v: (
        f"{len(v['problems'])} problems; {v['documents_searched']} rendered fields and XComs searched "
        f"for {v['secrets_searched']} passwords"
    ),
    "monitoring": lambda v: f"{v['up']}/{v['targets']} production targets up" + _alerting(v.get("alerting")),
    "report": lambda v: "HTML + JSON written",
}


def service_line(service: str, states: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """One line for a service's whole blue-green group."""
    group = {task_id.rsplit(".", 1)[-1]: task_id for task_id in states}
    promoted = values.get(group.get("promote", ""), {}) or {}
    image = str((values.get(group.get("deploy", ""), {}) or {}).get("image") or "")
    smoke = values.get(group.get("smoke_test", ""), {}) or {}
    bad = {
        step: states[task_id]
        for step, task_id in group.items()
        if states[task_id] not in ("success", "skipped")
    }
    mark = "✗" if bad else "✓"
    detail = f"{image.rsplit(':', 1)[-1]} live as {promoted.get('color') or '?'}"
    if smoke.get("p95_ms") is not None:
        detail += f", smoke p95 {float(smoke['p95_ms']):.0f} ms"
    if bad:
        detail = ", ".join(f"{step} {state}" for step, state in bad.items())
    return f"{mark} {service:20} {detail}"


# --- watching the run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskView:
    state: str
    start: dt.datetime | None
    end: dt.datetime | None
    try_number: int


class RunWatcher(threading.Thread):
    """Reads the run's task instances from the metadata database each second and tells the console.

    It is also the demo's guard against waiting forever: when no task changes state for `warn_after`
    seconds it says which tasks it waits on and writes every thread's stack to the log; after
    `give_up_after` it interrupts the main thread (SIGINT), which stops the run and the lab.
    """

    def __init__(
        self,
        console: Console,
        since: dt.datetime,
        live: Callable[[dict[str, TaskView]], str],
        warn_after: float = QUIET_WARN_SECONDS,
        give_up_after: float = QUIET_GIVE_UP_SECONDS,
    ) -> None:
        super().__init__(daemon=True, name="demo-watcher")
        self.console, self.since, self.live = console, since, live
        self.warn_after, self.give_up_after = warn_after, give_up_after
        self.stopping = threading.Event()
        self.seen: dict[str, str] = {}
        self.told: set[str] = set()
        self.values: dict[str, Any] = {}
        self.phases_done: set[str] = set()
        self.changed = time.monotonic()
        self.warned = False
        self.gave_up = ""

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            with contextlib.suppress(Exception):  # a busy SQLite: look again in a second
                self.poll()
            self.guard()
        self.poll()

    def guard(self) -> None:
        quiet = time.monotonic() - self.changed
        if quiet >= self.warn_after and not self.warned:
            self.warned = True
            waiting = ", ".join(f"{t} {s}" for t, s in sorted(self.seen.items()) if s not in FINISHED)
            self.console.line(
                f"demo: no task has changed state for {quiet:.0f} s; waiting on: "
                f"{waiting or 'the run to start'}; every thread's stack is in Airflow's log"
            )
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if quiet >= self.give_up_after and not self.gave_up:
            self.gave_up = f"no task changed state for {quiet:.0f} s"
            self.console.line(f"demo: giving up: {self.gave_up}; stopping the run and the lab")
            os.kill(os.getpid(), signal.SIGINT)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def read(self) -> tuple[str | None, dict[str, TaskView]]:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            run_id = session.scalar(
                select(DagRun.run_id)
                .where(DagRun.dag_id == DAG_ID, DagRun.run_after >= self.since)
                .order_by(DagRun.id.desc())
                .limit(1)
            )
            if run_id is None:
                return None, {}
            rows = session.execute(
                select(
                    TaskInstance.task_id,
                    TaskInstance.state,
                    TaskInstance.start_date,
                    TaskInstance.end_date,
                    TaskInstance.try_number,
                ).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
            ).all()
        return run_id, {r[0]: TaskView(str(r[1] or "none"), r[2], r[3], r[4] or 0) for r in rows}

    def value(self, run_id: str, task_id: str) -> Any:
        if task_id not in self.values:
            from airflow.models.xcom import XComModel
            from airflow.utils.session import create_session

            with create_session() as session:
                row = session.scalars(
                    XComModel.get_many(run_id=run_id, key="return_value", task_ids=task_id, dag_ids=DAG_ID)
                ).first()
                self.values[task_id] = XComModel.deserialize_value(row) if row is not None else None
        return self.values[task_id]

    def poll(self) -> None:
        run_id, tasks = self.read()
        if run_id is None:
            return
        for task_id, view in sorted(
            tasks.items(), key=lambda item: item[1].end or item[1].start or self.since
        ):
            previous = self.seen.get(task_id)
            self.seen[task_id] = view.state
            if view.state == previous:
                continue
            self.changed, self.warned = time.monotonic(), False
            if view.state == "up_for_retry":
                self.console.line(
                    f"{_phase(task_id):10} ↻ {_short(task_id)} failed (try {view.try_number}); retrying"
                )
            elif view.state == "failed" and task_id.startswith(("preflight.", "services.")):
                self.console.line(f"{_phase(task_id):10} ✗ {_short(task_id)} failed (try {view.try_number})")
        for phase in PHASES:
            inside = {t: v for t, v in tasks.items() if _phase(t) == phase}
            if not inside:
                continue
            if phase == "preflight":
                # All checks on one line, which is also the phase's.
                if self.tell_group(phase, inside, self.preflight_line):
                    self.phases_done.add(phase)
            elif phase == "services":
                for service, group in _service_groups(inside).items():
                    self.tell_group(
                        service,
                        group,
                        functools.partial(self.service_line, run_id, service),
                    )
                for task_id, view in inside.items():
                    if task_id.count(".") == 1:
                        self.tell_task(run_id, task_id, view)
            else:
                for task_id, view in sorted(inside.items(), key=lambda item: item[1].end or self.since):
                    self.tell_task(run_id, task_id, view)
            if phase not in self.phases_done and all(v.state in FINISHED for v in inside.values()):
                self.phases_done.add(phase)
                failed = sum(1 for v in inside.values() if v.state in ("failed", "upstream_failed"))
                outcome = f"{failed} task(s) failed" if failed else "done"
                self.console.line(f"{phase:10} ━ {outcome} in {_span(inside.values()):.1f} s")
        running = {
            t: v
            for t, v in tasks.items()
            if v.state in ("running", "deferred", "queued", "scheduled", "awaiting_input")
        }
        if running:
            self.console.status(self.live(running))

    def tell_task(self, run_id: str, task_id: str, view: TaskView) -> None:
        if view.state not in FINISHED or task_id in self.told:
            return
        self.told.add(task_id)
        if view.state == "skipped" and _short(task_id).startswith("approve"):
            return  # approvals are off in demo mode, as the console said at the start
        took = f"{(view.end - view.start).total_seconds():.1f} s" if view.start and view.end else ""
        mark = {"success": "✓", "skipped": "-", "failed": "✗"}.get(view.state, "✗")
        said = figures(task_id, self.value(run_id, task_id)) if view.state == "success" else view.state
        self.console.line(f"{_phase(task_id):10} {mark} {_short(task_id):20} {took:>7}  {said}".rstrip())

    def tell_group(
        self, name: str, group: Mapping[str, TaskView], describe: Callable[[Mapping[str, TaskView]], str]
    ) -> bool:
        """Tell the group's line once all its tasks finished; whether it was told now."""
        if name in self.told or not all(v.state in FINISHED for v in group.values()):
            return False
        self.told.add(name)
        phase = _phase(next(iter(group)))
        self.console.line(f"{phase:10} {describe(group)}")
        return True

    def service_line(self, run_id: str, service: str, group: Mapping[str, TaskView]) -> str:
        states = {task_id: view.state for task_id, view in group.items()}
        if service == "infrastructure":
            ready = [t.split(".")[2] for t, state in states.items() if state == "success"]
            other = [f"{t.split('.')[2]} {state}" for t, state in states.items() if state != "success"]
            return f"✓ infrastructure ready: {', '.join(sorted(ready))}" + (
                f"; {', '.join(sorted(other))}" if other else ""
            )
        return service_line(service, states, {task_id: self.value(run_id, task_id) for task_id in group})

    @staticmethod
    def preflight_line(group: Mapping[str, TaskView]) -> str:
        bad = [_short(t) for t, v in group.items() if v.state != "success"]
        names = [
            _short(t).removeprefix("check_") for t in group if t != PREFLIGHT_GATE
        ]  # the gate is no check
        took = f"in {_span(group.values()):.1f} s"
        return (
            f"✗ failed: {', '.join(bad)} {took}"
            if bad
            else f"✓ {len(names)} checks passed {took}: {', '.join(names)}"
        )


def _phase(task_id: str) -> str:
    return task_id.split(".", 1)[0]


def _short(task_id: str) -> str:
    return task_id.rsplit(".", 1)[-1]


def _service_groups(tasks: Mapping[str, TaskView]) -> dict[str, dict[str, TaskView]]:
    """services.<tier>.<service>.<step> grouped by service; the infrastructure checks as one group."""
    groups: dict[str, dict[str, TaskView]] = {}
    for task_id, view in tasks.items():
        parts = task_id.split(".")
        if len(parts) == 4:
            key = "infrastructure" if parts[1] == "infrastructure" else parts[2]
            groups.setdefault(key, {})[task_id] = view
    return groups


def _span(views: Any) -> float:
    starts = [v.start for v in views if v.start]
    ends = [v.end for v in views if v.end]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


# --- the run ------------------------------------------------------------------------------------------


def run_demo(settings: LabSettings, scale: int, http_rate: float, db_rate: float, log_path: Path) -> int:
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    with output_to(log_path) as terminal:
        console = Console(terminal, started)
        console.line(f"demo: Airflow's own logs go to {log_path}")
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True)
        down(settings, purge=True)
        up(settings, scale)
        console.line(
            f"demo: clean lab up ({scale:,} records); DNS records seeded with a {settings.dns_initial_ttl} s "
            "TTL (production: 300 s; `make demo TTL=300` waits that out)"
        )
        os.environ.update(environment(settings))
        os.environ[CONFIG_ENV] = str(lab_config_path(settings))
        ledger = settings.data_dir / "demo-ledger.log"
        config = load_config(os.environ[CONFIG_ENV])
        load = LoadProcess(
            settings,
            http_rate=http_rate,
            db_rate=db_rate,
            ledger_path=ledger,
            users=USERS,
            session_rate=SESSION_RATE,
        )
        load.start()
        console.line(
            f"demo: load {http_rate:g} req/s through DNS, {db_rate:g} commits/s through PgBouncer, {USERS} "
            f"users writing {SESSION_RATE:g} session writes/s through the Redis endpoint; "
            f"approvals answered automatically (require_approvals=false); bake {BAKE_SECONDS} s per step"
        )
        from pyairtable_migration.builder import build_migration_dag

        dag = build_migration_dag(config, config_path=os.environ[CONFIG_ENV])
        watcher = RunWatcher(
            console,
            dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5),
            live_figures(config),
            warn_after=QUIET_WARN_SECONDS + settings.dns_initial_ttl,
            give_up_after=QUIET_GIVE_UP_SECONDS + settings.dns_initial_ttl,
        )
        watcher.start()
        try:
            run = dag.test(
                run_conf={"mode": "apply", "require_approvals": False, "bake_seconds": BAKE_SECONDS}
            )
        except KeyboardInterrupt:
            run = None
        finally:
            watcher.stop()
            figures_ = load.stop()
        if run is None:
            down(settings, purge=True)
            why = watcher.gave_up or "interrupted"
            terminal.write(f"demo stopped ({why}); the lab is down; Airflow's logs: {log_path}\n")
            return 1
        with psycopg2.connect(app_dsn(settings)) as connection:
            ledger_report = check_ledger(ledger, connection)
        connection.close()
        with redis.Redis(host=settings.host, port=settings.redis_endpoint_port) as sessions_store:
            session_report = check_session_ledger(load.session_ledger_path, sessions_store)
        groups = list(config.kafka.consumer_groups) if config.kafka else []
        events_report = check_kafka_ledger(kafka_ledger_dir(settings), 60, groups)
        # A migrated lab must not be mistaken for a fresh one by `make test`.
        down(settings, purge=True)
    results = watcher.values
    failed_tasks = sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed")
    gap_ms, gap_end = figures_["longest_commit_gap_ms"], figures_["longest_commit_gap_ended_at"]
    during = running_during(run, gap_end - gap_ms / 1000, gap_end) if gap_end else []
    phases = " · ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phase_durations(run).items())
    rows = find_figure(results, "rows_validated", "rows_compared", "rows")
    switch = results.get("switchover.switch_database") or {}
    redis_switch = results.get("switchover.switch_redis") or {}
    users = figures_.get("sessions") or {}
    session_writes = {env: v["session_writes"] for env, v in (users.get("by_environment") or {}).items()}
    lines = [
        "=== PyAirtable migration demo ===",
        f"result:       {run.state}" + (f" (failed: {', '.join(failed_tasks)})" if failed_tasks else ""),
        f"phases:       {phases}",
        f"write stall:  PostgreSQL {switch.get('write_stall_ms')} ms, Redis "
        f"{redis_switch.get('stall_ms')} ms (switchover, measured by the switch tasks)",
        f"requests:     {figures_['http_requests']} sent, {figures_['http_failures']} failed, "
        f"by environment {figures_['http_by_environment']}",
        f"commits:      {figures_['db_commits']} acknowledged, {figures_['db_failures']} failed, "
        f"{ledger_report.lost} of {ledger_report.checked} lost (ledger); longest gap {gap_ms:.0f} ms"
        + (f" (while running: {', '.join(during)})" if during else ""),
        f"users:        {users.get('logins_succeeded')} of {users.get('logins_attempted')} logins, "
        f"{users.get('session_writes')} session writes, {session_report.lost} of "
        f"{session_report.acknowledged} lost (ledger), {users.get('sessions_lost')} valid sessions "
        f"rejected, {users.get('rate_counters_reset')} rate counters reset; session writes by "
        f"environment {session_writes}",
        f"events:       {events_report.summary()}",
        f"rows checked: {rows}",
        f"report:       {find_figure(results, 'html', 'report_path')}",
        f"demo took {time.monotonic() - started:.0f} s; Airflow's logs: {log_path}",
    ]
    terminal.write("\n".join(lines) + "\n")
    terminal.close()
    ok = (
        run.state == "success"
        and ledger_report.lost == 0
        and figures_["db_failures"] == 0
        and session_report.lost == 0
        and users.get("sessions_lost") == 0
        and not events_report.lost
    )
    return 0 if ok else 1


def live_figures(config: Any) -> Callable[[dict[str, TaskView]], str]:
    """What the console shows in place while tasks wait: the lag, the weights, how far the bake is."""

    def describe(running: dict[str, TaskView]) -> str:
        now = dt.datetime.now(dt.UTC)
        parts = []
        for task_id, view in sorted(running.items()):
            if view.state not in ("running", "deferred"):
                continue
            took = f" {(now - view.start).total_seconds():.0f} s" if view.start else ""
            parts.append(f"{task_id} {view.state}{took}")
            with contextlib.suppress(Exception):
                parts.extend(_live_detail(config, task_id))
        return "; ".join(parts) or "waiting for the next task"

    return describe


def _live_detail(config: Any, task_id: str) -> list[str]:
    from pyairtable_migration import status

    if task_id in ("database.lag_gate", "database.wait_initial_sync"):
        replication = status.database_status(config)["replication"]
        forward = next(iter(replication.values()))
        return [f"lag {_size(forward.get('lag_bytes'))}"]
    if task_id.startswith("traffic."):
        environments = config.environments
        sets = next(iter(status.dns_status(config).values()))
        production = sets[environments.production.set_identifier]
        staging = sets[environments.staging.set_identifier]
        return [
            f"weights production {production['weight']} / staging {staging['weight']}, "
            f"TTL {production['ttl']} s"
        ]
    return []


def phase_durations(run: Any) -> dict[str, float]:
    """Each phase's wall time, first task start to last task end, in the order the phases began."""
    spans: dict[str, list[float]] = {}
    for ti in run.get_task_instances():
        if ti.start_date and ti.end_date:
            phase = ti.task_id.split(".", 1)[0]
            span = spans.setdefault(phase, [ti.start_date.timestamp(), ti.end_date.timestamp()])
            span[0], span[1] = min(span[0], ti.start_date.timestamp()), max(span[1], ti.end_date.timestamp())
    by_start = sorted(spans.items(), key=lambda item: item[1][0])
    return {phase: end - start for phase, (start, end) in by_start}


def running_during(run: Any, start: float, end: float) -> list[str]:
    """The tasks that were running at some moment of [start, end] (epoch seconds)."""
    spans = [(ti.task_id, ti.start_date, ti.end_date) for ti in run.get_task_instances()]
    return sorted(
        task_id
        for task_id, began, ended in spans
        if began and ended and began.timestamp() <= end and ended.timestamp() >= start
    )


def find_figure(values: Mapping[str, Any], *names: str) -> Any:
    """The first of `names` found in any task's returned summary (XCom), depth-first."""
    for value in values.values():
        if isinstance(value, Mapping):
            for name in names:
                if name in value:
                    return value[name]
            nested = find_figure(value, *names)
            if nested is not None:
                return nested
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=20_000, help="records seeded on the source")
    parser.add_argument("--http-rate", type=float, default=100.0)
    parser.add_argument("--db-rate", type=float, default=200.0)
    parser.add_argument(
        "--ttl",
        type=int,
        default=int(os.environ.get("LAB_DNS_INITIAL_TTL", DEMO_TTL_SECONDS)),
        help="TTL (s) of the seeded DNS records, which the cutover waits out (LAB_DNS_INITIAL_TTL)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=Path(os.environ.get("AIRFLOW_HOME", REPO_ROOT / ".airflow")) / "demo.log",
        help="where Airflow's own output goes",
    )
    args = parser.parse_args(argv)
    settings = dataclasses.replace(LabSettings.from_env(), dns_initial_ttl=args.ttl)
    return run_demo(settings, args.scale, args.http_rate, args.db_rate, args.log.resolve())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
