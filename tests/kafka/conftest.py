"""The Kafka tests run in make test's second pytest process (tests/parallel.py), to balance the two."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/kafka/" in str(item.path):
            item.add_marker(pytest.mark.beside)
