"""Production's backups when it is a managed cluster (Aurora, RDS), through the RDS API."""
