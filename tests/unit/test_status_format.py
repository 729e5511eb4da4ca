"""`make status` text: every section printed, a part that could not be read says why."""

from __future__ import annotations

from pyairtable_migration.status import format_status


def test_each_section_is_printed_and_an_unreadable_part_says_why() -> None:
    status = {
        "database": {
            "poolers": {
                "pgbouncer": {
                    "points_at": "target",
                    "paused": True,
                    "clients_waiting": 4,
                    "server_connections": 0,
                }
            },
            "replication": {
                "reverse (target -> source)": {
                    "subscription": "pyairtable_rollback",
                    "state": "enabled",
                    "lag_bytes": 0,
                }
            },
        },
        "redis": {"error": "ConnectionError: refused"},
        "services": {
            "web-bff": {"color": "green", "image": "web-bff:2", "ready": "2/2", "wanted": "web-bff:3"},
            "mcp-server": {"color": None, "image": None, "ready": None, "wanted": "mcp-server:3"},
        },
        "dns": {
            "app.example.": {"production": {"weight": 50, "ttl": 60}, "staging": {"weight": 50, "ttl": 60}}
        },
        "kafka": {
            "groups": {
                "automation-service": {
                    "staging": {"state": "EMPTY", "has_offsets": True, "deployment": "worker", "replicas": 0},
                    "production": {
                        "state": "STABLE",
                        "has_offsets": True,
                        "deployment": "worker",
                        "replicas": 2,
                    },
                }
            },
            "mirrors": {
                "staging -> production": {"running_pid": 4242, "state_dir_here": True, "lag": 17},
                "production -> staging": {"running_pid": None, "state_dir_here": False, "lag": None},
            },
        },
    }
    lines = format_status(status).splitlines()
    assert [line for line in lines if line.startswith("==")] == [
        "== database ==",
        "== redis ==",
        "== services (production) ==",
        "== dns ==",
        "== kafka ==",
    ]
    assert "  pooler pgbouncer -> target (PAUSED): 4 client(s) waiting, 0 server connection(s)" in lines
    assert "  reverse (target -> source): subscription pyairtable_rollback enabled, lag 0 bytes" in lines
    assert "  cannot read: ConnectionError: refused" in lines
    assert any("web-bff" in line and "green" in line and "(config: web-bff:3)" in line for line in lines)
    assert any("mcp-server" in line and "not deployed in production" in line for line in lines)
    assert "  app.example.: production weight 50 ttl 60, staging weight 50 ttl 60" in lines
    assert "  group automation-service: staging EMPTY, worker x0; production STABLE, worker x2" in lines
    assert "  mirror staging -> production: running (pid 4242), 17 events left to copy" in lines
    assert "  mirror production -> staging: not started on this host, never ran" in lines
