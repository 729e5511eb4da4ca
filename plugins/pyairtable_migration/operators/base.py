"""What the migration's operators do alike: plan mode, waiting on a trigger, and failing once
with every problem listed; the decision every undo beside a phase shares (`PhaseUndo`); and the
bases every operator on the two PostgreSQL clusters shares (the database phase, the switchover and
its rollback).

Plan mode (run param `mode` = plan) only logs what a task would do, so a plan run is safe against
production. A long wait is handed to the triggerer, which reports success or failure as an event
that `execute_complete` turns into the task's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from functools import cache
from typing import Any, ClassVar, NoReturn, TypeVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.triggers.base import BaseTrigger

from pyairtable_migration.dns.weights import sending_users_to
from pyairtable_migration.hooks.database import MigrationError, MigrationPostgresHook
from pyairtable_migration.topology import Pooler, Writers, writers
from pyairtable_migration.triggers.base import OK

# Each trigger keeps its own deadline and reports running past it as an event; the task's timeout
# only backs that up (a dead triggerer), so it waits this much longer.
DEFERRAL_MARGIN = timedelta(minutes=5)

T = TypeVar("T")


def run_mode(context: Context) -> str:
    """The run's mode; anything but an explicit "apply" is a plan, so nothing changes by accident."""
    return "apply" if (context.get("params") or {}).get("mode") == "apply" else "plan"


# The migration's phases a rollback step can undo, in the migration's order: `from_phase` undoes the
# chosen one and every later one.
UNDOABLE_PHASES = ("database", "services", "switchover", "traffic")
ROLLBACK_SCOPES = ("all", "traffic", "services", "from_phase")
ACTIVE_RUN_STATES = ("queued", "running")


def outside_rollback_scope(params: Mapping[str, Any], phase: str, service: str | None = None) -> str | None:
    """Why a step undoing `phase` (one `service` of it) is outside the run's rollback scope, or None.

    The scope is the run's `scope` param; a run without one (the migration's own DAG) undoes all.
    """
    scope = params.get("scope") or "all"
    if scope == "all":
        return None
    if scope == "traffic":
        return None if phase == "traffic" else f"scope traffic undoes the traffic phase only, not {phase}"
    if scope == "services":
        chosen = list(params.get("services") or [])
        if phase == "services" and service in chosen:
            return None
        what = f"service {service}" if phase == "services" else f"the {phase} phase"
        return f"scope services undoes only the services {chosen}, not {what}"
    if scope == "from_phase":
        start = params.get("from_phase")
        if start not in UNDOABLE_PHASES:
            raise fail(f"from_phase must be one of {list(UNDOABLE_PHASES)}, got {start!r}")
        if UNDOABLE_PHASES.index(phase) >= UNDOABLE_PHASES.index(start):
            return None
        return f"scope from_phase {start} undoes {start} and the phases after it, not {phase}"
    raise fail(f"scope must be one of {list(ROLLBACK_SCOPES)}, got {scope!r}")


def active_runs(context: Context, dag_id: str) -> list[str]:
    """The runs of `dag_id` now queued or running, each as `run_id (state)`.

    Read through the Task SDK (a task has no metadata-database session in Airflow 3): a count by
    state, then each run id that has task instances with its state; a queued run that has none yet
    is counted without a name.
    """
    ti = context["ti"]
    count = ti.get_dr_count(dag_id=dag_id, states=list(ACTIVE_RUN_STATES))
    if not count:
        return []
    named = []
    for run_id in sorted(ti.get_task_states(dag_id=dag_id)):
        # A DagRunState (a str enum) in the Task SDK; its value is what the UI shows.
        state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        state = str(getattr(state, "value", state))
        if state in ACTIVE_RUN_STATES:
            named.append(f"{run_id} ({state})")
    if len(named) < count:
        named.append(f"{count - len(named)} more queued, no task started yet")
    return named


def run_clear_number(context: Context) -> int:
    """Which clear of the run this try belongs to (0 before any). A phase's last task records it in
    its result, so the phase's undo can tell a clear of its own from a re-run of the phase."""
    return int(context["dag_run"].clear_number or 0)


def undo_reason(
    failed: Sequence[str],
    finalized_at_clear: int | None,
    clear_number: int,
    try_number: int,
    acts_on_failure: bool = True,
) -> str | None:
    """Why an undo task of the migration's own DAG acts now, or None (it skips).

    It acts when the run was cleared since the phase's last task ended (`finalized_at_clear`, the
    run's clear number when that task last succeeded; None when it has not): the clear that started
    this try left the phase alone, so an engineer cleared the undo itself. A clear that re-runs the
    phase (a step cleared with downstream) re-runs its last task too, which then records this
    clear's number: the undo stays skipped.

    With `acts_on_failure` (traffic: a belt to the step's own revert) it also acts when a task of
    its phase failed in this run, and, without that record (the phase never got so far), on any try
    after the first (a clear of the undo's own). Without it (services, switchover) failed tasks are
    ignored: a failure is recovered by fixing the step and clearing it with downstream, which
    re-runs the undo too and, before the phase has ended, cannot be told from a clear of the undo
    alone; so such an undo acts only on a clear after the phase ended.
    """
    if failed and acts_on_failure:
        return f"a step of the phase failed in this run ({', '.join(failed)})"
    if finalized_at_clear is not None and finalized_at_clear < clear_number:
        return (
            f"cleared by hand: the run was cleared (clear #{clear_number}) after the phase ended "
            f"(clear #{finalized_at_clear}), and the phase was not run again"
        )
    if finalized_at_clear is None and try_number > 1 and acts_on_failure:
        return f"cleared by hand (try {try_number}; the phase never ran to its end)"
    return None


def fail(message: str) -> AirflowFailException:
    """A failure no retry can fix: Airflow fails the task at once."""
    return AirflowFailException(message)


def bulleted(heading: str, lines: Iterable[str]) -> str:
    """`heading:` and one indented `- line` each: a check names everything it found at once."""
    return f"{heading}:\n  - " + "\n  - ".join(lines)


class _Required:
    """The default of a declared argument that has none: the operator cannot be built without it."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


def _plain(value: Any) -> Any:
    """An argument's value as the operator keeps it: its own lists and dicts, never the caller's
    (a plan's tuples and mappings, shared between tasks), so rendering one task's templates
    cannot change another's."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@cache
def declared_arguments(operator: type[MigrationOperator]) -> dict[str, Any]:
    """Every argument an operator class declares, base classes first: name -> default (REQUIRED).

    An argument is an annotated class attribute of the project's operator classes, other than a
    ClassVar or an attribute Airflow's BaseOperator has (`template_fields`, `ui_color`, ...).
    """
    arguments: dict[str, Any] = {}
    for klass in reversed(operator.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, MigrationOperator)):
            continue
        for name, hint in vars(klass).get("__annotations__", {}).items():
            if str(hint).startswith("ClassVar") or hasattr(BaseOperator, name):
                continue
            arguments[name] = vars(klass).get(name, REQUIRED)
    return arguments


class MigrationOperator(BaseOperator):
    """Base of the migration's operators: declared arguments, plan mode, deferral to a trigger, and
    rollback scope.

    An operator declares its own arguments once, as annotated class attributes (a value is the
    default): this constructor takes them by keyword, keeps each as an attribute of the same name,
    and hands everything else to BaseOperator (`task_id`, `trigger_rule`, ...). A missing one fails
    naming the operator, the task and the argument; an unknown one fails in BaseOperator, named.

    A rollback step names the migration phase it undoes (`undoes`, and `undoes_service` for one
    service); outside the run's `scope` it is skipped before it reads anything. The check sits in
    the task itself, not in a branch task, so clearing a single task re-decides from the same run
    params and an out-of-scope task can never run by accident.
    """

    undoes: str | None = None
    undoes_service: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        values = {}
        missing = []
        for name, default in declared_arguments(type(self)).items():
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif default is REQUIRED:
                missing.append(name)
            else:
                values[name] = default
        if missing:
            task = kwargs.get("task_id")
            raise TypeError(f"{type(self).__name__} (task {task!r}) needs argument(s) {', '.join(missing)}")
        super().__init__(**kwargs)
        for name, value in values.items():
            setattr(self, name, _plain(value))

    def pre_execute(self, context: Any) -> None:
        if self.undoes is None:
            return
        reason = outside_rollback_scope(context.get("params") or {}, self.undoes, self.undoes_service)
        if reason is not None:
            self.log.info("Skipped, outside this rollback's scope: %s", reason)
            raise AirflowSkipException(f"outside this rollback's scope: {reason}")

    def planned(self, context: Context, *lines: str) -> bool:
        """In plan mode: log what would be done, and say so (the caller returns)."""
        if run_mode(context) != "plan":
            return False
        for line in lines:
            self.log.info("Plan: would %s", line)
        return True

    def defer_to(
        self, trigger: BaseTrigger, timeout_seconds: float, kwargs: dict[str, Any] | None = None
    ) -> NoReturn:
        """Wait on the triggerer; the task resumes in `execute_complete` with its event."""
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs=kwargs,
            timeout=timedelta(seconds=float(timeout_seconds)) + DEFERRAL_MARGIN,
        )

    @staticmethod
    def raise_on_failure(event: Mapping[str, Any], action: str) -> None:
        """The one reading of a trigger's event (`{"status", "message", ...}`, triggers/base.py): a
        wait that ended otherwise than "ok" fails the task with its message; "error" (the system
        could not be read) leaves the retry to try again, anything else fails at once."""
        status = event.get("status")
        if status == OK:
            return
        message = f"{action}: {event.get('message') or f'the wait ended with status {status!r}'}"
        if status == "error":
            raise AirflowException(message)
        raise fail(message)


class PhaseUndo(MigrationOperator):
    """Base of the undo tasks hanging beside a phase of the migration's own DAG (`traffic.undo`,
    `services.undo`, `switchover.undo`: after the phase's last task, trigger rule `all_done`,
    upstream of nothing). Whether one acts is decided here alone, by `undo_reason`;
    `acts_on_failure` says whether a failed step of the phase is reason enough by itself.

    :param finalized_by: the phase's last task; it records the run's clear number in its result
        (`run_clear_number`)
    :param not_undone_for: tasks of the phase whose failure moved nothing, so is no reason to undo
        (the load test: users stay where they are)
    """

    acts_on_failure: ClassVar[bool] = False
    # The skip's message: why nothing was undone, and how to undo with this task.
    not_asked: ClassVar[str]

    finalized_by: str
    not_undone_for: Sequence[str] = ()

    def undo_or_skip(self, context: Context) -> str:
        """Why this try undoes the phase; otherwise the task is skipped, saying how to undo."""
        ti = context["ti"]
        phase = self.task_id.split(".", 1)[0]
        states = ti.get_task_states(dag_id=ti.dag_id, task_group_id=phase, run_ids=[ti.run_id])
        states = states.get(ti.run_id, {})
        failed = sorted(
            t for t, state in states.items() if state == "failed" and t not in self.not_undone_for
        )
        # Only a last task that ended counts: one a later clear left upstream_failed keeps its old result.
        ended = states.get(self.finalized_by) == "success"
        finalized = (ti.xcom_pull(task_ids=self.finalized_by) or {}) if ended else {}
        why = undo_reason(
            failed,
            finalized.get("clear_number"),
            run_clear_number(context),
            ti.try_number,
            self.acts_on_failure,
        )
        if why is None:
            raise AirflowSkipException(f"nothing to undo: {self.not_asked}")
        return why

    def refuse_while_users_on_production(self, route53: Mapping[str, Any], refusing: str) -> None:
        """Fail, changing nothing, while any weighted record sends users to production, each named
        with its weights; read from Route53 as the traffic steps read it (route53_arguments)."""
        from pyairtable_migration.hooks.route53 import Route53WeightsHook  # loads boto3

        production = route53["production_set_identifier"]
        hook = Route53WeightsHook(aws_conn_id=route53["aws_conn_id"])
        zone_id = hook.hosted_zone_id(route53["hosted_zone"])
        records = hook.require_records(
            zone_id, route53["records"], (route53["staging_set_identifier"], production)
        )
        on_production = sending_users_to(records, production)
        if on_production:
            raise fail(
                f"not {refusing}: users are on production through {'; '.join(on_production)}; nothing "
                "changed. Clear traffic.undo first (every user back on staging), then this task again"
            )
        self.log.info("No record sends users to production (%s)", ", ".join(sorted(records)))


class ConnectionPairOperator(MigrationOperator):
    """Base of the operators that act on a source and a target, both by Airflow connection id."""

    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id")

    source_conn_id: str
    target_conn_id: str


class WritersReader(ConnectionPairOperator):
    """Base of the operators that must know where the database's writers go before they act: both
    clusters, and the poolers that send writers to one of them (`topology.writers`, the one reading).

    :param poolers: [{name, admin_conn_id, database}] as in the config
    """

    template_fields: Sequence[str] = (*ConnectionPairOperator.template_fields, "poolers")

    poolers: Sequence[Mapping[str, str]]

    def writers_now(self) -> Writers:
        """Where every pooler sends writers now, against both clusters' addresses."""
        source = MigrationPostgresHook(self.source_conn_id).address[:2]
        target = MigrationPostgresHook(self.target_conn_id).address[:2]
        return writers([Pooler.of(p) for p in self.poolers], source, target)


class DatabaseOperator(ConnectionPairOperator):
    """Base of the database operators: the two clusters, by Airflow connection id.

    :param source_conn_id: `postgres` connection to the source (staging) database
    :param target_conn_id: `postgres` connection to the target (production) database
    """

    ui_color = "#d7ecf9"

    def source(self) -> MigrationPostgresHook:
        return MigrationPostgresHook(self.source_conn_id)

    def target(self) -> MigrationPostgresHook:
        return MigrationPostgresHook(self.target_conn_id)

    def run(self, action: str, function: Callable[..., T], *args: Any) -> T:
        """Call function(*args); a MigrationError becomes a task failure with its text."""
        try:
            return function(*args)
        except MigrationError as exc:
            raise fail(f"{action}: {exc}") from None


class ReplicationOperator(DatabaseOperator):
    """Base of the operators on the forward replication (source -> target).

    :param publication: the source's publication of every user table
    :param subscription: the target's subscription to it (its slot on the source has the same name)
    """

    template_fields: Sequence[str] = (*DatabaseOperator.template_fields, "publication", "subscription")

    publication: str
    subscription: str


class ReplicationTopologyOperator(ReplicationOperator, WritersReader):
    """Base of the operators that need the whole arrangement the switchover works in: both
    replication directions, the poolers that send writers to one cluster, and the tables allowed
    REPLICA IDENTITY FULL (the preflight checks what the switchover then relies on).

    :param reverse_publication / reverse_subscription: reverse replication (target -> source)
    :param replica_identity_full: tables allowed to be set REPLICA IDENTITY FULL
    """

    template_fields: Sequence[str] = (
        *ReplicationOperator.template_fields,
        "poolers",
        "reverse_publication",
        "reverse_subscription",
        "replica_identity_full",
    )

    reverse_publication: str
    reverse_subscription: str
    replica_identity_full: Sequence[str] = ()
