-- Errors counted for a subscription since its statistics were last reset.
SELECT apply_error_count, sync_error_count
FROM pg_stat_subscription_stats
WHERE subname = %(name)s
