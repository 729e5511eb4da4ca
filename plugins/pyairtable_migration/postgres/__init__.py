"""PostgreSQL engines: the domain logic of the database phase and the switchover, over the hooks.

Nothing here needs an Airflow task context: each engine takes hooks (or cursors) and a logger,
returns what it did, and raises `MigrationError` with a message the on-call engineer can act on.
The operators in `operators/` adapt them to Airflow (templating, plan lines, deferral, XCom).
"""
