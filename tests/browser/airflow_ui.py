"""The Airflow 3 UI as an on-call engineer uses it, driven by Playwright.

Selectors are the accessible ones where the UI has them: buttons by their label ("Trigger Dag",
"Reparse Dag", "Press shift+c to clear"), form fields by their label,
links by their text. Where it has none, the UI's own test ids: a graph node is
`rf__node-<task or group id>` (React Flow) and its state is the `state-badge` inside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

# Chromium as Debian ships it; the flags keep it off the network and quiet on a shared machine.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Two shared cores and other tests beside this one: the UI may take long to answer, never fail fast.
UI_TIMEOUT_MS = 90_000
OPEN_ATTEMPTS = 3
# The UI's local-storage key for the view a DAG's and a run's pages open on ("grid" or "graph").
DEFAULT_DAG_VIEW = "default_dag_view"


class AirflowUI:
    def __init__(self, page: Page, base_url: str, dag_id: str) -> None:
        self.page, self.base_url, self.dag_id = page, base_url, dag_id

    def run_url(self, run_id: str) -> str:
        return f"{self.base_url}/dags/{self.dag_id}/runs/{run_id}"

    def login(self, username: str, password: str) -> None:
        page = self.page
        page.goto(self.base_url)
        page.locator("input[name=username]").fill(username)
        page.locator("input[name=password]").fill(password)
        page.locator("input[name=password]").press("Enter")
        # The login page hands over to the app by a client-side redirect: wait for the app itself.
        page.wait_for_url(lambda url: "/auth/" not in url and "login" not in url)
        expect(page.get_by_role("link", name="Dags").first).to_be_visible()
        # What the user menu's "default view: Graph" stores: a run's page opens on its graph, with no
        # Grid rendered first and no "Show Graph" click (a click the loaded browser once never made).
        page.evaluate(f"localStorage.setItem({DEFAULT_DAG_VIEW!r}, JSON.stringify('graph'))")

    def rest(self) -> None:
        """A blank page: nothing polls the api-server or re-renders while the test waits."""
        self.page.goto("about:blank")

    def open_dag(self) -> None:
        self.page.goto(f"{self.base_url}/dags/{self.dag_id}")
        expect(self.page.get_by_role("button", name="Trigger Dag")).to_be_visible()

    def reparse(self) -> None:
        """The DAG page's "Reparse Dag": the dag-processor reads the file (and the config) now.

        The page hides the button while Airflow counts the DAG as stale (a parse that outlasted
        `stale_dag_threshold` on a loaded machine), until the next parse: open the page again then.
        """
        button = self.page.get_by_role("button", name="Reparse Dag")
        self.shown_on_a_fresh_page(self.open_dag, button)
        button.click()

    def shown_on_a_fresh_page(self, open_page: Callable[[], object], target: Locator) -> None:
        """Open the page until `target` shows on it (three tries).

        A page can come up without a control for as long as it stays open: the UI names its buttons
        from translation files fetched beside the app, and one answered late on a loaded machine
        leaves the labels unnamed; a fresh page fetches them again.
        """
        for _ in range(OPEN_ATTEMPTS - 1):
            open_page()
            try:
                target.wait_for(timeout=UI_TIMEOUT_MS / OPEN_ATTEMPTS)
                return
            except PlaywrightTimeoutError:
                continue
        open_page()
        target.wait_for()

    def trigger(
        self, *, mode: str, require_approvals: bool, bake_seconds: float, preflight_only: bool = False
    ) -> str:
        """Fill the trigger form (the DAG's Params) and submit; returns the new run's id."""
        page = self.page
        self.open_dag()
        page.get_by_role("button", name="Trigger Dag").click()
        form = page.get_by_role("dialog").filter(has_text="Run Parameters")
        form.get_by_role("combobox", name=re.compile(r"^Mode")).click()  # enum: a select
        page.get_by_role("option", name=mode, exact=True).click()
        for title, wanted in (
            ("Preflight only (validate)", preflight_only),
            ("Require approvals", require_approvals),
        ):
            switch = form.get_by_label(title)  # boolean: a switch over a hidden checkbox
            if switch.is_checked() != wanted:
                form.locator("label", has=page.get_by_label(title)).click()
            expect(switch).to_be_checked(checked=wanted)
        form.get_by_label("Bake time per step (seconds)").fill(str(bake_seconds))  # number: a spinbutton
        form.get_by_role("button", name="Trigger", exact=True).click()
        # The UI opens the new run's page: its id is the last part of the address.
        page.wait_for_url(re.compile(rf"/dags/{self.dag_id}/runs/[^/?#]+$"))
        return unquote(page.url.rsplit("/runs/", 1)[1])

    # --- the graph ------------------------------------------------------------------------------

    def show_graph(self, run_id: str, expand: tuple[str, ...] = ()) -> None:
        """The run's Graph view, details panel folded away, the named groups opened (outer first)."""
        page = self.page
        self.shown_on_a_fresh_page(lambda: page.goto(self.run_url(run_id)), self.node("preflight"))
        fold = page.get_by_role("button", name="Collapse Details Panel")
        if fold.is_visible():
            fold.click()
        for group in expand:
            # A collapsed group shows "+ N Tasks"; its children appear once it is open.
            opener = self.node(group).get_by_role("button", name=re.compile(r"^\+ \d+ Tasks$"))
            if opener.count():
                opener.click()
            expect(page.locator(f'[data-testid^="rf__node-{group}."]').first).to_be_visible()
        page.get_by_role("button", name="Fit View").click()  # opened groups widen the graph

    def node(self, node_id: str) -> Locator:
        return self.page.get_by_test_id(f"rf__node-{node_id}")

    def badge(self, node_id: str) -> Locator:
        return self.node(node_id).get_by_test_id("state-badge").first

    def shown_state(self, node_id: str) -> str:
        """The state the graph shows for a task or group now ("" when it shows none)."""
        badge = self.badge(node_id)
        return badge.inner_text().strip() if badge.count() else ""

    def node_shown_in(self, wanted: dict[str, tuple[str, ...]], timeout_ms: float) -> str | None:
        """The first node the graph shows in one of its `wanted` states within `timeout_ms` (None: none).

        Watched in the page itself, between the UI's own refreshes: a step that is in such a state
        for a few seconds is seen even while the test's other looks (REST calls) are slow.
        """
        shown: Locator | None = None
        for node_id, states in wanted.items():
            badge_text = re.compile(rf"^({'|'.join(map(re.escape, states))})$")
            badge = self.page.get_by_test_id("state-badge").filter(has_text=badge_text)
            node = self.node(node_id).filter(has=badge)
            shown = node if shown is None else shown.or_(node)
        if shown is None:
            return None
        try:
            shown.first.wait_for(timeout=timeout_ms)
        except PlaywrightTimeoutError:
            return None
        test_id = shown.first.get_attribute("data-testid") or ""
        return test_id.removeprefix("rf__node-") or None

    def screenshot(self, path: Path, close_up: str | None = None) -> list[Path]:
        """The whole page, and a close-up of one node (a group) when named."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path)
        saved = [path]
        if close_up is not None:
            detail = path.with_name(f"{path.stem}-{close_up}{path.suffix}")
            self.node(close_up).screenshot(path=detail)
            saved.append(detail)
        return saved

    # --- acting on tasks ------------------------------------------------------------------------

    def approve(self, run_id: str, task_id: str) -> None:
        """Answer an approval from the Required Actions page: open the task's action, Approve."""
        page = self.page
        page.goto(f"{self.base_url}/required_actions")
        page.get_by_role("link", name=task_id, exact=True).first.click()
        page.wait_for_url(lambda url: f"/runs/{run_id}/tasks/{task_id}/required_actions" in unquote(url))
        page.get_by_role("button", name="Approve", exact=True).click()

    def open_task(self, run_id: str, task_id: str) -> None:
        self.page.goto(f"{self.run_url(run_id)}/tasks/{task_id}")
        expect(self.page.get_by_text(task_id, exact=True).first).to_be_visible()

    def clear_with_downstream(self, run_id: str, task_id: str, expected: tuple[str, ...]) -> None:
        """The task page's Clear: the dialog must list `expected` among the affected tasks."""
        page = self.page
        self.open_task(run_id, task_id)
        page.get_by_role("button", name="Press shift+c to clear").click()
        dialog = page.get_by_role("dialog").filter(has_text="Clear Task Instance")
        for affected in (task_id, *expected):
            expect(dialog.get_by_text(affected, exact=True)).to_be_visible()
        dialog.get_by_role("button", name="Confirm").click()
        expect(dialog).to_be_hidden()

    def open_extra_link(self, run_id: str, task_id: str, name: str) -> Page:
        """The task's Details tab, "Extra Links": follow `name` (it opens a new tab)."""
        page = self.page
        self.open_task(run_id, task_id)
        page.get_by_role("link", name="Details", exact=True).click()
        link = page.get_by_role("link", name=name, exact=True)
        # A link to another site opens in a new tab by itself; one on the UI's own origin (the report,
        # served by the api-server) would replace the UI, so it is opened the way a person keeps the
        # UI: Ctrl+click, a tab of its own.
        new_tab = link.get_attribute("target") == "_blank"
        with page.context.expect_page() as opened:
            link.click(modifiers=[] if new_tab else ["Control"])
        report = opened.value
        report.wait_for_load_state()
        return report
