"""The configuration model: the real file loads, and every kind of bad input is named."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.synthetic_graph import REAL_CONFIG, real_document, service, with_services
from pyairtable_migration.config import ConfigError, InfrastructureNode, load_config, parse_config
from pyairtable_migration.recovery import RECOVERY_DAG_ID

REPO_ROOT = Path(__file__).resolve().parents[2]

# The PyAirtable architecture, as its own documentation states it.
ARCHITECTURE = {
    "postgres": ("infrastructure", []),
    "redis": ("infrastructure", []),
    "kafka": ("infrastructure", []),
    "istio": ("infrastructure", []),
    "api-gateway": ("core", ["postgres", "redis"]),
    "auth-service": ("core", ["postgres", "redis"]),
    "user-service": ("platform", ["postgres", "auth-service"]),
    "workspace-service": ("platform", ["postgres", "user-service"]),
    "permission-service": ("platform", ["postgres"]),
    "airtable-gateway": ("domain", ["redis", "user-service"]),
    "llm-orchestrator": ("domain", ["redis", "mcp-server"]),
    "mcp-server": ("domain", ["airtable-gateway"]),
    "automation-service": ("domain", ["kafka", "postgres"]),
    "web-bff": ("frontend", ["api-gateway"]),
    "mobile-bff": ("frontend", ["api-gateway"]),
    "auth-frontend": ("frontend", ["auth-service"]),
}


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(document, sort_keys=False))
    return caught.value.problems


def changed(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(real_document())
    edit(document)
    return document


def test_real_config_describes_the_architecture() -> None:
    config = load_config(REAL_CONFIG)
    assert {name: (node.tier, node.depends_on) for name, node in config.services.items()} == ARCHITECTURE
    infrastructure = {n for n, node in config.services.items() if isinstance(node, InfrastructureNode)}
    assert infrastructure == {"postgres", "redis", "kafka", "istio"}
    assert config.traffic.steps == [10, 25, 50, 75, 100]
    assert {node.slo_class for node in config.deployable.values()} <= set(config.slo_classes)


def test_the_shipped_config_describes_production_not_the_lab() -> None:
    """The lab's gaps and addresses live in its overlay (lab/migration_config.py), never here."""
    config = load_config(REAL_CONFIG)
    text = REAL_CONFIG.read_text()
    assert [word for word in ("127.0.0.1", "localhost", ":19090") if word in text] == []
    infrastructure = {n: node for n, node in config.services.items() if isinstance(node, InfrastructureNode)}
    assert [name for name, node in infrastructure.items() if node.external] == []
    assert infrastructure["kafka"].conn_id and infrastructure["istio"].url


def test_topological_order_puts_dependencies_first() -> None:
    config = load_config(REAL_CONFIG)
    order = config.topological_order()
    for name, node in config.services.items():
        assert all(order.index(dep) < order.index(name) for dep in node.depends_on), name


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["services"]["web-bff"].update(depends_on=["api-gateway", "api-gatewy"]),
            "services.web-bff.depends_on: unknown dependency 'api-gatewy'",
        ),
        (
            lambda d: d["services"]["auth-service"].update(tier="middle"),
            "services.auth-service.tier: unknown tier 'middle'",
        ),
        (
            lambda d: d["services"]["mcp-server"].update(slo_class="instant"),
            "services.mcp-server.slo_class: unknown SLO class 'instant' (known: health, auth, business, ai)",
        ),
        (
            lambda d: d["traffic"].update(steps=[10, 50, 25, 100]),
            "traffic.steps: weights must be strictly increasing, got 50 -> 25",
        ),
        (
            lambda d: d["traffic"].update(steps=[10, 10, 100]),
            "traffic.steps: weights must be strictly increasing, got 10 -> 10",
        ),
        (lambda d: d["traffic"].update(steps=[0, 50, 100]), "weights must be within 1..100, got [0]"),
        (lambda d: d["traffic"].update(steps=[50, 150]), "weights must be within 1..100, got [150]"),
        (lambda d: d["traffic"].update(steps=[10, 50]), "the last weight must be 100, got 50"),
        (lambda d: d["traffic"].update(steps=[]), "traffic.steps: must list at least one weight"),
        (
            lambda d: d["traffic"].update(bake_seconds=0),
            "traffic.bake_seconds: Input should be greater than 0 (got 0)",
        ),
        (
            lambda d: d["database"].update(lag_timeout_seconds=-5),
            "database.lag_timeout_seconds: Input should be greater than 0 (got -5)",
        ),
        (
            lambda d: d["dns"].update(cutover_ttl_seconds=0),
            "dns.cutover_ttl_seconds: Input should be greater than 0 (got 0)",
        ),
        (lambda d: d["database"].pop("source_conn_id"), "database.source_conn_id: missing (required)"),
        (lambda d: d["redis"].update(target_conn_id=""), "redis.target_conn_id: String should have at least"),
        (
            lambda d: d["environments"]["production"].pop("kubernetes_conn_id"),
            "environments.production.kubernetes_conn_id: missing (required)",
        ),
        (
            lambda d: d["traffic"]["gate"].pop("prometheus_conn_id"),
            "traffic.gate.prometheus_conn_id: missing (required)",
        ),
        (lambda d: d["services"]["web-bff"].update(replicas=0), "services.web-bff.replicas: Input should be"),
        (
            lambda d: d["services"]["web-bff"].update(dependson=[]),
            "services.web-bff.dependson: unknown field",
        ),
        (lambda d: d["services"]["web-bff"].pop("image"), "services.web-bff.image: missing (required)"),
        (
            lambda d: d["services"].update({"Web_BFF": service("frontend", [])}),
            "services.Web_BFF: name must be lowercase letters, digits and '-'",
        ),
        (
            lambda d: d["services"]["postgres"].update(depends_on=["web-bff"]),
            "services.postgres.depends_on: 'web-bff' is in tier 'frontend', after this service's tier",
        ),
        (
            lambda d: d["traffic"].update(approval_before=[90]),
            "approval_before names weights that are not steps: [90]",
        ),
        (
            lambda d: d["dns"].update(records=["api.elsewhere.org."]),
            "record(s) outside hosted zone pyairtable.example.com.: api.elsewhere.org.",
        ),
    ],
)
def test_bad_config_is_named(edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    problems = problems_of(changed(edit))
    assert any(expected in problem for problem in problems), problems


def test_cycle_is_printed_as_a_path() -> None:
    document = with_services(
        {
            "a": service("core", ["c"]),
            "b": service("core", ["a"]),
            "c": service("core", ["b"]),
            "d": service("core", []),
        }
    )
    assert problems_of(document) == ["services: dependency cycle: a -> c -> b -> a"]


def test_self_dependency_is_named() -> None:
    problems = problems_of(with_services({"a": service("core", ["a"])}))
    assert "services.a.depends_on: 'a' depends on itself" in problems


def test_duplicate_service_names_are_refused_with_lines() -> None:
    text = REAL_CONFIG.read_text().replace(
        "  auth-service:\n", "  api-gateway:\n    tier: core\n    image: x:1\n  auth-service:\n", 1
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert any("duplicate key 'api-gateway'" in p and "first at line" in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_every_problem_is_reported_at_once() -> None:
    def many(d: dict[str, Any]) -> None:
        d["services"]["web-bff"]["depends_on"] = ["nowhere"]
        d["services"]["api-gateway"]["slo_class"] = "instant"
        d["services"]["user-service"]["depends_on"] = ["workspace-service"]  # a cycle
        d["traffic"]["steps"] = [50, 25]
        d["database"].pop("target_conn_id")
        d["redis"]["ttl_tolerance_seconds"] = 0

    problems = problems_of(changed(many))
    expected = [
        "services.web-bff.depends_on: unknown dependency 'nowhere'",
        "services.api-gateway.slo_class: unknown SLO class 'instant'",
        "services: dependency cycle: user-service -> workspace-service -> user-service",
        "traffic.steps: weights must be strictly increasing, got 50 -> 25; the last weight must be 100",
        "database.target_conn_id: missing (required)",
        "redis.ttl_tolerance_seconds: Input should be greater than 0",
    ]
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)
    assert len(problems) == len(expected)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'plugins'}:{REPO_ROOT}", **(env or {})},
        check=False,
    )


def test_check_command(tmp_path: Path) -> None:
    good = _run("-m", "pyairtable_migration.config", "check", str(REAL_CONFIG))
    assert good.returncode == 0, good.stderr
    assert "OK (16 nodes, 12 deployable services" in good.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed(lambda d: d["services"]["web-bff"].update(tier="top"))))
    result = _run("-m", "pyairtable_migration.config", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad} has 1 problem(s):" in result.stderr
    assert "services.web-bff.tier: unknown tier 'top'" in result.stderr


def test_bad_config_fails_the_dag_import_with_the_same_text(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed(lambda d: d["services"]["web-bff"].update(depends_on=["ghost"]))))
    check = _run("-m", "pyairtable_migration.config", "check", str(bad))

    from airflow.dag_processing.dagbag import DagBag

    os.environ["PYAIRTABLE_MIGRATION_CONFIG"] = str(bad)
    try:
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    finally:
        del os.environ["PYAIRTABLE_MIGRATION_CONFIG"]
    assert set(bag.dags) == {RECOVERY_DAG_ID}  # it reads the backup settings, not this file
    assert len(bag.import_errors) == 2  # the migration DAG and the rollback DAG
    for error in bag.import_errors.values():
        assert check.stderr.strip() in error
        assert "services.web-bff.depends_on: unknown dependency 'ghost'" in error
