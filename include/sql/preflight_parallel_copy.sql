-- Preflight with `copy: parallel` (PostgreSQL 15+): may the target's role set
-- session_replication_role, which the copy's target sessions set to load ranges in any order?
SELECT has_parameter_privilege('session_replication_role', 'SET') AS may_set
