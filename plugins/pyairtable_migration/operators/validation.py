"""The validation phase: each check measures production after the cutover and fails naming the figure.

Every check logs what it measured and returns it as its XCom (the report task reads them back):

- `LatencySloOperator`: p95 of real production requests per service (Prometheus histogram),
  against the budget of the service's SLO class. A service with no traffic in the window is
  reported by name; with `no_traffic="fail"` (the default) it fails the check, because an SLO
  that was not measured is not met.
- `DataParityOperator`: the database phase's independent validator, run from the side writers
  use (after the switchover: the target, replicating back to the source) to the other side,
  plus the table sets of both sides and the replication direction left in place.
- `SecurityOperator`: no replication object left behind except the reverse path kept for
  rollback, every production Service selects exactly one existing color, and no configured
  connection's password in any XCom of this run or in any task's (unrendered) arguments.
  Airflow 3.3's Task SDK gives a task no access to other tasks' rendered fields, so those are
  not searched; the XComs are, through `ti.xcom_pull` of every task of the DAG.
- `MonitoringOperator`: every Prometheus target of production is up; with an Alertmanager connection,
  alerting works end to end (production's alert rules loaded, a test alert notified, none failed).

In plan mode (the run's `mode` param) each check logs what it would check and connects to nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, Context

from pyairtable_migration.hooks.database import (
    MIGRATION_SCHEMA,
    MigrationPostgresHook,
    fetch_dicts,
    get_subscription,
    statement,
    subscription_errors,
    user_tables,
)
from pyairtable_migration.kubernetes.bluegreen import COLORS, BlueGreenError, deployment_name
from pyairtable_migration.kubernetes.platform_objects import Workload, audit_problems
from pyairtable_migration.links import MigrationReportLink
from pyairtable_migration.operators.base import MigrationOperator, WritersReader, bulleted, fail, run_mode
from pyairtable_migration.postgres.replication import catch_up
from pyairtable_migration.postgres.validator import Validator

if TYPE_CHECKING:  # loaded by the monitoring check only: the DAG file parses without them
    from pyairtable_migration.hooks.prometheus import PrometheusHook
    from pyairtable_migration.monitoring.delivery import AlertingCheck

LATENCY_QUERY = (
    "histogram_quantile(0.95, sum by (le, service) "
    "(rate(pyairtable_http_request_duration_seconds_bucket{$selector}[$window])))"
)
FAILED_STATES = frozenset({"failed", "upstream_failed"})
MIN_SECRET_LENGTH = 4  # shorter "passwords" would match everywhere and mean nothing


def selector(labels: Mapping[str, str]) -> str:
    return ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))


class ValidationCheckOperator(MigrationOperator):
    """Base of the checks: each returns its figures, or fails listing its problems."""

    ui_color = "#e8e0f5"

    def concluded(
        self, context: Context, summary: dict[str, Any], heading: str, problems: Sequence[str]
    ) -> dict[str, Any]:
        """Return the summary (the XCom); with problems, push it as `figures` first (a failed task
        returns nothing, and the report still shows what was measured), then fail listing them."""
        if problems:
            context["ti"].xcom_push(key="figures", value=summary)
            raise fail(bulleted(heading, problems))
        return summary


# --- latency SLOs -----------------------------------------------------------------------------------


def judge_latency(
    p95_seconds: Mapping[str, float | None],
    services: Mapping[str, str],
    slo_classes: Mapping[str, int],
) -> dict[str, dict[str, Any]]:
    """Per service: class, budget, measured p95 in ms (None: no traffic) and a verdict."""
    results = {}
    for service, slo_class in sorted(services.items()):
        budget = int(slo_classes[slo_class])
        value = p95_seconds.get(service)
        if value is None or math.isnan(value):
            results[service] = {
                "slo_class": slo_class,
                "budget_ms": budget,
                "p95_ms": None,
                "verdict": "no traffic",
            }
            continue
        p95_ms = round(value * 1000, 1)
        verdict = "met" if p95_ms < budget else "breached"
        results[service] = {"slo_class": slo_class, "budget_ms": budget, "p95_ms": p95_ms, "verdict": verdict}
    return results


class LatencySloOperator(ValidationCheckOperator):
    """p95 of real production requests per service against its SLO class's budget (ms).

    :param services: service -> SLO class
    :param slo_classes: SLO class -> budget in milliseconds (the p95 must be below it)
    :param prometheus_labels: production's labels (the query's $selector)
    :param window: PromQL range of the rate
    :param no_traffic: `fail` or `warn` for a service with no production traffic in the window
    """

    template_fields: Sequence[str] = ("prometheus_conn_id", "prometheus_labels", "window", "services")

    prometheus_conn_id: str
    services: Mapping[str, str]
    slo_classes: Mapping[str, int]
    prometheus_labels: Mapping[str, str]
    window: str = "5m"
    no_traffic: str = "fail"
    query: str = LATENCY_QUERY

    def rendered_query(self) -> str:
        from string import Template

        return Template(self.query).substitute(selector=selector(self.prometheus_labels), window=self.window)

    def measure(self) -> dict[str, float | None]:
        # The HTTP client loads when a task queries: parsing the DAG file (every task process) stays light.
        from pyairtable_migration.hooks.prometheus import PrometheusHook, PrometheusQueryError

        hook = PrometheusHook(self.prometheus_conn_id)
        try:
            data = hook._get("api/v1/query", {"query": self.rendered_query()})
        except PrometheusQueryError as exc:
            raise fail(f"latency_slos: {exc}") from None
        measured: dict[str, float | None] = {}
        for series in data.get("result") or []:
            name = series.get("metric", {}).get("service")
            if name:
                value = float(series["value"][1])
                measured[name] = None if math.isnan(value) else value
        return measured

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"query Prometheus ({self.prometheus_conn_id}): {self.rendered_query()}",
            *(
                f"check {name}: p95 < {self.slo_classes[cls]} ms ({cls})"
                for name, cls in sorted(self.services.items())
            ),
        ):
            return {"mode": "plan"}
        results = judge_latency(self.measure(), self.services, self.slo_classes)
        for name, r in results.items():
            self.log.info(
                "%s (%s, budget %d ms): p95 %s -> %s",
                name,
                r["slo_class"],
                r["budget_ms"],
                "no traffic" if r["p95_ms"] is None else f"{r['p95_ms']} ms",
                r["verdict"],
            )
        breached = [
            f"{n}: p95 {r['p95_ms']} ms >= {r['budget_ms']} ms ({r['slo_class']})"
            for n, r in results.items()
            if r["verdict"] == "breached"
        ]
        silent = [
            f"{n}: no production traffic in the last {self.window}"
            for n, r in results.items()
            if r["verdict"] == "no traffic"
        ]
        summary = {
            "mode": "apply",
            "window": self.window,
            "services": results,
            "breached": breached,
            "no_traffic": silent,
        }
        problems = breached + (silent if self.no_traffic == "fail" else [])
        for line in silent:
            self.log.warning("No data: %s", line)
        return self.concluded(context, summary, f"latency SLOs: {len(problems)} problem(s)", problems)


# --- data parity ------------------------------------------------------------------------------------


class DataParityOperator(WritersReader, ValidationCheckOperator):
    """The independent validator from the side writers use to the other, and the replication in place.

    After the switchover writers use the target and the source follows it through the reverse
    subscription: the validator compares target -> source, re-checking a differing range after
    the source has applied the target's WAL. Both table sets must be equal, the forward
    subscription gone and the reverse one without errors.
    """

    template_fields: Sequence[str] = (*WritersReader.template_fields, "subscription", "reverse_subscription")

    subscription: str
    reverse_subscription: str
    chunk_rows: int
    parallelism: int = 2
    catch_up_timeout_seconds: float = 120.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            "read where the pooler(s) send writers",
            f"compare counts and hashes of every table per {self.chunk_rows}-key range, "
            f"from the writers' side to the other ({self.source_conn_id}, {self.target_conn_id})",
            f"check subscription {self.subscription} is gone and {self.reverse_subscription} replicates back",
        ):
            return {"mode": "plan"}
        source, target = (
            MigrationPostgresHook(self.source_conn_id),
            MigrationPostgresHook(self.target_conn_id),
        )
        found = self.writers_now()
        if found.where not in ("source", "target"):
            raise fail(
                f"data_parity: the pooler(s) do not all point at one of the clusters ({found.describe()})"
            )
        side = found.where
        if side == "target":
            primary, follower, subscription = target, source, self.reverse_subscription
        else:
            primary, follower, subscription = source, target, self.subscription
        self.log.info("Writers use the %s; comparing it with its follower through %s", side, subscription)
        problems: list[str] = []
        with primary.cursor() as p_cur, follower.cursor() as f_cur:
            tables = {
                side: {str(t) for t in user_tables(cur) if t.schema != MIGRATION_SCHEMA}
                for side, cur in (("primary", p_cur), ("follower", f_cur))
            }
            replication = get_subscription(f_cur, subscription)
            apply_errors, sync_errors = subscription_errors(f_cur, subscription)
            if side == "target":
                forward = get_subscription(p_cur, self.subscription)
                if forward is not None:
                    problems.append(f"forward subscription {self.subscription} still exists on the target")
        only_primary = sorted(tables["primary"] - tables["follower"])
        only_follower = sorted(tables["follower"] - tables["primary"])
        problems += [f"table {t} exists only on the {side}" for t in only_primary]
        problems += [f"table {t} exists only on the follower" for t in only_follower]
        if replication is None:
            problems.append(f"subscription {subscription} is missing: nothing keeps the other side current")
        elif not replication["subenabled"]:
            problems.append(f"subscription {subscription} is disabled")
        if apply_errors or sync_errors:
            problems.append(
                f"subscription {subscription}: {apply_errors} apply / {sync_errors} sync error(s)"
            )
        validator = Validator(
            primary,
            follower,
            chunk_rows=int(self.chunk_rows),
            parallelism=int(self.parallelism),
            catch_up=lambda: catch_up(
                primary, follower, subscription, self.catch_up_timeout_seconds, self.log
            ),
            log=self.log,
        )
        report = validator.run()
        problems += [f"table {t} is missing on the follower" for t in report.missing_tables]
        problems += [d.describe() for d in report.differences]
        summary = {
            "mode": "apply",
            "writers_on": side,
            "compared": f"{side} -> {'source' if side == 'target' else 'target'}",
            "replication": subscription,
            **report.summary(),
            "problems": problems,
        }
        self.log.info(
            "Parity: %d tables, %d rows, %d ranges in %.2f s; %d problem(s)",
            report.tables,
            report.rows,
            report.chunks,
            report.seconds,
            len(problems),
        )
        return self.concluded(context, summary, f"data_parity: {len(problems)} problem(s)", problems)


# --- security ---------------------------------------------------------------------------------------


def rendered_fields(task: Any, context: Context) -> dict[str, Any]:
    """`task`'s template fields rendered with this run's context (params, conf, connections), as
    its own run renders them: Airflow 3's Task SDK gives a task no access to what other tasks
    stored, so the check renders them again. A field that cannot be rendered here is kept as
    written (and searched as such)."""
    rendered = {}
    task_context: Any = {**context, "task": task}
    for field in task.template_fields:
        value = getattr(task, field, None)
        try:
            rendered[field] = task.render_template(value, task_context)
        except Exception:
            rendered[field] = value
    return rendered


def find_secrets(secrets: Mapping[str, str], documents: Mapping[str, Any]) -> list[str]:
    """Where a secret appears: `<document>: password of <connection>` (the secret itself never shown)."""
    found = []
    for where, value in documents.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        for conn_id, secret in secrets.items():
            if secret in text:
                found.append(f"{where}: password of connection {conn_id}")
    return found


class SecurityOperator(ValidationCheckOperator):
    """Replication leftovers, one color per production Service, the platform objects around every
    service (kubernetes/platform_objects.audit_problems), no secret in this run's output.

    :param allowed: {"source": [...], "target": [...]} of `kind:name` kept on purpose (the reverse
        replication path kept for rollback)
    :param workloads: per service, its port and config.workload(): what its objects must be
    :param pod_security_level: the Pod Security Standards level the namespace must enforce (its label)
    :param connection_ids: connections whose passwords must appear in no XCom, task argument or task log
    """

    template_fields: Sequence[str] = (
        "source_conn_id",
        "target_conn_id",
        "namespace",
        "kubernetes_conn_id",
        "workloads",
        "pod_security_level",
    )

    source_conn_id: str
    target_conn_id: str
    allowed: Mapping[str, Sequence[str]]
    kubernetes_conn_id: str
    namespace: str
    services: Sequence[str]
    connection_ids: Sequence[str]
    workloads: Mapping[str, Mapping[str, Any]] | None = None
    pod_security_level: str = "restricted"

    def leftovers(self) -> tuple[dict[str, list[str]], list[str]]:
        """(kept on purpose per side, problems: anything else left behind). The migration's own role
        keeps REPLICATION where the reverse path starts (the side keeping its slot): the rollback's
        subscription logs in as it there; revoke it once the rollback window closes."""
        kept: dict[str, list[str]] = {}
        problems = []
        for side, conn_id in (("source", self.source_conn_id), ("target", self.target_conn_id)):
            with MigrationPostgresHook(conn_id).cursor() as cursor:
                rows = fetch_dicts(cursor, statement("replication_leftovers"))
            found = [f"{r['kind']}:{r['name']}" for r in rows]
            allowed = list(self.allowed.get(side, []))
            if any(name.startswith("slot:") for name in allowed):
                allowed += [f"{r['kind']}:{r['name']}" for r in rows if r["own"]]
            kept[side] = sorted(f for f in found if f in allowed)
            problems += [
                f"{side}: {leftover.replace(':', ' ', 1)} left behind"
                for leftover in sorted(found)
                if leftover not in kept[side]
            ]
        return kept, problems

    def colors(self) -> tuple[dict[str, str | None], list[str]]:
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook  # loads the Kubernetes client

        try:
            states = BlueGreenHook(self.kubernetes_conn_id, self.namespace).read_all_states(
                sorted(self.services)
            )
        except BlueGreenError as exc:
            raise fail(f"security: {exc}") from None
        active: dict[str, str | None] = {}
        problems = []
        for name, state in sorted(states.items()):
            selected = state.active.selector if state.active else None
            color = state.active_color
            active[name] = color
            if state.active is None:
                problems.append(f"{name}: no Service in {self.namespace}")
            elif color not in COLORS or selected is None or list(selected).count("color") != 1:
                problems.append(f"{name}: Service selects {selected}, not exactly one color")
            elif color not in state.colors:
                problems.append(
                    f"{name}: Service selects {color} but {deployment_name(name, color)} does not exist"
                )
        return active, problems

    def platform(self, active: Mapping[str, str | None]) -> list[str]:
        """Every service's platform objects as configured, the namespace's default deny and label."""
        from pyairtable_migration.hooks.bluegreen import BlueGreenHook  # loads the Kubernetes client

        try:
            found = BlueGreenHook(self.kubernetes_conn_id, self.namespace).read_platform()
        except BlueGreenError as exc:
            raise fail(f"security: {exc}") from None
        workloads = {
            name: Workload.of(name, int(values["port"]), {k: v for k, v in values.items() if k != "port"})
            for name, values in (self.workloads or {}).items()
        }
        return audit_problems(self.namespace, found, workloads, active, self.pod_security_level)

    def secrets(self) -> tuple[dict[str, str], list[str]]:
        """(connection id -> password, why each other connection has none to search for)."""
        found, without = {}, []
        for conn_id in self.connection_ids:
            try:
                password = BaseHook.get_connection(conn_id).password
            except Exception as exc:
                without.append(f"{conn_id}: unreadable ({type(exc).__name__})")
                continue
            if password and len(password) >= MIN_SECRET_LENGTH:
                found[conn_id] = password
            else:
                without.append(f"{conn_id}: no password")
        return found, without

    def run_logs(self, context: Context) -> dict[str, str]:
        """This run's task logs in the local log folder (Airflow's default file layout); logs
        shipped to remote storage only are not read."""
        from airflow.sdk.configuration import conf

        ti = context["ti"]
        run_folder = Path(conf.get("logging", "base_log_folder")).expanduser()
        run_folder = run_folder / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}"
        return {
            f"log {path.relative_to(run_folder)}": path.read_text(errors="replace")
            for path in sorted(run_folder.glob("task_id=*/**/*.log"))
        }

    def run_documents(self, context: Context) -> dict[str, Any]:
        """Every XCom (return value and figures) of this run's other tasks, and every task's
        template fields as rendered for this run."""
        dag = context["dag"]
        ti = context["ti"]
        documents: dict[str, Any] = {}
        for task in dag.tasks:
            if task.task_id == self.task_id:
                continue
            for key in ("return_value", "figures"):
                with contextlib.suppress(Exception):
                    value = ti.xcom_pull(task_ids=task.task_id, key=key)
                    if value is not None:
                        documents[f"XCom {key} of {task.task_id}"] = value
            documents[f"rendered fields of {task.task_id}"] = rendered_fields(task, context)
        return documents

    def execute(self, context: Context) -> dict[str, Any]:
        if self.planned(
            context,
            f"list publications, subscriptions, slots and replication roles on {self.source_conn_id} and "
            f"{self.target_conn_id}; allow only {self.allowed}",
            f"check every Service in {self.namespace} selects exactly one existing color",
            f"check {self.namespace} enforces Pod Security {self.pod_security_level!r} and denies ingress by "
            f"default, and each of {len(self.workloads or {})} service(s) has its ServiceAccount, "
            "NetworkPolicy, PodDisruptionBudget, the active color's autoscaler and securityContext as "
            "configured",
            "search this run's XComs, task arguments and task logs for the passwords of "
            + ", ".join(self.connection_ids),
        ):
            return {"mode": "plan"}
        kept, problems = self.leftovers()
        active, color_problems = self.colors()
        problems += color_problems
        platform_problems = self.platform(active)
        problems += platform_problems
        secrets, without = self.secrets()
        documents = self.run_documents(context)
        logs = self.run_logs(context)
        leaks = find_secrets(secrets, {**documents, **logs})
        problems += [f"secret found in {leak}" for leak in leaks]
        # A search that had nothing to look for, or nowhere to look, would pass having proved nothing.
        if not secrets:
            problems.append(f"no password to search for: {'; '.join(without) or 'no connection named'}")
        if not documents:
            problems.append("no XCom or task argument of this run to search")
        summary = {
            "mode": "apply",
            "replication_kept": kept,
            "active_colors": active,
            "platform_problems": len(platform_problems),
            "secrets_searched": len(secrets),
            "secrets_not_searched": without,
            "documents_searched": len(documents),
            "logs_searched": len(logs),
            "problems": problems,
        }
        self.log.info(
            "Kept for rollback: %s; colors: %s; %d password(s) searched in %d XCom/rendered-fields "
            "document(s) and %d task log(s); not searched for: %s",
            kept,
            active,
            len(secrets),
            len(documents),
            len(logs),
            without or "none",
        )
        return self.concluded(context, summary, f"security: {len(problems)} problem(s)", problems)


# --- backup restore ---------------------------------------------------------------------------------


NO_ALERTMANAGER = "no Alertmanager connection (validation.alertmanager_conn_id)"


class MonitoringOperator(ValidationCheckOperator):
    """Every Prometheus target carrying production's labels is up (and there is at least one); with
    an Alertmanager connection, alerting works end to end (monitoring/delivery.py): Prometheus has
    the expected alert rules loaded and healthy and sends to an Alertmanager, and a test alert posted
    there, labelled with this run and try, is notified with no notification failed.

    :param alert_rules: the rules expected loaded, key -> digest (monitoring/alerts.py `expected_rules`)
    :param alertmanager_conn_id: `http` connection to Alertmanager; empty: alerting is not checked
    :param alert_delivery_timeout_seconds: longest wait for the test alert's notification
    """

    template_fields: Sequence[str] = ("prometheus_conn_id", "prometheus_labels", "alertmanager_conn_id")

    prometheus_conn_id: str
    prometheus_labels: Mapping[str, str]
    alertmanager_conn_id: str = ""
    alert_rules: Mapping[str, str] = MappingProxyType({})  # each task keeps its own dict (_plain)
    alert_delivery_timeout_seconds: float = 60

    def execute(self, context: Context) -> dict[str, Any]:
        targets_line = (
            f"list Prometheus ({self.prometheus_conn_id}) targets labelled {self.prometheus_labels}: all up"
        )
        if self.alertmanager_conn_id:
            alerting_lines = [
                f"read Prometheus's rules: {len(self.alert_rules)} alert rules loaded and healthy "
                f"({', '.join(self.alert_rules)}), and at least one Alertmanager it sends to",
                f"post one test alert labelled with this run and try to Alertmanager "
                f"({self.alertmanager_conn_id}; it resolves by itself after a minute) and wait up to "
                f"{self.alert_delivery_timeout_seconds:g} s until its notification is sent, none failed",
            ]
        else:
            alerting_lines = [f"not check alerting: {NO_ALERTMANAGER}"]
        if self.planned(context, targets_line, *alerting_lines):
            return {"mode": "plan"}
        from pyairtable_migration.hooks.prometheus import PrometheusHook, PrometheusQueryError

        prometheus = PrometheusHook(self.prometheus_conn_id)
        try:
            targets = prometheus.targets()
        except PrometheusQueryError as exc:
            raise fail(f"monitoring: {exc}") from None
        ours = [
            t
            for t in targets
            if all((t.get("labels") or {}).get(k) == v for k, v in self.prometheus_labels.items())
        ]
        down = [
            f"{(t.get('labels') or {}).get('pod') or t.get('scrapeUrl')}: {t.get('health')} "
            f"({t.get('lastError') or 'no error text'})"
            for t in ours
            if t.get("health") != "up"
        ]
        summary: dict[str, Any] = {
            "mode": "apply",
            "targets": len(ours),
            "up": len(ours) - len(down),
            "down": down,
        }
        self.log.info(
            "Production targets: %d, up %d; down: %s", len(ours), len(ours) - len(down), down or "none"
        )
        if not ours:
            raise fail(f"monitoring: Prometheus has no target labelled {self.prometheus_labels}")
        headings = [f"{len(down)} of {len(ours)} production target(s) down"] if down else []
        problems = list(down)
        if self.alertmanager_conn_id:
            alerting = self.check_alerting(context, prometheus)
            summary["alerting"] = alerting.figures
            if alerting.problems:
                headings.append("alerting does not work end to end")
                problems += alerting.problems
        else:
            self.log.info("Alerting not checked: %s", NO_ALERTMANAGER)
        return self.concluded(context, summary, f"monitoring: {'; '.join(headings)}", problems)

    def check_alerting(self, context: Context, prometheus: PrometheusHook) -> AlertingCheck:
        """The engine's end-to-end check through this run's hooks; Prometheus failing fails the task."""
        from datetime import UTC, datetime

        from pyairtable_migration.hooks.alertmanager import AlertmanagerHook
        from pyairtable_migration.hooks.prometheus import PrometheusQueryError
        from pyairtable_migration.monitoring.delivery import check_alerting, migration_test_alert

        alert = migration_test_alert(context["run_id"], context["ti"].try_number, datetime.now(UTC))
        self.log.info("Test alert %s to Alertmanager (%s)", alert["labels"], self.alertmanager_conn_id)
        try:
            alerting = check_alerting(
                prometheus,
                AlertmanagerHook(self.alertmanager_conn_id),
                self.alert_rules,
                alert,
                self.alert_delivery_timeout_seconds,
            )
        except PrometheusQueryError as exc:
            raise fail(f"monitoring: {exc}") from None
        self.log.info("Alerting: %s; problems: %s", alerting.figures, alerting.problems or "none")
        return alerting


# --- the report -------------------------------------------------------------------------------------


class MigrationReportOperator(MigrationOperator):
    """Writes this run's report (HTML with inline SVG charts, and its data as JSON); links to it.

    Runs whatever the checks' outcome (trigger rule all_done), so a failed migration has a report too.
    """

    template_fields: Sequence[str] = ("report_dir", "report_base_url")
    operator_extra_links = (MigrationReportLink(),)
    ui_color = "#e8e0f5"

    report_dir: str
    report_base_url: str = ""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from pyairtable_migration import report

        if context["params"].get("preflight_only"):
            # A validate run gets here only when the preflight did not pass (its last task skips
            # this one otherwise): no migration to report, and the run must still end failed.
            raise fail("preflight_only run: the preflight did not pass (see the preflight tasks); no report")
        data = report.collect(context)
        failed = [f"{t['task_id']} ({t['state']})" for t in data["tasks"] if t["state"] in FAILED_STATES]
        result: dict[str, Any] = {"mode": run_mode(context)}
        if run_mode(context) == "plan":
            self.log.info(
                "Plan: would write the report of %d task(s) to %s",
                len(data["tasks"]),
                report.resolve_dir(self.report_dir),
            )
        else:
            html_path, json_path = report.write(data, self.report_dir)
            url = report.link_for(html_path, self.report_base_url)
            MigrationReportLink.persist(context, url)
            self.log.info("Report written: %s (data: %s); open %s", html_path, json_path, url)
            result.update(html=str(html_path), json=str(json_path), url=url)
        if failed:
            # This task runs whatever happened (all_done) and is the DAG's last: it must not turn a
            # failed migration into a successful run.
            written = "written" if "url" in result else "not written (plan mode)"
            raise fail(
                f"report {written}; the migration did not complete: {len(failed)} task(s) failed: "
                + ", ".join(failed[:20])
            )
        return result
