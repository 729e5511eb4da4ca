-- Empty the target's tables before a fresh initial copy (their rows came from an abandoned copy).
TRUNCATE {tables}
