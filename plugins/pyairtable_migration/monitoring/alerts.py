"""Production's alert rules, generated from the migration config, as a Prometheus rules file.

    python -m pyairtable_migration.monitoring.alerts include/migration.yaml > rules.yml

Three kinds, so the alerts keep watching what the cutover was judged by once the migration is over:
production's error ratio above the traffic gate's limit, p99 latency per SLO class above that class's
budget, and a production scrape target down. The expressions are the gate's own query templates
(`traffic.gate.error_ratio_query`, `p99_query`) over the gate's window, rendered as the gate renders
them, and `for` is the gate's breach time (sample_seconds x consecutive_breaches): an alert fires on
what would trip the gate. `validation.monitoring` checks Prometheus has every rule loaded, by `key`,
and as the config gives it now: each rule carries the digest of its expression, `for` and labels
(annotation `config_digest`), so a rules file written before a threshold changed is named, not passed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pyairtable_migration.config import DEFAULT_CONFIG_PATH, MigrationConfig, load_config
from pyairtable_migration.monitoring.promql import render_query, selector
from pyairtable_migration.problems import ConfigError

RULE_GROUP = "pyairtable-production"
ERROR_RATIO_ALERT = "PyAirtableProductionErrorRatioHigh"
LATENCY_ALERT = "PyAirtableProductionLatencyHigh"
TARGET_DOWN_ALERT = "PyAirtableProductionTargetDown"
DIGEST_ANNOTATION = "config_digest"
RULES_HINT = (
    "write them with `python -m pyairtable_migration.monitoring.alerts <config>`, list the file in "
    "Prometheus's rule_files, reload Prometheus"
)


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; `labels` are those that tell rules of one alert apart (slo_class)."""

    alert: str
    expr: str
    for_seconds: float
    severity: str
    summary: str
    description: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return rule_key(self.alert, self.labels)

    @property
    def digest(self) -> str:
        """What the rule evaluates and how it routes (expression, `for`, labels), in 16 hex digits."""
        evaluated = {
            "expr": self.expr,
            "for": duration(self.for_seconds),
            "labels": {**self.labels, "severity": self.severity},
        }
        return hashlib.sha256(json.dumps(evaluated, sort_keys=True).encode()).hexdigest()[:16]

    def document(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": duration(self.for_seconds),
            "labels": {**self.labels, "severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                DIGEST_ANNOTATION: self.digest,
            },
        }


def rule_key(alert: str, labels: Mapping[str, str]) -> str:
    """How a rule is named in checks and messages: its alert and its labels but severity, e.g.
    `PyAirtableProductionLatencyHigh{slo_class="ai"}` (severity is routing, not identity)."""
    identity = {key: value for key, value in labels.items() if key != "severity"}
    if not identity:
        return alert
    return alert + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(identity.items())) + "}"


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `30s`, anything finer in milliseconds."""
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def number(value: float) -> str:
    """A PromQL number literal without float noise (0.01, 2, 0.4)."""
    return format(float(value), ".15g")


def alert_rules(config: MigrationConfig) -> list[AlertRule]:
    """Production's rules, in the order the rules file lists them."""
    gate = config.traffic.gate
    labels = config.environments.production.prometheus_labels
    breach_seconds = gate.sample_seconds * gate.consecutive_breaches
    rules = [
        AlertRule(
            ERROR_RATIO_ALERT,
            f"({render_query(gate.error_ratio_query, labels, gate.window)}) > {number(gate.max_error_ratio)}",
            breach_seconds,
            "critical",
            "Production's error ratio is above the traffic gate's limit",
            f"5xx share of production's requests over {gate.window}: {{{{ $value | humanizePercentage }}}} "
            f"(limit {gate.max_error_ratio:.2%})",
        )
    ]
    for slo_class, budget_ms in config.slo_classes.items():
        services = sorted(name for name, node in config.deployable.items() if node.slo_class == slo_class)
        if not services:
            continue
        query = render_query(gate.p99_query, labels, gate.window, services)
        rules.append(
            AlertRule(
                LATENCY_ALERT,
                f"({query}) > {number(budget_ms / 1000)}",
                breach_seconds,
                "warning",
                f"Production's p99 latency of the {slo_class} services is above their budget",
                f"p99 of {', '.join(services)} over {gate.window}: {{{{ $value | humanizeDuration }}}} "
                f"(budget {budget_ms} ms)",
                {"slo_class": slo_class},
            )
        )
    rules.append(
        AlertRule(
            TARGET_DOWN_ALERT,
            f"up{{{selector(labels)}}} == 0",
            breach_seconds,
            "critical",
            "A production scrape target is down",
            "{{ $labels.instance }} (job {{ $labels.job }}) does not answer Prometheus's scrape",
        )
    )
    return rules


def expected_rules(config: MigrationConfig) -> dict[str, str]:
    """The rules the config gives, key -> digest: what `validation.monitoring` expects loaded."""
    return {rule.key: rule.digest for rule in alert_rules(config)}


def rules_document(config: MigrationConfig) -> dict[str, Any]:
    """The rules file's content: one group with every rule."""
    return {"groups": [{"name": RULE_GROUP, "rules": [rule.document() for rule in alert_rules(config)]}]}


def rules_yaml(config: MigrationConfig, source: str) -> str:
    """The rules file as Prometheus reads it, saying where it came from."""
    header = f"# Production's alert rules, generated from {source} by {__spec__.name}.\n"
    # Wide lines: a folded expression would still parse, but reads badly.
    return header + yaml.safe_dump(rules_document(config), sort_keys=False, width=10_000)


def loaded_rules(groups: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The alerting rules Prometheus reports (its /api/v1/rules groups), by key."""
    return {
        rule_key(rule["name"], rule.get("labels") or {}): rule
        for group in groups
        for rule in group.get("rules") or []
        if rule.get("type") == "alerting"
    }


def loaded_rule_problems(expected: Mapping[str, str], groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """What is wrong with the expected rules (key -> digest) as Prometheus reports them: every one
    not loaded, in one line; every one loaded from another config (its digest differs: written
    before the config changed), in one line; and each loaded one not healthy (its last evaluation
    failed, or it never ran)."""
    loaded = loaded_rules(groups)
    missing = [key for key in expected if key not in loaded]
    stale = [
        key
        for key, digest in expected.items()
        if key in loaded and (loaded[key].get("annotations") or {}).get(DIGEST_ANNOTATION) != digest
    ]
    problems = []
    if missing:
        problems.append(f"alert rules not loaded in Prometheus: {', '.join(missing)} ({RULES_HINT})")
    if stale:
        problems.append(
            f"alert rules loaded in Prometheus from another config (their expression, `for` or labels "
            f"are not what the migration config gives now): {', '.join(stale)} ({RULES_HINT})"
        )
    for key in expected:
        rule = loaded.get(key)
        if rule is not None and rule.get("health") != "ok":
            reason = rule.get("lastError") or "not evaluated yet"
            problems.append(f"alert rule {key}: health {rule.get('health')} ({reason})")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m pyairtable_migration.monitoring.alerts [CONFIG] > rules.yml", file=sys.stderr)
        return 2
    path = argv[0] if argv else str(DEFAULT_CONFIG_PATH)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.write(rules_yaml(config, path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
