"""The migration from a terminal, over Airflow's REST API v2: the seed's `run-migration.sh` commands.

    python -m pyairtable_migration.cli validate     the preflight only, on the live systems; changes nothing
    python -m pyairtable_migration.cli migrate [--wait] [--no-approvals] [--bake-seconds N]
    python -m pyairtable_migration.cli status       the live systems, and the latest runs of both DAGs
    python -m pyairtable_migration.cli rollback [--scope all|traffic|services|from_phase]
                                                [--services a,b] [--from-phase PHASE] [--wait]

Airflow: --airflow-url or AIRFLOW_URL (default http://localhost:8080), user --username or
AIRFLOW_USERNAME (default admin), password from AIRFLOW_PASSWORD only (an argument would show in
`ps`). The password goes to Airflow's token endpoint and is never printed.

--wait follows the run: one line per task state change (`task -> state`), each approval waiting
with the link to answer it, and the failed tasks' log tails at the end. Exit status: 0 done (the
run succeeded, when followed), 1 the run or the preflight failed (or a follow timed out), 2 bad
usage or Airflow unreachable / refusing; bad input triggers nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from pyairtable_migration.airflow_rest import (
    RUN_ENDED,
    AirflowClient,
    AirflowError,
    ui_run_path,
    ui_task_path,
)
from pyairtable_migration.config import DEFAULT_CONFIG_PATH, ConfigError, MigrationConfig, load_config
from pyairtable_migration.plan import MIGRATION_DAG_ID, PREFLIGHT_GATE, ROLLBACK_DAG_ID

DEFAULT_URL = "http://localhost:8080"
DEFAULT_USERNAME = "admin"
CONFIG_ENV = "PYAIRTABLE_MIGRATION_CONFIG"
PASSWORD_ENV = "AIRFLOW_PASSWORD"
# A followed run may wait hours on an approval; the bound is there so that nothing waits forever.
DEFAULT_FOLLOW_SECONDS = 24 * 3600
# Polls back off while nothing changes (a long bake, an approval waiting), to spare the api-server.
POLL_SECONDS, MAX_POLL_SECONDS = 2.0, 10.0
# Polls in a row the api-server may leave unanswered (a busy machine) before following gives up.
UNANSWERED_POLLS = 30
OK, FAILED, USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input or an Airflow that cannot be reached: exit 2, nothing triggered."""


Out = Callable[[str], None]


def say(line: str) -> None:
    print(line, flush=True)


# --- following a run ----------------------------------------------------------------------------------


def follow(
    client: AirflowClient,
    dag_id: str,
    run_id: str,
    timeout: float,
    out: Out = say,
    shown: Callable[[str], bool] = lambda task_id: True,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Print each task state change of the run (tasks `shown` accepts) and each approval waiting,
    until the run ends or `timeout`; returns the run's state ("running" if it had not ended) and
    its task instances."""
    states: dict[str, str | None] = {}
    announced: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    unanswered = 0
    pause = POLL_SECONDS
    tasks: dict[str, dict[str, Any]] = {}
    while True:
        try:
            run_state = client.run_state(dag_id, run_id)
            tasks = client.task_instances(dag_id, run_id)
            deferred = any(ti["state"] == "deferred" for ti in tasks.values())
            approvals = client.waiting_approvals(dag_id, run_id) if deferred else []
            unanswered = 0
        except requests.RequestException as exc:
            unanswered += 1
            if unanswered >= UNANSWERED_POLLS:
                raise UsageError(f"Airflow stopped answering while following {run_id}: {exc}") from None
            time.sleep(POLL_SECONDS)
            continue
        changed = [
            (task_id, ti)
            for task_id, ti in tasks.items()
            if shown(task_id) and ti["state"] is not None and states.get(task_id) != ti["state"]
        ]
        for task_id, ti in sorted(changed, key=lambda item: (item[1].get("start_date") or "~", item[0])):
            states[task_id] = ti["state"]
            attempt = f" (try {ti['try_number']})" if int(ti.get("try_number") or 0) > 1 else ""
            out(f"{task_id} -> {ti['state']}{attempt}")
        for approval in approvals:
            ti = approval["task_instance"]
            key = (str(ti["task_id"]), int(ti.get("try_number") or 0))
            if key not in announced:
                announced.add(key)
                out(approval_line(client, dag_id, run_id, approval))
        if run_state in RUN_ENDED or time.monotonic() > deadline:
            return run_state, tasks
        pause = POLL_SECONDS if changed else min(pause + 1, MAX_POLL_SECONDS)
        time.sleep(pause)


def approval_line(client: AirflowClient, dag_id: str, run_id: str, approval: Mapping[str, Any]) -> str:
    """An approval waiting: the task, its question, its approvers, and the page to answer it on."""
    task_id = str(approval["task_instance"]["task_id"])
    url = client.url + ui_task_path(dag_id, run_id, task_id) + "/required_actions"
    who = ", ".join(str(u.get("name") or u.get("id")) for u in approval.get("assigned_users") or [])
    approvers = f" (approvers: {who})" if who else ""
    return f"approval waiting: {task_id}: {approval.get('subject')}{approvers}; answer at {url}"


def report_end(
    client: AirflowClient, dag_id: str, run_id: str, state: str, timeout: float, out: Out = say
) -> int:
    """The last lines of a followed run, and the exit status it means."""
    link = client.url + ui_run_path(dag_id, run_id)
    if state not in RUN_ENDED:
        out(f"run {run_id} is still {state} after {timeout:.0f} s; follow it at {link}")
        return FAILED
    if state == "failed":
        for task_id, tail in client.failures(dag_id, run_id).items():
            out(f"--- {task_id} failed; the end of its log:")
            out("\n".join(f"    {line}" for line in tail.splitlines()))
    run = client.run(dag_id, run_id)
    took = duration(run)
    out(f"run {run_id} {state}{f' in {took}' if took else ''}: {link}")
    return OK if state == "success" else FAILED


def duration(run: Mapping[str, Any]) -> str:
    seconds = run.get("duration")
    return f"{float(seconds):.0f} s" if seconds is not None else ""


# --- the commands -------------------------------------------------------------------------------------


def dag_details(client: AirflowClient, dag_id: str) -> dict[str, Any]:
    """The DAG as Airflow last parsed it; one it has not (an import error, a wrong dags folder) is
    refused naming the import errors."""
    try:
        return client.dag_details(dag_id)
    except AirflowError as exc:
        if exc.status != 404:
            raise
    errors = [
        f"{e.get('filename')}: {str(e.get('stack_trace') or '').strip()[-300:]}"
        for e in client.import_errors()
    ]
    shown = "".join(f"\n  import error in {error}" for error in errors)
    raise UsageError(f"Airflow at {client.url} has no DAG {dag_id} (nothing triggered){shown}")


def trigger(
    client: AirflowClient,
    dag_id: str,
    conf: Mapping[str, Any],
    out: Out = say,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Trigger `dag_id` with `conf` once the DAG is parsed and not paused; says where the run is."""
    dag = details or dag_details(client, dag_id)
    if dag.get("is_paused"):
        raise UsageError(f"DAG {dag_id} is paused: unpause it in the Airflow UI first (nothing triggered)")
    active, _ = client.runs(dag_id, limit=5, states=("queued", "running"))
    run_id = client.trigger(dag_id, conf)
    out(f"triggered {dag_id}: run {run_id}")
    out(f"  conf {dict(conf)}")
    if active:
        names = ", ".join(str(r["dag_run_id"]) for r in active)
        out(f"  note: {names} still active; this run waits its turn (one run at a time)")
    out(f"  {client.url + ui_run_path(dag_id, run_id)}")
    return run_id


def validate(client: AirflowClient, timeout: float, out: Out = say) -> int:
    """The preflight alone in apply mode (it reads the live systems) and nothing after it."""
    run_id = trigger(client, MIGRATION_DAG_ID, {"mode": "apply", "preflight_only": True}, out)
    state, tasks = follow(
        client, MIGRATION_DAG_ID, run_id, timeout, out, lambda t: t.startswith("preflight.")
    )
    checks = {task_id: ti for task_id, ti in tasks.items() if task_id.startswith("preflight.")}
    out("preflight verdicts:")
    for task_id, ti in sorted(checks.items()):
        if task_id == PREFLIGHT_GATE:
            continue
        verdict = {"success": "PASS", "failed": "FAIL"}.get(ti["state"], f"NOT RUN ({ti['state']})")
        out(f"  {verdict:5} {task_id}")
        if ti["state"] == "failed":
            tail = client.task_log_tail(MIGRATION_DAG_ID, run_id, task_id, int(ti["try_number"]), lines=12)
            out("\n".join(f"        {line}" for line in tail.splitlines()))
    later = sum(1 for task_id in tasks if not task_id.startswith("preflight."))
    passed = state == "success" and all(ti["state"] == "success" for ti in checks.values())
    if state not in RUN_ENDED:
        return report_end(client, MIGRATION_DAG_ID, run_id, state, timeout, out)
    link = client.url + ui_run_path(MIGRATION_DAG_ID, run_id)
    if passed:
        out(f"preflight passed; the {later} later task(s) skipped, nothing changed: {link}")
        return OK
    out(f"preflight REFUSED: the migration would not start: {link}")
    return FAILED


def migrate_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The migration run's conf from the arguments: what is not given stays the DAG's default."""
    conf: dict[str, Any] = {"mode": "apply", "require_approvals": not args.no_approvals}
    if args.bake_seconds is not None:
        conf["bake_seconds"] = args.bake_seconds
    return conf


def migrate(client: AirflowClient, args: argparse.Namespace, out: Out = say) -> int:
    run_id = trigger(client, MIGRATION_DAG_ID, migrate_conf(args), out)
    if not args.wait:
        return OK
    state, _ = follow(client, MIGRATION_DAG_ID, run_id, args.timeout, out)
    return report_end(client, MIGRATION_DAG_ID, run_id, state, args.timeout, out)


def rollback_conf(
    args: argparse.Namespace, config: MigrationConfig, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The rollback run's conf from the arguments, refused (UsageError) unless the rollback DAG can
    honour it: scope and phase among its trigger form's choices, services among the config's."""
    services = [name.strip() for name in (args.services or "").split(",") if name.strip()]
    scope = args.scope or ("services" if services else "all")
    scopes = choices(params, "scope")
    if scopes and scope not in scopes:
        raise UsageError(f"unknown scope {scope!r}: the rollback takes {', '.join(scopes)}")
    conf: dict[str, Any] = {"mode": "apply", "scope": scope}
    if scope == "services":
        known = sorted(config.deployable)
        unknown = [name for name in services if name not in known]
        if unknown:
            raise UsageError(
                f"unknown service(s) {', '.join(unknown)}: the deployable services are {', '.join(known)}"
            )
        if not services:
            raise UsageError("scope services needs --services a,b (the services to roll back)")
        conf["services"] = services
    elif services:
        raise UsageError(f"--services goes with scope services, not scope {scope}")
    if scope == "from_phase":
        phases = choices(params, "from_phase")
        if not args.from_phase or (phases and args.from_phase not in phases):
            raise UsageError(f"scope from_phase needs --from-phase, one of {', '.join(phases)}")
        conf["from_phase"] = args.from_phase
    elif args.from_phase:
        raise UsageError(f"--from-phase goes with scope from_phase, not scope {scope}")
    return conf


def choices(params: Mapping[str, Any], name: str) -> list[str]:
    """The values a DAG param's schema allows (its trigger form's choices), from the DAG's details."""
    param = params.get(name) or {}
    return [str(value) for value in (param.get("schema") or {}).get("enum") or []]


def rollback(client: AirflowClient, args: argparse.Namespace, config: MigrationConfig, out: Out = say) -> int:
    details = dag_details(client, ROLLBACK_DAG_ID)
    conf = rollback_conf(args, config, details.get("params") or {})
    run_id = trigger(client, ROLLBACK_DAG_ID, conf, out, details)
    if not args.wait:
        return OK
    state, _ = follow(client, ROLLBACK_DAG_ID, run_id, args.timeout, out)
    return report_end(client, ROLLBACK_DAG_ID, run_id, state, args.timeout, out)


def status(client: AirflowClient, args: argparse.Namespace, config: MigrationConfig, out: Out = say) -> int:
    """The live systems (pyairtable_migration.status), then the latest runs of both DAGs; 1 when a
    part could not be read."""
    from pyairtable_migration.status import format_status, live_status

    live = live_status(config, args.connections)
    out(format_status(live))
    unreadable = any("error" in part for part in live.values())
    out("== runs ==")
    if not client.password:
        out(f"  set {PASSWORD_ENV} to list the runs in Airflow at {client.url}")
        return FAILED if unreadable else OK
    try:
        for dag_id in (MIGRATION_DAG_ID, ROLLBACK_DAG_ID):
            runs, total = client.runs(dag_id, limit=args.runs)
            out(f"  {dag_id}: {total} run(s)" + ("" if runs else ", none yet"))
            for run in runs:
                out("    " + run_line(run))
                if run["state"] in ("queued", "running"):
                    for line in active_lines(client, dag_id, str(run["dag_run_id"])):
                        out(line)
    except (requests.RequestException, AirflowError) as exc:
        out(f"  cannot read Airflow at {client.url}: {exc}")
        return FAILED
    return FAILED if unreadable else OK


def run_line(run: Mapping[str, Any]) -> str:
    conf = run.get("conf") or {}
    shown = {k: conf[k] for k in ("mode", "preflight_only", "scope", "services", "from_phase") if k in conf}
    took = duration(run)
    started = run.get("start_date") or run.get("queued_at") or "-"
    return (
        f"{run['dag_run_id']}  {run['state']:8} started {started}{f', took {took}' if took else ''}  {shown}"
    )


def active_lines(client: AirflowClient, dag_id: str, run_id: str) -> list[str]:
    """What an active run is doing now: its running and deferred tasks, and approvals waiting."""
    tasks = client.task_instances(dag_id, run_id)
    busy = sorted(f"{t} ({ti['state']})" for t, ti in tasks.items() if ti["state"] in ("running", "deferred"))
    lines = [f"      now: {', '.join(busy) or 'between tasks'}"]
    for approval in client.waiting_approvals(dag_id, run_id) if busy else []:
        lines.append("      " + approval_line(client, dag_id, run_id, approval))
    return lines


# --- arguments ----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--airflow-url",
        default=os.environ.get("AIRFLOW_URL", DEFAULT_URL),
        help=f"Airflow's base URL (env AIRFLOW_URL, default {DEFAULT_URL})",
    )
    common.add_argument(
        "--username",
        default=os.environ.get("AIRFLOW_USERNAME", DEFAULT_USERNAME),
        help=f"Airflow user (env AIRFLOW_USERNAME, default {DEFAULT_USERNAME}); password: env {PASSWORD_ENV}",
    )
    common.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH),
        help=f"the migration's config (env {CONFIG_ENV}, default include/migration.yaml)",
    )
    follow_options = argparse.ArgumentParser(add_help=False)
    follow_options.add_argument("--wait", action="store_true", help="follow the run until it ends")
    follow_options.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_FOLLOW_SECONDS,
        help=f"stop following after this many seconds (default {DEFAULT_FOLLOW_SECONDS})",
    )
    top = argparse.ArgumentParser(
        prog="python -m pyairtable_migration.cli", description=__doc__.split("\n")[0]
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="validate|migrate|status|rollback")
    check = commands.add_parser(
        "validate", parents=[common], help="run the preflight only, against the live systems; change nothing"
    )
    check.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait for the verdicts (default 1800)"
    )
    run = commands.add_parser(
        "migrate", parents=[common, follow_options], help="trigger the migration (mode apply)"
    )
    run.add_argument(
        "--no-approvals", action="store_true", help="require_approvals false (drills and demos only)"
    )
    run.add_argument("--bake-seconds", type=float, default=None, help="bake time per traffic step")
    state = commands.add_parser("status", parents=[common], help="live systems and the latest runs")
    state.add_argument(
        "--connections",
        choices=("env", "lab"),
        default="env",
        help="env (default): the configured connection ids as AIRFLOW_CONN_* or Airflow has them; "
        "lab: the running lab's",
    )
    state.add_argument("--runs", type=int, default=3, help="latest runs shown per DAG (default 3)")
    back = commands.add_parser("rollback", parents=[common, follow_options], help="trigger a scoped rollback")
    back.add_argument("--scope", help="all (default), traffic, services or from_phase")
    back.add_argument("--services", help="comma-separated services (implies scope services)")
    back.add_argument("--from-phase", help="scope from_phase: the phase undone with every later one")
    return top


def main(argv: Sequence[str], out: Out = say) -> int:
    args = parser().parse_args(argv)
    password = os.environ.get(PASSWORD_ENV)
    client = AirflowClient(args.airflow_url, args.username, password or "")
    try:
        config = load_config(args.config) if args.command in ("rollback", "status") else None
        if not password and args.command != "status":
            raise UsageError(f"set {PASSWORD_ENV} to the password of Airflow user {args.username!r}")
        if args.command == "validate":
            return validate(client, args.timeout, out)
        if args.command == "migrate":
            return migrate(client, args, out)
        assert config is not None
        if args.command == "status":
            return status(client, args, config, out)
        return rollback(client, args, config, out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except AirflowError as exc:
        print(f"error: Airflow at {args.airflow_url} refused: {exc}", file=sys.stderr)
        return USAGE
    except requests.RequestException as exc:
        print(
            f"error: cannot reach Airflow at {args.airflow_url}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
