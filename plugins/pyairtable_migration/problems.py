"""What every configuration model shares: strict fields, and one error naming every problem.

Both the migration's configuration (config.py) and its backup section (pgbackrest/settings.py)
refuse unknown fields and report each pydantic error as `path.to.field: what is wrong (got value)`,
all at once, so a file is fixed in one pass.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# Tags of discriminated unions: pydantic puts them in an error's location, a person would not.
UNION_TAGS = ("service", "infrastructure")


class ConfigError(Exception):
    """Every problem found in a configuration, so all of them can be fixed in one pass."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_error(error: Any) -> str:
    """A pydantic error as `path.to.field: what is wrong (got value)`."""
    path = ".".join(str(part) for part in error["loc"] if part not in UNION_TAGS) or "(top level)"
    if error["type"] == "missing":
        return f"{path}: missing (required)"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown field"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"{path}: {message} (got {value!r})"
    return f"{path}: {message}"
