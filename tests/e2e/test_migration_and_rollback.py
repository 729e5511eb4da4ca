"""Issue 7's headline tests, each on a fresh lab with the load generator running throughout.

A full migration, then the on-demand rollback; and the rollback started after each phase in turn
(database only, services promoted, traffic at 50 %). Every one must end in a clean staging state
with every acknowledged commit and session write on the source and not one failed request, commit
or login, no valid session rejected, no rate-limit counter reset: a healthy run has no gate breach
window, so it is allowed none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.kafka_ledger import KafkaLedgerReport
from lab.ledger import LedgerReport
from lab.session_ledger import SessionLedgerReport
from pyairtable_migration.config import load_config
from pyairtable_migration.hooks.database import MigrationPostgresHook
from tests.dagrun import task_states, xcom
from tests.e2e.scenario import (
    Scenario,
    assert_clean_staging,
    assert_kafka_consumers_on,
    assert_nothing_changed,
    assert_redis_on_source,
    assert_succeeded,
    pointing,
    scenario,
    summaries,
)
from tests.services.support import BlueGreenService
from tests.validation.test_report import parse

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("airflow_db")]


@pytest.mark.beside  # in make test's second process (it brings its own lab): the two take about as long
def test_full_migration_to_a_managed_like_17_then_rollback_twice() -> None:
    """The whole migration with the major-version upgrade on the way (issue 15): staging on
    PostgreSQL 15, production on 17 where the migrator is no superuser (a member of
    pg_create_subscription, as on a managed server) and backups are the managed service's
    (`backup.method: rds`, moto's RDS API in the lab); then the rollback 17 -> 15 through reverse
    replication, twice (the second finds nothing to undo). 15 -> 15 runs whole in the browser's
    night and up to 50 % below."""
    with scenario("full", target_major=17) as lab:
        before = lab.status()
        with MigrationPostgresHook(lab.config.database.target_conn_id).cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('server_version_num')::int, rolsuper FROM pg_roles "
                "WHERE rolname = current_user"
            )
            version, superuser = cursor.fetchone()
        assert version // 10000 == 17 and superuser is False
        run = lab.migrate()
        states = assert_succeeded(run)
        done = summaries(run)
        snapshot = done["switchover.full_backup"]["backup"]["snapshot"]
        assert snapshot.startswith("pyairtable-migration-") and done["switchover.full_backup"]["taken"]
        assert done["validation.backup"]["method"] == "rds"
        assert done["validation.backup"]["snapshot"]["snapshot"] == snapshot
        assert states["switchover.switch_database"] == states["traffic.shift_to_100"] == "success"
        # A healthy run: every undo beside its phase found nothing to undo (clear one alone to undo).
        assert {t: s for t, s in states.items() if t.endswith(".undo")} == dict.fromkeys(
            ("services.undo", "switchover.undo", "traffic.undo"), "skipped"
        )
        migrated = lab.status()
        assert all(p == {"points_at": "target", "paused": False} for p in pooler_states(migrated))
        assert weights(migrated) == {(100, 0)}
        for name, service in migrated["services"].items():
            assert service["color"] is not None and service["image"] == service["wanted"], name
        assert migrated["kafka"]["groups"], "the lab's config moves a consumer group"
        assert_kafka_consumers_on(migrated["kafka"], "production")
        assert_report_holds_the_run(run)

        rollback = lab.rollback()
        assert_succeeded(rollback)
        undone = summaries(rollback)
        assert undone["traffic.revert_weights"]["change_id"] is not None
        assert undone["database.repoint_poolers"]["changed"] is True
        after = lab.status()
        assert_clean_staging(after, before, rollback)
        commits_at_rollback = lab.load.report()["db_commits"]
        assert_traffic_back_on_staging(lab)

        again = lab.rollback()  # idempotent: the second finds nothing to undo
        assert_nothing_changed(again)
        assert_clean_staging(lab.status(), before, again)
        assert comparable(lab.status()) == comparable(after)
        figures, ledger, sessions, events = lab.finish()
    assert figures["db_commits"] > commits_at_rollback  # writes after the rollback, on the source too
    assert_nothing_lost(figures, ledger, sessions, events)
    # Users' requests hopped between the environments: both served their session writes.
    by_environment = figures["sessions"]["by_environment"]
    assert all(by_environment.get(env, {}).get("session_writes", 0) > 0 for env in ("staging", "production"))


ROLLBACK_POINTS = {
    # The database phase ends in two branches (PostgreSQL, Redis); both before the switchover.
    "database_only": ["database.validate_data", "database.validate_redis"],
    "services_promoted": ["services.verify"],
}


# Both in make test's main process: it waits more than it computes (about one core busy), while the
# second one (the browser's night, the full and the 50 % migrations) uses more (tests/parallel.py).
@pytest.mark.parametrize("point", list(ROLLBACK_POINTS))
def test_rollback_after_a_partial_migration(point: str) -> None:
    with scenario(point) as lab:
        before = lab.status()
        run = lab.migrate(ROLLBACK_POINTS[point])
        states = assert_succeeded(run)
        assert all(states[task_id] == "success" for task_id in ROLLBACK_POINTS[point])
        assert_stopped_at(point, lab.status(), before)
        assert not [t for t in states if t.startswith("validation.")]
        roll_back_to_clean_staging(lab, before)


# The release production served before the migration's: its color is the one services.undo goes back to.
PREVIOUS_RELEASE = "1.7.0"


@pytest.mark.beside
def test_at_50_percent_users_back_then_clear_to_undo_then_the_rollback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Production serves a previous release; the migration runs up to 50 % of users on production,
    its undos skipped. Cleared alone, `switchover.undo` and `services.undo` refuse while users are
    on production, naming the records, and nothing moves. The rollback DAG's emergency path (scope
    traffic) puts users back on staging and moves nothing else. Then, from the migration's own
    graph, `services.undo` sends every service back to the previous release and `switchover.undo`
    moves PostgreSQL's and Redis's writers back to the source under load; the rollback DAG after it
    finishes the job (forward replication dropped) into a clean staging state: not one commit or
    session write lost."""
    with scenario("at_50") as lab:
        release_previous_version(lab)
        before = lab.status()
        run = lab.migrate(["traffic.shift_to_50", "services.undo", "switchover.undo"])
        states = assert_succeeded(run)
        assert states["traffic.shift_to_50"] == "success"
        assert states["services.undo"] == states["switchover.undo"] == "skipped"
        assert not [t for t in states if t.startswith("validation.")]
        migrated = lab.status()
        assert_stopped_at("traffic_at_50", migrated, before)
        assert migrated["redis"]["endpoint"] == {"routes_to": "target"}, migrated["redis"]
        capfd.readouterr()

        for undo in ("switchover.undo", "services.undo"):
            refused = lab.clear_alone(run, undo)
            assert task_states(refused)[undo] == "failed", undo
        logs = capfd.readouterr()
        refusals = logs.out + logs.err
        assert refusals.count("users are on production through") == 2, refusals[-3000:]
        for record in lab.config.dns.records:
            assert f"{record} (production 50, staging 50)" in refusals, record
        assert "Clear traffic.undo first" in refusals
        unmoved = lab.status()
        assert comparable(unmoved) == comparable(migrated)
        assert unmoved["redis"]["endpoint"] == migrated["redis"]["endpoint"]

        assert_emergency_rollback_moves_only_users(lab)
        services = lab.clear_alone(run, "services.undo")
        assert task_states(services)["services.undo"] == "success"
        undone = xcom(services, "services.undo")
        assert "cleared by hand" in undone["why"], undone
        assert sorted(undone["changed"]) == sorted(lab.config.deployable), undone
        assert lab.status()["services"] == before["services"]  # the previous release, ready

        writers = lab.clear_alone(run, "switchover.undo")
        assert writers.state == "success", task_states(writers)
        moved = xcom(writers, "switchover.undo")
        assert moved["postgres"]["changed"] is True and moved["redis"]["changed"] is True, moved
        after = lab.status()
        assert all(p == {"points_at": "source", "paused": False} for p in pooler_states(after))
        assert_redis_on_source(after["redis"])
        print(
            f"switchover.undo: PostgreSQL write stall {moved['postgres']['write_stall_ms']} ms, "
            f"Redis stall {moved['redis'].get('stall_ms')} ms"
        )

        roll_back_to_clean_staging(lab, before)


def roll_back_to_clean_staging(lab: Scenario, before: dict[str, Any]) -> None:
    """The rollback DAG from wherever the scenario left things: a clean staging state, users back
    on staging, then the load stopped with nothing lost."""
    rollback = lab.rollback()
    assert_succeeded(rollback)
    assert_clean_staging(lab.status(), before, rollback)
    assert_traffic_back_on_staging(lab)
    figures, ledger, sessions, events = lab.finish()
    assert_nothing_lost(figures, ledger, sessions, events)


def release_previous_version(lab: Scenario) -> None:
    """Production as it is before a real migration: every service serves an earlier release, put
    there by the project's own blue-green steps (deploy, rollout, promote), so the migration's
    release takes the other color and the earlier one is the previous color to go back to."""
    production = lab.config.environments.production
    releases = [
        BlueGreenService(
            production.namespace,
            name=name,
            replicas=node.replicas,
            secret=production.service_secret,
            extra={"port": node.port, "health_path": node.health_path},
        )
        for name, node in lab.config.deployable.items()
    ]
    for step in ("deploy", "wait_rollout", "promote"):  # every rollout at once, then every switch
        for release in releases:
            getattr(release, step)(PREVIOUS_RELEASE)


def assert_emergency_rollback_moves_only_users(lab: Scenario) -> None:
    """The emergency path (scope traffic) mid-cutover: every user back on staging in one run, and
    nothing else moved: the writers stay on the target, staging's pods reaching it through the poolers."""
    before = lab.status()
    emergency = lab.rollback(scope="traffic")
    states = assert_succeeded(emergency)
    acted = {task_id for task_id, state in states.items() if state == "success"}
    assert acted == {"check_run", "traffic.revert_weights"}, states
    after = lab.status()
    assert weights(after) == {(0, 100)}
    assert {k: v for k, v in comparable(after).items() if k != "dns"} == {
        k: v for k, v in comparable(before).items() if k != "dns"
    }
    assert all(p == {"points_at": "target", "paused": False} for p in pooler_states(after))
    assert_traffic_back_on_staging(lab)
    revert = summaries(emergency)["traffic.revert_weights"]
    seconds = (emergency.end_date - emergency.start_date).total_seconds()
    print(f"emergency rollback (scope traffic): {seconds:.1f} s in the rollback DAG, INSYNC; {revert}")


def assert_stopped_at(point: str, status: dict[str, Any], before: dict[str, Any]) -> None:
    """The partial migration left what it should, and nothing of the phases after it."""
    forward = status["database"]["replication"]["forward (source -> target)"]
    if point == "database_only":
        assert forward["state"] == "enabled", forward
        assert all(p["points_at"] == "source" for p in pooler_states(status))
        assert status["services"] == before["services"] and status["dns"] == before["dns"]
        return
    for name, service in status["services"].items():
        assert service["color"] is not None and service["image"] == service["wanted"], name
    if point == "services_promoted":
        assert all(p["points_at"] == "source" for p in pooler_states(status))
        assert weights(status) == {(0, 100)}
    else:
        assert all(p == {"points_at": "target", "paused": False} for p in pooler_states(status))
        assert weights(status) == {(50, 50)}


def assert_report_holds_the_run(run: Any) -> None:
    """The report task wrote this run's HTML and JSON; both hold the figures the tasks recorded."""
    results = summaries(run)
    written = results["validation.report"]
    html_path, json_path = Path(written["html"]), Path(written["json"])
    assert html_path.is_file() and json_path.is_file()
    assert run.run_id.replace(":", "_").replace("+", "_") in json_path.name
    data = json.loads(json_path.read_text())
    assert (data["dag_id"], data["run_id"], data["mode"]) == (run.dag_id, run.run_id, "apply")

    stall = results["switchover.switch_database"]["write_stall_ms"]
    assert isinstance(stall, int | float) and data["write_stall_ms"] == stall
    redis_stall = results["switchover.switch_redis"]["stall_ms"]
    assert isinstance(redis_stall, int | float) and data["redis_stall_ms"] == redis_stall
    durations = {ti.task_id: ti.duration or 0 for ti in run.get_task_instances()}
    del durations["validation.report"]  # the report is written before its own task ends
    assert {p["phase"] for p in data["phases"]} == {t.split(".", 1)[0] for t in durations}
    for phase in data["phases"]:
        inside = [d for t, d in durations.items() if t.startswith(f"{phase['phase']}.")]
        assert phase["task_seconds"] == pytest.approx(sum(inside), abs=0.02), phase
    assert data["replication_lag_bytes"] == results["database.lag_gate"]["lags"]
    assert [step["weight"] for step in data["traffic"]] == [10, 25, 50, 75, 100]
    rows = results["validation.data_parity"]["rows"]
    assert rows > 0 and data["validation"]["validation.data_parity"]["rows"] == rows

    page = parse(html_path.read_text())
    text = " ".join(page.text)
    assert f"{stall} ms" in text and f"{redis_stall} ms" in text
    for phase in data["phases"]:
        assert f"{float(phase['task_seconds']):g} s" in text, phase
    assert f"rows {rows:,}" in text  # the data parity check's figures, as the report words them


def assert_traffic_back_on_staging(lab: Scenario) -> None:
    served = lab.traffic_on_staging()
    assert served.get("staging", 0) > 0 and served.get("production", 0) == 0, served


def assert_nothing_lost(
    figures: dict[str, Any], ledger: LedgerReport, sessions: SessionLedgerReport, events: KafkaLedgerReport
) -> None:
    """Not one commit, request, login, session write or event failed or lost; no valid session
    rejected, no rate-limit counter reset."""
    # Every session write published its event before it was acknowledged.
    assert events.produced >= sessions.acknowledged > 0, (events.summary(), sessions.summary())
    # Each acknowledged event at a place of its own (a broker's fault otherwise, not the migration's).
    assert events.shared_places == {}, events.summary()
    assert events.lost == [], events.summary()
    # At least once: what the group reads again after a move is what the mirror had in flight or not
    # yet copied when it moved (its window, the lag gate), once each way.
    kafka = load_config().kafka
    assert kafka is not None
    assert events.duplicates <= 2 * (kafka.mirror_window + kafka.max_lag), events.summary()
    print(f"\nKafka: {events.summary()}")
    assert ledger.checked == figures["db_commits"] > 0
    assert ledger.lost == 0, ledger.summary()
    assert figures["db_failures"] == 0, figures["db_errors"]
    assert figures["http_requests"] > 0 and figures["http_failures"] == 0, figures["http_errors"]
    users = figures["sessions"]
    # Whole, as text: the samples (which user, which environment, what count) say what happened.
    shown = json.dumps(users, indent=1, sort_keys=True, default=str)
    assert users["logins_attempted"] == users["logins_succeeded"] > 0, shown
    assert users["failures"] == {}, shown
    lost_or_reset = (users["sessions_lost"], users["rate_counters_reset"], users["session_writes_regressed"])
    assert lost_or_reset == (0, 0, 0), shown
    assert sessions.acknowledged == users["session_writes"] > 0, (sessions.summary(), shown)
    assert sessions.lost == 0, sessions.summary()


def pooler_states(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each pooler points and whether it is paused (whom it serves moves with the load)."""
    return [pointing(pooler) for pooler in status["database"]["poolers"].values()]


def weights(status: dict[str, Any]) -> set[tuple[int, int]]:
    """(production, staging) weight of every record."""
    return {(sets["production"]["weight"], sets["staging"]["weight"]) for sets in status["dns"].values()}


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    """The state a rollback decides: lag figures and whom a pooler serves move with the load, so they
    are left out."""
    return {
        "dns": status["dns"],
        "poolers": {name: pointing(pooler) for name, pooler in status["database"]["poolers"].items()},
        "replication": {k: v["state"] for k, v in status["database"]["replication"].items()},
        "services": status["services"],
    }
