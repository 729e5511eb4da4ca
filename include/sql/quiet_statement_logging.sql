-- This session's failing statements are not written to the server log: CREATE SUBSCRIPTION
-- carries a connection string with a password.
SET log_min_error_statement = panic
