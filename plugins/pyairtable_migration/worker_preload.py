"""Imported once by each Celery worker, before it forks (Celery's `imports`, set in
docker-compose.yaml and lab/airflow_celery.py): every task process is forked from the worker, so it
starts with the DAG builders, operators and hooks already loaded instead of importing them again
(about 0.9 s of CPU a task on a 2-core machine; the Kubernetes client alone is half of it).
"""

from __future__ import annotations

import importlib
import pkgutil

from pyairtable_migration import hooks, operators

PRELOADED = (
    "pyairtable_migration.builder",
    "pyairtable_migration.rollback",
    "pyairtable_migration.recovery",
    *(
        f"{package.__name__}.{module.name}"
        for package in (operators, hooks)
        for module in pkgutil.iter_modules(package.__path__)
    ),
)

for name in PRELOADED:
    importlib.import_module(name)
