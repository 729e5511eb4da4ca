"""PromQL shared by the traffic gate, the validation checks and the alert rules: one rendering of the
config's query templates, so an alert rule measures exactly what the gate measures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from string import Template


def selector(labels: Mapping[str, str], services: Sequence[str] = ()) -> str:
    """`key="value",...` for an environment's labels; with services, also `service=~"a|b"`.

    Service names need no escaping there: the config allows only lowercase letters, digits and '-'.
    """
    matchers = [f'{key}="{value}"' for key, value in sorted(labels.items())]
    if services:
        matchers.append(f'service=~"{"|".join(sorted(services))}"')
    return ",".join(matchers)


def render_query(template: str, labels: Mapping[str, str], window: str, services: Sequence[str] = ()) -> str:
    """Fill `$selector` with the environment's labels (and services) and `$window` with the range."""
    return Template(template).substitute(selector=selector(labels, services), window=window)
