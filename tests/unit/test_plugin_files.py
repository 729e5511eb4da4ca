"""Airflow loads every file under plugins/ as a module named by its stem: a `__main__.py` would run
its command inside every Airflow process, and a stem that names an installed module shadows it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"


def installed(name: str) -> bool:
    """A top-level module of the interpreter's own paths (not one a test session put on sys.path)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and REPO not in Path(spec.origin).parents


def test_no_plugin_file_runs_as_main_or_shadows_an_installed_module() -> None:
    problems = []
    for path in sorted(PLUGINS.rglob("*.py")):
        stem = path.stem
        if stem == "__main__":
            problems.append(f"{path.relative_to(PLUGINS)}: Airflow would run it as __main__")
        elif stem != "__init__" and (stem in sys.stdlib_module_names or installed(stem)):
            problems.append(f"{path.relative_to(PLUGINS)}: its stem names the installed module {stem!r}")
    assert problems == []
