"""Where the writers are, judged from what each endpoint was seen doing (no system needed)."""

from __future__ import annotations

from pyairtable_migration.topology import Endpoint, Pooler, classify, pooler_endpoint

SOURCE, TARGET = ("10.0.0.1", 5432), ("10.0.0.2", 5432)
POOLER = Pooler("pgbouncer", "pgbouncer_admin", "pyairtable")


def seen(host: str, port: int = 5432, paused: bool = False, name: str = "pgbouncer") -> Endpoint:
    return pooler_endpoint(
        Pooler(name, "admin", "pyairtable"), SOURCE, TARGET, {"host": host, "port": port, "paused": paused}
    )


def test_every_pooler_on_one_side_is_that_side() -> None:
    assert classify([seen("10.0.0.1"), seen("10.0.0.1", name="b")]).where == "source"
    found = classify([seen("10.0.0.2", paused=True)])
    assert found.where == "target" and found.on("target") == ["pgbouncer"]
    assert found.describe() == "writers on target: pgbouncer -> target (PAUSED)"


def test_poolers_that_disagree_or_point_elsewhere_are_split() -> None:
    assert classify([seen("10.0.0.1"), seen("10.0.0.2", name="b")]).where == "split"
    elsewhere = classify([seen("10.0.0.9", 6000)])
    assert elsewhere.where == "split" and "pgbouncer -> 10.0.0.9:6000" in elsewhere.describe()


def test_an_unreadable_pooler_or_none_at_all_is_unknown() -> None:
    missing = pooler_endpoint(POOLER, SOURCE, TARGET, None)
    found = classify([seen("10.0.0.1"), missing])
    assert found.where == "unknown" and found.unreadable == [missing]
    assert "has no database pyairtable" in found.describe()
    assert classify([]).where == "unknown"
