"""The database phase's pure parts, without any server: SQL files, names, dump filtering, the
pgoutput decoder, PgBouncer's ini lines, Redis comparisons, the plan's wiring and the config."""

from __future__ import annotations

import os
import re
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest
from psycopg2 import sql

from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import ConfigError, load_config, parse_config
from pyairtable_migration.hooks.database import (
    SQL_DIR,
    MigrationError,
    Table,
    display_identifier,
    parse_pending_transaction,
)
from pyairtable_migration.hooks.pgbouncer import format_connstring, parse_connstring
from pyairtable_migration.hooks.redis_hook import KeyInventory, ReplicationState, compare_inventories
from pyairtable_migration.plan import build_plan
from pyairtable_migration.postgres import preflight
from pyairtable_migration.postgres.indexes import parallel_workers
from pyairtable_migration.postgres.schema_copy import deferred_entries, remove_objects, strip_psql_meta
from pyairtable_migration.postgres.snapshot_copy import _RangeReader, _SourceFailed
from pyairtable_migration.redis.stages import emptied_target, endpoint_rollback_stage, rollback_stage


def test_every_sql_file_composes_with_identifiers_only() -> None:
    """Placeholders are identifiers ({name}); values are bound parameters (%(name)s); no other %."""
    files = sorted(SQL_DIR.glob("*.sql"))
    assert len(files) > 30
    for path in files:
        text = path.read_text()
        placeholders = set(re.findall(r"\{(\w+)\}", text))
        sql.SQL(text).format(**{name: sql.Identifier("x") for name in placeholders})
        stray = re.sub(r"%\((\w+)\)s", "", text)
        assert "%" not in stray, f"{path.name}: a bare % would break parameter binding"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audit_log", Table("public", "audit_log")),
        ("Audit_Log", Table("public", "audit_log")),
        ('public."Record Comments"', Table("public", "Record Comments")),
        ('"My.Schema"."a ""b"""', Table("My.Schema", 'a "b"')),
    ],
)
def test_table_names_parse_as_sql_spells_them(text: str, expected: Table) -> None:
    assert Table.parse(text) == expected


def test_table_names_display_quoted_when_needed() -> None:
    assert str(Table("public", "Record Comments")) == 'public."Record Comments"'
    assert str(Table("public", "records")) == "public.records"
    assert display_identifier('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        Table.parse("a.b.c")


def test_config_lists_tables_allowed_replica_identity_full() -> None:
    config = load_config()
    assert config.database.replica_identity_full == ["audit_log"]
    text = (SQL_DIR.parent / "migration.yaml").read_text()
    for good in ('public."Record Comments"', "audit_log", "public.audit_log"):
        document = text.replace("replica_identity_full: [audit_log]", f"replica_identity_full: ['{good}']")
        assert parse_config(document).database.replica_identity_full == [good]
    bad = text.replace("replica_identity_full: [audit_log]", "replica_identity_full: ['a; DROP TABLE b']")
    with pytest.raises(ConfigError, match="replica_identity_full"):
        parse_config(bad)


DUMP = """--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;

--
-- Name: records records_pkey; Type: CONSTRAINT; Schema: public; Owner: migrator
--

ALTER TABLE ONLY public.records
    ADD CONSTRAINT records_pkey PRIMARY KEY (id);


--
-- Name: CONSTRAINT records_pkey ON records; Type: COMMENT; Schema: public; Owner: migrator
--

COMMENT ON CONSTRAINT records_pkey ON public.records IS 'one row per record';


--
-- Name: Record Comments_record_id_idx; Type: INDEX; Schema: public; Owner: migrator
--

CREATE INDEX "Record Comments_record_id_idx" ON public."Record Comments" USING btree (record_id);


--
-- Name: users_email_key; Type: INDEX; Schema: public; Owner: migrator
--

CREATE UNIQUE INDEX users_email_key ON public.users USING btree (email);

\\unrestrict abc123
"""


def test_secondary_indexes_are_cut_from_the_dump_and_constraints_kept() -> None:
    script, removed = remove_objects(
        strip_psql_meta(DUMP), {("INDEX", "public", "Record Comments_record_id_idx")}
    )
    assert removed == [("INDEX", "public", "Record Comments_record_id_idx")]
    assert "records_pkey PRIMARY KEY" in script
    assert "users_email_key" in script
    assert "Record Comments_record_id_idx" not in script
    assert "\\restrict" not in script and "\\unrestrict" not in script


def test_deferred_keys_leave_the_dump_with_their_comments_by_the_names_pg_dump_gives_them() -> None:
    key = {"schema_name": "public", "table_name": "records", "constraint_name": "records_pkey", "kind": "p"}
    entries = deferred_entries(
        [{"schema_name": "public", "index_name": "Record Comments_record_id_idx"}],
        [{**key, "comment_tag": "CONSTRAINT records_pkey ON records"}],
    )
    script, removed = remove_objects(strip_psql_meta(DUMP), set(entries))
    assert [entries[entry] for entry in removed] == [
        "records_pkey on public.records",
        "",  # its comment goes with it
        'public."Record Comments_record_id_idx"',
    ]
    assert "records_pkey" not in script and "Record Comments_record_id_idx" not in script
    assert "CREATE UNIQUE INDEX users_email_key" in script


@pytest.mark.parametrize(
    ("parallelism", "groups", "workers"),
    [(2, 12, 0), (2, 2, 0), (2, 1, 1), (4, 1, 3), (4, 2, 1), (4, 3, 0), (3, 2, 0), (1, 1, 0), (4, 0, 3)],
)
def test_deferred_builds_take_parallel_workers_only_where_fewer_builds_than_processes_run(
    parallelism: int, groups: int, workers: int
) -> None:
    assert parallel_workers(parallelism, groups) == workers
    assert min(parallelism, max(groups, 1)) * (workers + 1) <= parallelism


# A stand-in for psql on the source, for the copy's framing alone (the lab tests run the real one):
# it answers each statement with what the test needs, then the boundary line it was asked to echo.
FAKE_PSQL = r"""
import signal, sys, time
signal.alarm(10)  # gone within 10 s whatever happens: a reader that missed its boundary fails, not waits
out, statement = sys.stdout.buffer, []
for line in sys.stdin:
    if not line.startswith("\\echo "):
        statement.append(line)
        continue
    token, text, statement = line[6:].rstrip("\n").encode(), "".join(statement), []
    if "FAIL" in text:
        out.write(b"half a row"); out.flush()
        sys.stderr.write("psql:<stdin>:7: ERROR:  canceling statement due to user request\n")
        sys.exit(3)
    if "ROWS" in text:  # a prefix of the boundary inside the rows; the boundary over two writes
        for part in (b"row 1\n" + token[:10], b" row 2\n" + token[:3], token[3:] + b"\n"):
            out.write(part); out.flush(); time.sleep(0.05)
    else:
        out.write(token + b"\n"); out.flush()
"""


def test_a_reader_hands_on_each_statements_output_up_to_its_boundary_and_names_psqls_error() -> None:
    reader = _RangeReader([sys.executable, "-c", FAKE_PSQL], dict(os.environ))
    # Its first characters recur: the last bytes read before the pause, "a1a", may begin it at their
    # first "a" as at their last (a random boundary does so too, only not every time).
    reader.boundary = b"a1a2b3c4d5e6f708192a3b4c5d6e7f80\n"
    try:
        reader.start("BEGIN")
        reader.finish_empty()
        reader.start("COPY ROWS")
        streamed = b"".join(iter(lambda: reader.read(4), b""))
        assert streamed == b"row 1\n" + reader.boundary[:10] + b" row 2\n"
        assert reader.read() == b""  # nothing more until the next statement
        reader.start("COPY FAIL")
        with pytest.raises(_SourceFailed, match=r"^psql on the source: ERROR:  canceling statement due to"):
            while reader.read():
                pass
    finally:
        reader.close()


def _message(kind: bytes, *parts: bytes) -> tuple[str, str, bytes]:
    return ("0/0", "742", kind + b"".join(parts))


def test_the_failing_transaction_is_decoded_from_pgoutput() -> None:
    """What the lag gate reports: table, key and finish LSN of the slot's next transaction."""
    final_lsn = (0x1 << 32) | 0x4C0378
    relation = (
        struct.pack("!i", 16401)
        + b"public\0records\0"
        + struct.pack("!b", ord("d"))
        + struct.pack("!h", 2)
        + struct.pack("!b", 1)
        + b"id\0"
        + struct.pack("!ii", 20, -1)
        + struct.pack("!b", 0)
        + b"data\0"
        + struct.pack("!ii", 3802, -1)
    )
    insert = (
        struct.pack("!i", 16401)
        + b"N"
        + struct.pack("!h", 2)
        + b"t"
        + struct.pack("!i", 5)
        + b"20001"
        + b"t"
        + struct.pack("!i", 2)
        + b"{}"
    )
    messages = [
        _message(b"B", struct.pack("!qqi", final_lsn, 0, 742)),
        _message(b"R", relation),
        _message(b"I", insert),
        _message(b"C", struct.pack("!bqqq", 0, final_lsn, final_lsn + 40, 0)),
    ]
    pending = parse_pending_transaction(messages)
    assert pending is not None
    assert pending.final_lsn == "1/4C0378"
    assert pending.tables() == [Table("public", "records")]
    assert pending.describe() == "INSERT INTO public.records (id=20001)"


def test_pgbouncer_database_lines_round_trip() -> None:
    pairs = parse_connstring("host=127.0.0.1 port=15432 dbname=pyairtable auth_user='a b'")
    assert pairs == {"host": "127.0.0.1", "port": "15432", "dbname": "pyairtable", "auth_user": "a b"}
    assert parse_connstring(format_connstring(pairs)) == pairs


def test_redis_inventories_compare_counts_per_type_and_ttls() -> None:
    source = KeyInventory(types=Counter(string=2, hash=1), ttls={b"a": 10_000, b"b": 5_000}, total=3)
    same = KeyInventory(types=Counter(string=2, hash=1), ttls={b"a": 9_000, b"b": 5_000}, total=3)
    assert compare_inventories(source, same, tolerance_ms=2_000) == []
    differs = KeyInventory(types=Counter(string=2), ttls={b"a": 1_000}, total=2)
    problems = compare_inventories(source, differs, tolerance_ms=2_000)
    assert "hash keys: source 1, target 0" in problems
    assert any("no TTL (or no key) on the target: b" in p for p in problems)
    assert any("a (expires -9.0 s later on the target)" in p for p in problems)


def test_the_plan_wires_the_database_operators() -> None:
    config = load_config()
    steps = build_plan(config).steps
    expected = {
        "preflight.check_database": "database.CheckDatabaseOperator",
        "preflight.check_redis": "redis_sync.CheckRedisOperator",
        "database.copy_schema": "database.CopySchemaOperator",
        "database.create_publication": "database.CreatePublicationOperator",
        "database.create_subscription": "database.CreateSubscriptionOperator",
        "database.wait_initial_sync": "database.WaitInitialSyncOperator",
        "database.build_deferred_indexes": "database.BuildDeferredIndexesOperator",
        "database.lag_gate": "database.LagGateOperator",
        "database.validate_data": "database.ValidateDataOperator",
        "database.sync_redis": "redis_sync.SyncRedisOperator",
        "database.validate_redis": "redis_sync.ValidateRedisOperator",
        "switchover.approve": "switchover.SwitchoverApprovalOperator",
        "switchover.switch_database": "switchover.SwitchDatabaseOperator",
        "switchover.switch_redis": "redis_sync.SwitchRedisOperator",
        # Beside the phase: both kinds of writers back, cleared alone (the Redis rollback's module).
        "switchover.undo": "redis_sync.SwitchoverUndoOperator",
    }
    for task_id, operator in expected.items():
        assert steps[task_id].operator == f"pyairtable_migration.operators.{operator}", task_id
    assert steps["database.lag_gate"].arguments["lag_threshold_bytes"] == "{{ params.lag_threshold_bytes }}"
    assert steps["switchover.switch_database"].arguments["trigger_rule"] == "none_failed"
    dag = build_migration_dag(config)
    gate = dag.get_task("database.lag_gate")
    assert "lag_threshold_bytes" in gate.template_fields
    switch = dag.get_task("switchover.switch_database")
    assert switch.upstream_task_ids == {"switchover.approve"}
    assert switch.trigger_rule == "none_failed"
    undo = dag.get_task("switchover.undo")
    assert undo.upstream_task_ids == {"switchover.full_backup"} and not undo.downstream_task_ids
    assert {"database", "route53"} <= set(undo.template_fields)
    for task in dag.tasks:
        if task.task_id in expected and task.task_id != "switchover.approve":
            assert set(task.template_fields) >= {"source_conn_id", "target_conn_id"}, task.task_id


SOURCE_REDIS, TARGET_REDIS = ("127.0.0.1", 6379), ("127.0.0.1", 6380)


@pytest.mark.parametrize(
    ("source", "target", "markers", "stage"),
    [
        (ReplicationState("master"), ReplicationState("slave", *SOURCE_REDIS), (None, None), "nothing"),
        (ReplicationState("master"), ReplicationState("master"), (None, "t0"), "replicate"),
        (ReplicationState("slave", *TARGET_REDIS), ReplicationState("master"), (None, "t0"), "catch_up"),
        (ReplicationState("master"), ReplicationState("master"), ("t0", "t0"), "repoint_target"),
        (ReplicationState("master"), ReplicationState("slave", *SOURCE_REDIS), ("t0", None), "unmark"),
        (ReplicationState("master"), ReplicationState("master"), (None, None), "nothing"),
    ],
)
def test_the_redis_rollback_continues_from_what_the_servers_report(
    source: ReplicationState, target: ReplicationState, markers: tuple[str | None, str | None], stage: str
) -> None:
    assert rollback_stage(source, target, SOURCE_REDIS, TARGET_REDIS, *markers)[0] == stage


@pytest.mark.parametrize(
    ("source", "target", "routed", "markers", "stage"),
    [
        (
            ReplicationState("master"),
            ReplicationState("slave", *SOURCE_REDIS),
            "source",
            (None, None),
            "nothing",
        ),
        (
            ReplicationState("slave", *TARGET_REDIS),
            ReplicationState("master"),
            "target",
            (None, "t0"),
            "catch_up",
        ),
        (ReplicationState("master"), ReplicationState("master"), "target", ("t0", "t0"), "replicate"),
        (ReplicationState("master"), ReplicationState("master"), "source", ("t0", "t0"), "repoint_target"),
        # Promoted and marked but never routed to (a switch stopped before its commit point): the
        # endpoint is the truth, and the source keeps its writes.
        (ReplicationState("master"), ReplicationState("master"), "source", (None, "t0"), "repoint_target"),
        # Staging before any sync: two primaries, no marker.
        (ReplicationState("master"), ReplicationState("master"), "source", (None, None), "nothing"),
        (
            ReplicationState("master"),
            ReplicationState("slave", *SOURCE_REDIS),
            "source",
            ("t0", None),
            "unmark",
        ),
    ],
)
def test_through_an_endpoint_the_redis_rollback_follows_where_it_routes(
    source: ReplicationState,
    target: ReplicationState,
    routed: str,
    markers: tuple[str | None, str | None],
    stage: str,
) -> None:
    assert endpoint_rollback_stage(source, target, SOURCE_REDIS, TARGET_REDIS, routed, *markers)[0] == stage


def test_through_an_endpoint_writers_on_a_replica_are_refused() -> None:
    with pytest.raises(MigrationError, match=r"routes to the target, but .* the target a slave"):
        endpoint_rollback_stage(
            ReplicationState("master"),
            ReplicationState("slave", *SOURCE_REDIS),
            SOURCE_REDIS,
            TARGET_REDIS,
            "target",
            None,
            None,
        )


def test_the_redis_rollback_refuses_an_arrangement_it_did_not_make() -> None:
    stranger = ReplicationState("slave", "10.0.0.9", 6379)
    with pytest.raises(MigrationError, match="neither switched nor the staging arrangement"):
        rollback_stage(stranger, ReplicationState("master"), SOURCE_REDIS, TARGET_REDIS, None, None)
    assert emptied_target(0, 5) and emptied_target(3, 5) is None and emptied_target(0, 0) is None


def test_preflight_rules_name_every_problem_from_the_facts_alone() -> None:
    fact = {
        "server_version_num": 150004,
        "server_version": "15.4",
        "server_encoding": "UTF8",
        "wal_level": "replica",
        "max_replication_slots": 2,
        "used_replication_slots": 2,
        "max_wal_senders": 4,
        "used_wal_senders": 1,
        "max_logical_replication_workers": 4,
        "role_name": "migrator",
        "is_superuser": True,
        "has_replication": True,
        "large_objects": 0,
    }
    problems = preflight.server_problems("source", fact)
    assert [p.split(":")[0] for p in problems] == ["source", "source"]
    assert "wal_level is replica" in problems[0] and "no free replication slot" in problems[1]
    assert preflight.pairing_problems(fact, {**fact, "server_version_num": 170002}) == []
    older = preflight.pairing_problems(
        fact, {**fact, "server_version_num": 140010, "server_encoding": "LATIN1"}
    )
    assert older == [
        "target runs PostgreSQL 14, older than the source's 15: the target must be the same major "
        "version or newer",
        "target database is encoded LATIN1, the source's UTF8: create the target database with ENCODING "
        "'UTF8' (rows would not validate as equal otherwise)",
    ]
    audit, comments = Table("public", "audit_log"), Table("public", "Record Comments")
    notes: list[str] = []
    facts = preflight.SourceFacts([audit, comments], {audit, comments}, [comments], None, None)
    problems = preflight.source_problems(facts, {audit}, "pub", "sub", notes)
    assert len(problems) == 2 and 'public."Record Comments" has no replica identity' in problems[0]
    assert "is UNLOGGED" in problems[1]
    assert notes == ["REPLICA IDENTITY FULL will be set on public.audit_log (database.replica_identity_full)"]
    foreign = preflight.TargetFacts([Table("public", "users")], False, None)
    assert "not empty (1 table(s): public.users)" in preflight.target_problems(foreign, "pub", "sub", [])[0]


def test_the_client_programs_are_found_where_configured_and_their_absence_named(tmp_path: Path) -> None:
    from pyairtable_migration.hooks.database import DEFAULT_PG_BIN_DIR, client_program

    assert preflight.psql_problems(DEFAULT_PG_BIN_DIR) == []
    assert client_program(DEFAULT_PG_BIN_DIR, "psql") == f"{DEFAULT_PG_BIN_DIR}/psql"
    (empty := tmp_path / "bin").mkdir()
    assert preflight.psql_problems(str(empty)) == [
        f"psql not found at {empty}/psql (pg_bin_dir): initial_copy: parallel reads each range with it"
    ]
    assert client_program(str(empty), "psql").endswith("/psql")  # else the one on PATH
    missing = f"no_such_program not found at {empty}/no_such_program nor on PATH"
    with pytest.raises(MigrationError, match=missing):
        client_program(str(empty), "no_such_program")
