"""Monitoring engines: production's alert rules generated from the migration config, the PromQL they
share with the traffic gate, and the proof that an alert reaches its receivers through Alertmanager,
testable without Airflow. `operators/validation.py`'s MonitoringOperator adapts them.
"""
