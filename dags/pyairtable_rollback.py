"""The Airflow DAG that rolls the PyAirtable production migration back, built from include/migration.yaml.

Trigger it from the UI at any time: traffic, then services (frontend first), then the database
go back to staging; each step does nothing when there is nothing to undo.
"""

from __future__ import annotations

import os

from pyairtable_migration.config import DEFAULT_CONFIG_PATH, load_config
from pyairtable_migration.rollback import build_rollback_dag

CONFIG_PATH = os.environ.get("PYAIRTABLE_MIGRATION_CONFIG", str(DEFAULT_CONFIG_PATH))

dag = build_rollback_dag(load_config(CONFIG_PATH), config_path=CONFIG_PATH)
