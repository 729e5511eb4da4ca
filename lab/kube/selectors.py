"""Label and field selectors, read the way the API server reads them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from lab.kube.errors import bad_request

LabelPredicate = Callable[[Mapping[str, str]], bool]
ObjectPredicate = Callable[[Mapping[str, Any]], bool]

_SET_REQUIREMENT = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY_REQUIREMENT = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)\s*$")
_EXISTENCE_REQUIREMENT = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def _requirement(text: str) -> LabelPredicate:
    if match := _SET_REQUIREMENT.match(text):
        key, operator, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",") if value.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY_REQUIREMENT.match(text):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTENCE_REQUIREMENT.match(text):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {text.strip()!r}")


def parse_label_selector(text: str) -> LabelPredicate:
    """`app=web,color in (blue,green),!canary` as a predicate over a label map."""
    requirements = [_requirement(part) for part in _split_requirements(text)]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _field(obj: Mapping[str, Any], dotted_path: str) -> str | None:
    value: Any = obj
    for key in dotted_path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return None if value is None else str(value)


def parse_field_selector(text: str) -> ObjectPredicate:
    """`metadata.name=web,status.phase!=Pending` as a predicate over a whole object."""
    checks: list[tuple[str, bool, str]] = []
    for part in _split_requirements(text):
        match = _EQUALITY_REQUIREMENT.match(part)
        if not match:
            raise bad_request(f"invalid field selector: {part.strip()!r}")
        path, operator, value = match.groups()
        checks.append((path, operator != "!=", value))
    return lambda obj: all((_field(obj, path) == value) == equal for path, equal, value in checks)


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a `LabelSelector` object (matchLabels, matchExpressions) selects these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def label_selector_string(selector: Mapping[str, Any]) -> str:
    """A `LabelSelector` object written as the query-string form, as the Scale subresource shows it."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(sorted(expression.get("values") or []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": str(key)}.get(
                str(operator), f"!{key}"
            )
        )
    return ",".join(parts)
