-- A copy worker's session on the target behaves as a subscription's apply worker: foreign keys
-- and user triggers do not fire (ranges arrive in any order; the source checked them already).
SET session_replication_role = replica
