"""Every SQL statement lives in include/sql/, one file per purpose, and "a user table" is defined once.

A statement in a Python string cannot be found by looking in include/sql/, escapes the
identifier-only composition checked in tests/database/test_units.py, and drifts from its twins.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pyairtable_migration.hooks.database import SQL_DIR

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "pyairtable_migration"
# The start of a statement, in capitals as the project writes SQL (a plan line saying "drop
# subscription ..." is prose); a shorter string ("INSERT INTO" naming a change) is not one.
STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|TRUNCATE|WITH\s+\w+\s+AS"
    r"|ALTER\s+(TABLE|SUBSCRIPTION|PUBLICATION|ROLE|SYSTEM|DATABASE|SEQUENCE)"
    r"|CREATE\s+(SUBSCRIPTION|PUBLICATION|INDEX|TABLE|SCHEMA|DATABASE|ROLE|SEQUENCE)"
    r"|DROP\s+(SUBSCRIPTION|PUBLICATION|INDEX|TABLE|SCHEMA|DATABASE|ROLE|SEQUENCE)"
    r"|SET\s+(TRANSACTION|SESSION|LOCAL)|GRANT|REVOKE|COPY\s+\S+\s+(FROM|TO))\b"
)
MIN_STATEMENT_LENGTH = 16
NAMED = re.compile(r"\bstatement\(\s*\"(\w+)\"")


def is_statement(value: object) -> bool:
    return isinstance(value, str) and len(value) >= MIN_STATEMENT_LENGTH and bool(STATEMENT.search(value))


def sql_in_python() -> list[str]:
    found = []
    for path in sorted(PLUGINS.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and is_statement(node.value):
                found.append(f"{path.relative_to(PLUGINS.parent)}:{node.lineno}: {str(node.value)[:60]!r}")
    return found


def test_no_sql_statement_is_written_in_python_under_plugins() -> None:
    assert sql_in_python() == [], "move these statements to include/sql/<purpose>.sql"


def test_the_check_finds_a_statement_in_a_python_string() -> None:
    flagged = [
        'q = "SELECT count(*) FROM records"',
        'q = f"DROP DATABASE IF EXISTS {name}"',
        'q = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"',
    ]
    passed = ['op = "INSERT INTO"', 'prefix = "CREATE INDEX "', 'plan = "drop subscription s on target"']
    for source in flagged + passed:
        constants = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)]
        hit = any(is_statement(value) for value in constants)
        assert hit is (source in flagged), source


def test_every_statement_named_in_python_has_its_file() -> None:
    named = {name for path in PLUGINS.rglob("*.py") for name in NAMED.findall(path.read_text())}
    assert named, "statement(...) calls not found"
    missing = sorted(name for name in named if not (SQL_DIR / f"{name}.sql").is_file())
    assert missing == []


def test_a_user_table_is_defined_once() -> None:
    """Only user_tables.sql says which relations are tables and which schemas are the system's;
    every other statement about the tables reads it as {user_tables}."""
    definition = (SQL_DIR / "user_tables.sql").read_text()
    assert "relkind IN ('r', 'p')" in definition and "left(n.nspname, 3) <> 'pg_'" in definition
    others = [
        path.name
        for path in sorted(SQL_DIR.glob("*.sql"))
        if path.name != "user_tables.sql" and "relkind IN" in path.read_text()
    ]
    assert others == []
