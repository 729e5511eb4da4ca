"""Notifications: the on-call engineer is told, through Airflow's notifiers, what needs them or is news.

    approval_waiting  an approval operator's `notifiers` (HITLOperator calls them as it starts waiting)
    task_failed       every task's on_failure_callback (after its last try); a traffic gate that
                      tripped fails with GateBreached and is told as a breach, with the gate's figures
    rollback_started  the rollback DAG's first task, once it has accepted the run
    rollback_done     the rollback DAG's success callback
    rollback_failed   the rollback DAG's failure callback (its failed task is told as task_failed)
    migration_done    the migration DAG's success callback

Each notice names the DAG, the run, the task and the figures that matter, with a link into the
Airflow UI (`[api] base_url`). The providers' notifiers send it (SmtpNotifier, SlackWebhookNotifier)
from the `notifications` section of the config; the secrets (SMTP password, webhook URL) stay in
their Airflow connections. A provider notifier renders its fields in place and cannot be reused, so
each notice gets fresh ones. A notice that cannot be sent is logged and fails nothing: being told is
not worth stopping a cutover or a rollback. No notifier configured: no callback is even attached.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier, Context
from airflow.sdk.exceptions import AirflowFailException

from pyairtable_migration.airflow_rest import ui_run_path as run_path
from pyairtable_migration.config import NotificationsConfig

EVENTS = (
    "approval_waiting",
    "task_failed",
    "rollback_started",
    "rollback_done",
    "rollback_failed",
    "migration_done",
)


class GateBreached(AirflowFailException):
    """A traffic gate tripped: a failure no retry fixes, carrying the gate's figures for the notice."""

    def __init__(self, message: str, figures: Mapping[str, str]) -> None:
        super().__init__(message)
        self.figures = dict(figures)


def gate_figures(weight: int, gate: Mapping[str, Any], reverted: str) -> dict[str, str]:
    """The figures of a tripped gate, each `peak / limit`, and what became of the traffic."""
    units = {"p99": " s"}
    figures = {"weight": f"{weight} % to production when the gate tripped"}
    limits: Mapping[str, float] = gate.get("limits") or {}
    for name, peak in (gate.get("peaks") or {}).items():
        shown = "no data" if peak is None else f"{peak:.4g}{units.get(name, '')}"
        figures[f"{name} peak"] = f"{shown} (max {limits.get(name, 0):g}{units.get(name, '')})"
    figures["breaching samples"] = str(len(gate.get("breaching_samples") or []))
    figures["traffic"] = reverted
    return figures


@dataclass(frozen=True)
class Notice:
    """What one notice says: a subject, a link, and labelled facts in order."""

    subject: str
    link: str
    facts: tuple[tuple[str, str], ...]

    def text(self) -> str:
        """Plain text for Slack (its mrkdwn: &, < and > escaped, the link as <url|label>)."""

        def esc(value: str) -> str:
            return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        lines = [f"*{esc(self.subject)}*", *(f"{esc(k)}: {esc(v)}" for k, v in self.facts)]
        return "\n".join([*lines, f"<{self.link}|Open in Airflow>" if "://" in self.link else self.link])

    def html(self) -> str:
        rows = "".join(
            f'<tr><th align="left" valign="top">{html.escape(k)}</th>'
            f'<td style="white-space:pre-wrap">{html.escape(v)}</td></tr>'
            for k, v in self.facts
        )
        link = html.escape(self.link)
        return f'<p>{html.escape(self.subject)}</p><p><a href="{link}">{link}</a></p><table>{rows}</table>'


def ui_url(path: str) -> str:
    """`path` under Airflow's UI, from `[api] base_url`; the bare path when that is not set."""
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{path}" if base else f"{path} (set [api] base_url for a full link)"


def _run(context: Context) -> tuple[str, str]:
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", "") or "?"
    run_id = context.get("run_id") or getattr(dag_run, "run_id", "") or "?"
    return str(dag_id), str(run_id)


def _basics(context: Context, task: bool = True) -> list[tuple[str, str]]:
    dag_id, run_id = _run(context)
    facts = [("DAG", dag_id), ("run", run_id)]
    ti = context.get("ti")
    if task and ti is not None:
        facts.append(("task", f"{ti.task_id} (try {getattr(ti, 'try_number', '?')})"))
    params = context.get("params") or {}
    if "mode" in params:
        facts.append(("mode", str(params["mode"])))
    return facts


def _link(context: Context, suffix: str = "") -> str:
    return ui_url(run_path(*_run(context)) + suffix)


def _task_suffix(context: Context) -> str:
    ti = context.get("ti")
    return f"/tasks/{quote(ti.task_id, safe='')}" if ti is not None else ""


def approval_waiting(context: Context) -> Notice:
    task = context["task"]
    question = str(getattr(task, "subject", task.task_id))
    facts = [*_basics(context), ("question", question)]
    if body := getattr(task, "body", None):
        facts.append(("what the answers do", str(body)))
    return Notice(
        f"Approval waiting: {question}",
        _link(context, _task_suffix(context) + "/required_actions"),
        tuple(facts),
    )


def task_failed(context: Context) -> Notice:
    exception = context.get("exception")
    dag_id, _ = _run(context)
    ti = context.get("ti")
    task_id = ti.task_id if ti is not None else "a task"
    link = _link(context, _task_suffix(context))
    if isinstance(exception, GateBreached):
        facts = [*_basics(context), *exception.figures.items(), ("gate", str(exception))]
        return Notice(f"Gate breach in {dag_id}: {task_id}, traffic back on staging", link, tuple(facts))
    error = f"{type(exception).__name__}: {exception}" if exception is not None else "(no exception given)"
    return Notice(f"Task failed in {dag_id}: {task_id}", link, (*_basics(context), ("error", error)))


def rollback_started(context: Context) -> Notice:
    params = context.get("params") or {}
    scope = str(params.get("scope", "all"))
    facts = [*_basics(context, task=False), ("scope", scope)]
    if scope == "services":
        facts.append(("services", ", ".join(params.get("services") or []) or "(none chosen)"))
    if scope == "from_phase":
        facts.append(("from phase", str(params.get("from_phase"))))
    return Notice(f"Rollback started: {_run(context)[1]} (scope {scope})", _link(context), tuple(facts))


def _ended(context: Context) -> list[tuple[str, str]]:
    facts = _basics(context, task=False)
    dag_run = context.get("dag_run")
    start, end = getattr(dag_run, "start_date", None), getattr(dag_run, "end_date", None)
    if start and end:
        facts.append(("took", f"{(end - start).total_seconds():.0f} s"))
    if context.get("reason"):
        facts.append(("reason", str(context["reason"])))
    return facts


def rollback_done(context: Context) -> Notice:
    return Notice(f"Rollback done: {_run(context)[1]}", _link(context), tuple(_ended(context)))


def rollback_failed(context: Context) -> Notice:
    return Notice(f"Rollback FAILED: {_run(context)[1]}", _link(context), tuple(_ended(context)))


def migration_done(context: Context) -> Notice:
    params = context.get("params") or {}
    what = "Migration done" if params.get("mode") == "apply" else "Migration run done"
    if params.get("preflight_only"):
        what = "Preflight passed (validate run, nothing changed)"
    facts = _ended(context)
    if "traffic_steps" in params:
        facts.append(("traffic steps", ", ".join(f"{w} %" for w in params["traffic_steps"])))
    return Notice(f"{what}: {_run(context)[1]}", _link(context), tuple(facts))


MESSAGES = {
    "approval_waiting": approval_waiting,
    "task_failed": task_failed,
    "rollback_started": rollback_started,
    "rollback_done": rollback_done,
    "rollback_failed": rollback_failed,
    "migration_done": migration_done,
}


def provider_notifiers(settings: Mapping[str, Any]) -> list[tuple[str, BaseNotifier]]:
    """Fresh provider notifiers for one notice, each reading it from the context's `notice`."""
    built: list[tuple[str, BaseNotifier]] = []
    if smtp := settings.get("smtp"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifier = SmtpNotifier(
            smtp_conn_id=smtp["smtp_conn_id"],
            to=list(smtp["to"]),
            from_email=smtp.get("from_email"),
            subject="{{ notice.subject }}",
            html_content="{{ notice.html }}",
        )
        built.append((f"smtp {smtp['smtp_conn_id']}", notifier))
    if slack := settings.get("slack"):
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        conn_id = slack["slack_webhook_conn_id"]
        built.append(
            (
                f"slack {conn_id}",
                SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text="{{ notice.text }}"),
            )
        )
    return built


class MigrationNotifier(BaseNotifier):
    """One kind of notice (an EVENTS name), sent through every configured provider notifier.

    Usable wherever Airflow takes a notifier or a callback: a DAG's or task's callbacks, an
    approval operator's `notifiers`.
    """

    def __init__(self, event: str, settings: Mapping[str, Any]) -> None:
        if event not in MESSAGES:
            raise ValueError(f"unknown notification event {event!r} (known: {', '.join(EVENTS)})")
        super().__init__()
        self.event = event
        self.settings = dict(settings)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Nothing to render: the notice is built from the context. (BaseNotifier's would ask the
        context's DAG for a template environment, which dag.test()'s serialized DAG lacks.)"""

    def notify(self, context: Context) -> None:
        self.send(MESSAGES[self.event](context))

    def send(self, notice: Notice) -> list[str]:
        """Send through each notifier; the ones that sent. One that fails is logged, not raised."""
        # The notice is the provider notifiers' only context: their fields are rendered from it, so
        # its text (an exception's, say) is a value, never a template.
        only_the_notice: Any = {
            "notice": {"subject": notice.subject, "html": notice.html(), "text": notice.text()}
        }
        sent = []
        for name, notifier in provider_notifiers(self.settings):
            try:
                notifier(only_the_notice)
            except Exception as exc:
                self.log.warning("Could not notify through %s: %s: %s", name, type(exc).__name__, exc)
            else:
                sent.append(name)
        if sent:
            self.log.info("Notified through %s: %s", ", ".join(sent), notice.subject)
        return sent


def notifiers(settings: Mapping[str, Any] | NotificationsConfig | None, event: str) -> list[BaseNotifier]:
    """The notifier for `event`, or none when no notifier is configured (nothing attached at all)."""
    if isinstance(settings, NotificationsConfig):
        settings = settings.model_dump(exclude_none=True)
    if not settings:
        return []
    return [MigrationNotifier(event, settings)]


def run_callbacks(
    config: NotificationsConfig, *, on_success: str | None, on_failure: str | None
) -> dict[str, Any]:
    """A DAG's success/failure callback arguments for these events (absent when nobody is told)."""
    arguments: dict[str, Sequence[BaseNotifier]] = {}
    for argument, event in (("on_success_callback", on_success), ("on_failure_callback", on_failure)):
        if event and (built := notifiers(config, event)):
            arguments[argument] = built
    return arguments
