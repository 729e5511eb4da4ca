"""Airflow imports every file under plugins/ that plugins/.airflowignore does not exclude as a module
named by its stem, in every process and again in every task process: only the plugin itself is
loaded that way (the DAG files import the rest as the `pyairtable_migration` package). A file that
is loaded must not be a `__main__.py` (its command would run inside Airflow) nor shadow an
installed module by its stem."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
PLUGIN_FILE = "pyairtable_migration/reports_plugin.py"

# Airflow's own loader on the project's plugins folder, in a process of its own.
LOAD = """
import json, sys
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
def here(module):
    return (getattr(module, "__file__", "") or "").startswith(sys.argv[1])
ours = {p.name: sys.modules[p.__module__] for p in plugins if here(sys.modules[p.__module__])}
stems = [name for name, module in list(sys.modules.items()) if "." not in name and here(module)]
print(json.dumps({
    "plugins": {name: module.__file__ for name, module in ours.items()},
    "errors": errors,
    "stems_loaded": sorted(stems),
    "fastapi_loaded": "fastapi" in sys.modules,
}))
"""


def installed(name: str) -> bool:
    """A top-level module of the interpreter's own paths (not one a test session put on sys.path)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and REPO not in Path(spec.origin).parents


def test_airflow_loads_only_the_light_plugin_file_from_the_plugins_folder() -> None:
    environment = {
        **os.environ,
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(PLUGINS)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {}
    assert loaded["plugins"] == {"pyairtable_migration_reports": str(PLUGINS / PLUGIN_FILE)}
    # Only the plugin's file became a module of its own.
    assert loaded["stems_loaded"] == ["reports_plugin"], loaded["stems_loaded"]
    # Nor does loading it import the app it mounts (FastAPI, Airflow's api-server modules).
    assert loaded["fastapi_loaded"] is False
    for path in map(Path, loaded["plugins"].values()):
        assert path.stem != "__main__", f"{path}: Airflow would run it as __main__"
        assert path.stem not in sys.stdlib_module_names and not installed(path.stem), (
            f"{path}: its stem names the installed module {path.stem!r}"
        )
