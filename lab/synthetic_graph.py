"""Generated service graphs of any size, for tests and benchmarks of the DAG builder."""

from __future__ import annotations

import copy
import random
from typing import Any

import yaml

from lab.settings import REPO_ROOT

REAL_CONFIG = REPO_ROOT / "include" / "migration.yaml"


def real_document() -> dict[str, Any]:
    """The project's configuration as a plain document, to vary one part at a time."""
    return yaml.safe_load(REAL_CONFIG.read_text())


def with_services(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The real configuration with its service graph replaced."""
    document = copy.deepcopy(real_document())
    document["services"] = services
    return document


def service(tier: str, depends_on: list[str], slo_class: str = "business") -> dict[str, Any]:
    return {
        "tier": tier,
        "depends_on": depends_on,
        "image": "ghcr.io/pyairtable/generated:1.0.0",
        "replicas": 2,
        "health_path": "/health",
        "slo_class": slo_class,
    }


def random_acyclic_services(count: int, seed: int, max_dependencies: int = 3) -> dict[str, dict[str, Any]]:
    """`count` services, each depending only on earlier ones, tiers never decreasing along an edge."""
    rng = random.Random(seed)
    tiers = real_document()["tiers"]
    services: dict[str, dict[str, Any]] = {}
    tier_of: dict[str, int] = {}
    for index in range(count):
        name = f"svc-{index:04d}"
        earlier = list(services)
        dependencies = rng.sample(earlier, k=min(len(earlier), rng.randint(0, max_dependencies)))
        tier = max((tier_of[d] for d in dependencies), default=0) + rng.randint(0, 1)
        tier_of[name] = min(tier, len(tiers) - 1)
        services[name] = service(tiers[tier_of[name]], dependencies)
    return services
