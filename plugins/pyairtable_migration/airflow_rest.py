"""A small client of Airflow's REST API v2: a token, then trigger, follow, clear and read runs.

One client for everything outside Airflow that drives it: the command line
(`pyairtable_migration.cli`) and the lab's Airflow (`lab/airflow_server.py`, which the browser test
and the drills use). The password goes to the token endpoint (`POST /auth/token`) and nowhere
else; neither it nor the token is part of any message this module makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

RUN_ENDED = ("success", "failed")
TOKEN_TIMEOUT_SECONDS = 10
REQUEST_TIMEOUT_SECONDS = 60


class AirflowError(RuntimeError):
    """Airflow answered with an error (`status`, the HTTP status, when it answered at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def ui_run_path(dag_id: str, run_id: str) -> str:
    """A run's page in Airflow's UI, relative to its base URL."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def ui_task_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"{ui_run_path(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"


def log_lines(content: list[Any]) -> list[str]:
    """A task log's structured entries as text: each event, and under a failure the exceptions'
    type and message (the log keeps them in `error_detail`, not in the event)."""
    lines: list[str] = []
    for entry in content:
        if not isinstance(entry, dict):
            lines.append(str(entry))
            continue
        lines.append(str(entry.get("event", "")))
        for error in entry.get("error_detail") or ():
            lines.extend(f"{error.get('exc_type')}: {error.get('exc_value')}".splitlines())
    return lines


class AirflowClient:
    """Airflow's REST API as `username`: a bearer token from `/auth/token`, fetched once and again
    when the API answers 401 (expired)."""

    def __init__(self, url: str, username: str = "", password: str = "") -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self._token: str | None = None

    @property
    def password(self) -> str:
        return self._password

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).ok
        except requests.RequestException:
            return False

    def token(self) -> str:
        if self._token is None:
            answer = requests.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=TOKEN_TIMEOUT_SECONDS,
            )
            if not answer.ok:
                raise AirflowError(
                    f"{self.url}/auth/token refused user {self.username!r}: {answer.status_code} "
                    f"{answer.text[:200]}"
                )
            self._token = str(answer.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            answer = requests.request(
                method,
                f"{self.url}/api/v2/{path}",
                headers={"Authorization": f"Bearer {self.token()}"},
                timeout=REQUEST_TIMEOUT_SECONDS,
                **kwargs,
            )
            if answer.status_code == 401 and attempt == 1:
                self._token = None  # expired: one new token, one more try
                continue
            break
        if not answer.ok:
            raise AirflowError(
                f"{method} {path}: {answer.status_code} {answer.text[:500]}", answer.status_code
            )
        return answer.json() if answer.content else None

    # --- DAGs and runs ---------------------------------------------------------------------------

    def dags_parsed(self) -> bool:
        try:
            listed = self.api("GET", "dags")
        except (requests.RequestException, AirflowError):
            return False
        return bool(listed["dags"])

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "importErrors")["import_errors"])

    def dag_details(self, dag_id: str) -> dict[str, Any]:
        """The DAG as last parsed (params with their schemas, is_paused); 404 while it is not parsed."""
        return dict(self.api("GET", f"dags/{dag_id}/details"))

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        run = self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)})
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}"))

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.run(dag_id, run_id)["state"])

    def runs(
        self, dag_id: str, limit: int = 5, states: tuple[str, ...] = ()
    ) -> tuple[list[dict[str, Any]], int]:
        """The latest runs of `dag_id` (newest first, at most `limit`) and how many there are in all."""
        params: dict[str, Any] = {"order_by": "-run_after", "limit": limit}
        if states:
            params["state"] = list(states)
        listed = self.api("GET", f"dags/{dag_id}/dagRuns", params=params)
        return list(listed["dag_runs"]), int(listed["total_entries"])

    def task_instances(
        self, dag_id: str, run_id: str, states: tuple[str, ...] = ()
    ) -> dict[str, dict[str, Any]]:
        """Every task instance of the run (in one of `states` when given), page by page: the
        api-server caps a page at its `[api] maximum_page_limit` (100 by default), whatever limit
        is asked for."""
        found: dict[str, dict[str, Any]] = {}
        rows = 0
        params: dict[str, Any] = {"limit": 1000, "order_by": "id"}
        if states:
            params["state"] = list(states)
        while True:
            listed = self.api(
                "GET",
                f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={**params, "offset": rows},
            )
            page = listed["task_instances"]
            rows += len(page)
            found.update((ti["task_id"], ti) for ti in page)
            if not page or rows >= int(listed["total_entries"]):
                return found

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """One task instance of the run: what a poll for one task needs, without listing all."""
        return dict(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def tries(self, dag_id: str, run_id: str, task_id: str) -> dict[int, str]:
        """Each attempt of a task and the state it ended in (or is in)."""
        listed = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return {int(t["try_number"]): str(t["state"]) for t in listed["task_instances"]}

    def waiting_approvals(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's Required Actions nobody has answered yet (HITL details)."""
        listed = self.api(
            "GET", f"dags/{dag_id}/dagRuns/{run_id}/hitlDetails", params={"response_received": "false"}
        )
        return list(listed["hitl_details"])

    def failures(self, dag_id: str, run_id: str, lines: int = 15) -> dict[str, str]:
        """Each failed task of a run and the end of its last attempt's log."""
        found = {}
        for task_id, ti in self.task_instances(dag_id, run_id, states=("failed",)).items():
            found[task_id] = self.task_log_tail(dag_id, run_id, task_id, int(ti["try_number"]), lines)
        return found

    def task_log_tail(self, dag_id: str, run_id: str, task_id: str, try_number: int, lines: int = 15) -> str:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        try:
            content = self.api("GET", path, params={"full_content": True})["content"]
        except (requests.RequestException, AirflowError) as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(log_lines(content)[-lines:])

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[str]:
        """What the UI's Clear (with downstream) does: the tasks and everything after them run again."""
        cleared = self.api(
            "POST",
            f"dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": False,
                "include_downstream": True,
                "reset_dag_runs": True,
            },
        )
        return sorted(ti["task_id"] for ti in cleared["task_instances"])

    # --- waiting ---------------------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        """Poll `check` until it returns something truthy; fail naming `what`.

        A poll the api-server does not answer in time (a busy machine) is a poll without an
        answer, not the end of the wait; the last such error is named if the wait runs out.
        """
        deadline = time.monotonic() + timeout
        unanswered: requests.RequestException | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
            except requests.RequestException as exc:
                unanswered, result = exc, None
            if result:
                return result
            time.sleep(poll)
        last = f" (last unanswered poll: {unanswered})" if unanswered else ""
        raise AirflowError(f"timed out after {timeout:.0f} s waiting for {what}{last}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        """Wait until the run ends; returns its state."""
        return str(
            self.wait(
                f"run {run_id} of {dag_id} to end",
                lambda: (state := self.run_state(dag_id, run_id)) in RUN_ENDED and state,
                timeout,
                poll=2,
            )
        )
