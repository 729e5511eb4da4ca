"""Schema drift between source and target. Logical replication carries rows, never DDL: a column
added on the source after the schema copy stops the target's apply worker at the first row that
carries it, and a switchover then would move writers onto a schema the application does not
expect. The catalogs are compared before the switchover and in validation; every difference is
named with its fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyairtable_migration.hooks.database import display_identifier, fetch_dicts, statement

Fact = tuple[str, str, str]  # (kind, table or sequence, column name or '')


def read_catalog(cursor: Any) -> dict[Fact, str]:
    """(kind, object, name) -> detail (a column's type, a primary key's definition)."""
    return {
        (row["kind"], row["table_name"], row["name"]): row["detail"]
        for row in fetch_dicts(cursor, statement("schema_catalog"))
    }


def drift(source: Mapping[Fact, str], target: Mapping[Fact, str], joining: str = "target") -> list[str]:
    """Every difference, worded from the side writers are about to join: `joining` lacks, has
    extra, or differs; the fix is always to make `joining` match the side writers leave."""
    leaving = "source" if joining == "target" else "target"
    problems = []
    for fact in sorted(set(source) | set(target)):
        kind, name, column = fact
        if fact in source and fact in target:
            if source[fact] != target[fact]:
                what = (
                    f"column {name}.{display_identifier(column)}" if kind == "column" else f"{kind} of {name}"
                )
                problems.append(
                    f"{what} is {source[fact]} on the {leaving} but {target[fact]} on the {joining}: "
                    f"change the {joining} to match, then let replication catch up"
                )
            continue
        if fact in source:
            problems.append(
                f"{describe(kind, name, column, source[fact])} exists on the {leaving} only: "
                + missing_fix(kind, name, column, source[fact], joining)
            )
        else:
            problems.append(
                f"{describe(kind, name, column, target[fact])} exists on the {joining} only: drop it there "
                f"or add it on the {leaving}"
            )
    return [p for p in problems if not covered(p, problems)]


def describe(kind: str, name: str, column: str, detail: str) -> str:
    if kind == "column":
        return f"column {name}.{display_identifier(column)} ({detail})"
    if kind == "primary key":
        return f"primary key {detail} of {name}"
    return f"{kind} {name}"


def missing_fix(kind: str, name: str, column: str, detail: str, joining: str) -> str:
    if kind == "column":
        return (
            f"ALTER TABLE {name} ADD COLUMN {display_identifier(column)} {detail} on the {joining} "
            "(logical replication carries no DDL)"
        )
    if kind == "table":
        return (
            f"create it on the {joining}, then ALTER SUBSCRIPTION ... REFRESH PUBLICATION so its rows "
            "are copied"
        )
    if kind == "primary key":
        return f"ALTER TABLE {name} ADD {detail} on the {joining}"
    return f"create sequence {name} on the {joining} (CREATE SEQUENCE; the switchover moves its value)"


def covered(problem: str, problems: Iterable[str]) -> bool:
    """A missing table's columns and key are not listed again beside it."""
    for other in problems:
        if other.startswith("table ") and " exists on the " in other:
            table = other.split(" ")[1]
            if problem != other and (f" {table}." in problem or f" of {table} " in problem):
                return True
    return False
