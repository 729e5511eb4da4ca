-- Validation sessions: both sides render rows to text identically (for tables hashed as text),
-- only read, leave the cores to the validation's own parallel scans, and aggregate by hashing
-- (a sort would carry whole rows).
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SET default_transaction_read_only = on;
SET statement_timeout = 0;
SET max_parallel_workers_per_gather = 0;
SET enable_sort = off
