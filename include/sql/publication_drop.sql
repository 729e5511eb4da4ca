-- Drops a publication (no-op when absent); its subscribers must be gone first.
DROP PUBLICATION IF EXISTS {publication}
