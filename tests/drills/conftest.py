"""The drills run on the database and traffic tests' own fixtures, imported here so every drill
module sees them: the database pair (package scope, so the drills start one of their own) with
the real configuration, and the private traffic lab with production deployed."""

from __future__ import annotations

from tests.database.conftest import config, pair  # noqa: F401
from tests.traffic.test_cutover_lab import traffic_lab  # noqa: F401
