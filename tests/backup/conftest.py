"""The backup tests share one production lab of their own (see production.py), started once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.backup.production import Production, running_production

RECORDS = int(os.environ.get("PYAIRTABLE_BACKUP_TEST_RECORDS", "20000"))


@pytest.fixture(scope="package")
def production() -> Iterator[Production]:
    with running_production(RECORDS) as started:
        yield started
