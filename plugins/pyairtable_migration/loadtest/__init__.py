"""The load test's engine: production driven at a set rate across every service with `hey` (a
maintained HTTP load generator, Debian's package), its answers judged per service and SLO class;
testable without Airflow. The operator in `operators/loadtest.py` adapts it.
"""
