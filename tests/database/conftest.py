"""The database tests run on a pair of clusters (plus PgBouncer, two Redis servers and their write
endpoint) of their own, started once for this package and stopped after it, so repointing the
pooler, dropping the target and replicating both ways never disturbs other modules using the shared
lab.

Each scenario module begins with `pair.reset()` (source primary behind PgBouncer, target empty, no
publication, subscription or slot) and ends with it, leaving the pair as it found it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pyairtable_migration.config import MigrationConfig, load_config
from tests.database.pair import Pair, running_pair

# A quarter of a million records, three of the validator's 100,000-row chunks (and 50,000 Redis
# keys): it must find one changed, one missing and one extra among them. Throughput at a million
# and more is the benchmarks' business (make bench).
RECORDS = int(os.environ.get("PYAIRTABLE_DB_TEST_RECORDS", "250000"))


@pytest.fixture(scope="package")
def pair() -> Iterator[Pair]:
    with running_pair(RECORDS) as started:
        yield started


@pytest.fixture(scope="package")
def config() -> MigrationConfig:
    return load_config()
