hashtext(migration_row::text)
