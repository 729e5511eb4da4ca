"""The Redis write endpoint's answers read right: HAProxy's `show servers state` and `show stat` as
HAProxy 2.6 prints them, error answers refused, addresses matched by what they resolve to, and a
runtime API that does not answer named with its address and the command."""

from __future__ import annotations

import json

import pytest

from lab.settings import free_ports
from pyairtable_migration.hooks.database import MigrationError
from pyairtable_migration.hooks.redis_endpoint import (
    EndpointServer,
    RedisEndpointHook,
    parse_current_sessions,
    parse_servers_state,
    same_address,
)

# `show servers state redis` from the lab's HAProxy 2.6 after `set server redis/source state maint;
# set server redis/target state ready`: the target, declared `disabled`, keeps its config bit (4)
# and is ready. Added: a server draining (8 + 4) and a line of another backend.
SERVERS_STATE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 redis 1 source 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 59215 - 0 0 - - 0
3 redis 2 target 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 48579 - 0 0 - - 0
3 redis 3 spare 10.0.0.7 2 12 1 1 0 1 0 0 8 0 0 0 - 6379 - 0 0 - - 0
4 other 1 elsewhere 10.0.0.8 2 0 1 1 0 1 0 0 0 0 0 0 - 6379 - 0 0 - - 0

"""

SHOW_STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status
redis,source,0,0,3,4,,9,123,456,,0,,0,0,0,0,UP
redis,target,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT

"""


def test_servers_state_is_read_with_its_routing() -> None:
    servers = parse_servers_state(SERVERS_STATE, "redis")
    assert servers == [
        EndpointServer("source", ("127.0.0.1", 59215), "maint"),
        EndpointServer("target", ("127.0.0.1", 48579), "ready"),
        EndpointServer("spare", ("10.0.0.7", 6379), "maint"),
    ]
    assert [server.routed for server in servers] == [False, True, False]
    assert parse_servers_state(SERVERS_STATE, "other") == [
        EndpointServer("elsewhere", ("10.0.0.8", 6379), "ready")
    ]
    assert parse_servers_state(SERVERS_STATE, "missing") == []


@pytest.mark.parametrize(
    ("admin_state", "routed"),
    # ready; `disabled` in the config, then readied; forced maintenance (the config's `disabled`:
    # 1 + 4); inherited maintenance; forced drain; DNS maintenance
    [(0, True), (4, True), (1, False), (5, False), (2, False), (8, False), (32, False)],
)
def test_each_maintenance_or_drain_bit_but_the_configs_stops_routing(admin_state: int, routed: bool) -> None:
    line = f"3 redis 2 target 127.0.0.1 2 {admin_state} 1 1 0 1 0 0 8 0 0 0 - 48579 - 0 0 - - 0"
    (server,) = parse_servers_state("\n".join([*SERVERS_STATE.splitlines()[:2], line]), "redis")
    assert server.routed is routed


@pytest.mark.parametrize("answer", ["Can't find backend.\n", "", "Unknown command: 'show servers'\n"])
def test_an_answer_that_is_not_a_servers_state_is_refused_with_its_text(answer: str) -> None:
    with pytest.raises(ValueError, match="not a `show servers state` answer") as refused:
        parse_servers_state(answer, "redis")
    assert answer.strip() in str(refused.value)


def test_a_server_line_without_the_columns_is_refused() -> None:
    broken = "1\n# be_id be_name srv_id srv_name\n3 redis 1 source\n"
    with pytest.raises(ValueError, match="unreadable server line '3 redis 1 source'"):
        parse_servers_state(broken, "redis")


def test_current_sessions_per_server() -> None:
    assert parse_current_sessions(SHOW_STAT, "redis") == {"source": 3, "target": 0}
    with pytest.raises(ValueError, match="not a `show stat` answer"):
        parse_current_sessions("Unknown command.\n", "redis")


def test_addresses_match_by_port_and_resolved_host() -> None:
    assert same_address(("localhost", 16380), ("127.0.0.1", 16380))
    assert same_address(("127.0.0.1", 16380), ("127.0.0.1", 16380))
    assert not same_address(("127.0.0.1", 16380), ("127.0.0.1", 16379))
    assert not same_address(("10.0.0.7", 6379), ("127.0.0.1", 6379))
    assert not same_address(("no-such-host.invalid", 6379), ("127.0.0.1", 6379))


def test_a_runtime_api_that_does_not_answer_is_named_with_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    connection = {"conn_type": "haproxy", "host": "127.0.0.1", "port": port, "extra": {"backend": "cache"}}
    monkeypatch.setenv("AIRFLOW_CONN_ENDPOINT_DOWN", json.dumps(connection))
    hook = RedisEndpointHook("endpoint_down")
    assert hook.describe() == f"127.0.0.1:{port} backend cache"
    with pytest.raises(
        MigrationError, match=rf"runtime API at 127\.0\.0\.1:{port} did not answer `show servers state cache`"
    ):
        hook.routed_to()
