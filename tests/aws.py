"""Airflow connections to the moto server tests start (tests/conftest.py `moto_endpoint`)."""

from __future__ import annotations

import json


def moto_aws_connection(endpoint: str) -> str:
    """An Airflow AWS connection (as an AIRFLOW_CONN_* value) to the moto server at `endpoint`."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )
