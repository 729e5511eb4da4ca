hash_record(migration_row)
