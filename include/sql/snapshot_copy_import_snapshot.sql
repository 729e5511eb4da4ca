-- A copy worker's session on the source: one read-only transaction that sees exactly what the
-- slot's exported snapshot saw, for every range the worker copies.
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SET TRANSACTION SNAPSHOT %(snapshot)s
