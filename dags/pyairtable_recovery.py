"""The Airflow DAG that restores PyAirtable production to a point in time, into a new cluster.

Built from the `backup` section of the migration's config (include/migration.yaml, or
$PYAIRTABLE_MIGRATION_CONFIG); the trigger form takes the target time.
"""

from __future__ import annotations

from pyairtable_migration.pgbackrest.settings import default_path, load_backup_settings
from pyairtable_migration.recovery import build_recovery_dag

CONFIG_PATH = default_path()

dag = build_recovery_dag(load_backup_settings(CONFIG_PATH), config_path=CONFIG_PATH)
