"""Database phase tests: a dedicated pair of clusters, PgBouncer and Redis (see conftest)."""
