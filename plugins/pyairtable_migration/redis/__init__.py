"""Redis engines: the switch's and the rollback's decisions over what the servers report, and the
bounded waits, testable without Airflow. The operators in `operators/redis_sync.py` adapt them.
"""
