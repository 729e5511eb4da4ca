"""The PyAirtable production migration, built from include/migration.yaml.

A bad configuration makes this import fail with every problem listed, so it shows as an
import error in the Airflow UI instead of a half-built DAG.
"""

from __future__ import annotations

import os

from pyairtable_migration.builder import build_migration_dag
from pyairtable_migration.config import DEFAULT_CONFIG_PATH, load_config

CONFIG_PATH = os.environ.get("PYAIRTABLE_MIGRATION_CONFIG", str(DEFAULT_CONFIG_PATH))

dag = build_migration_dag(load_config(CONFIG_PATH), config_path=CONFIG_PATH)
