-- The tables a publication lists by name (FOR TABLE; a FOR ALL TABLES publication lists none).
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_publication_rel AS pr
JOIN pg_class AS c ON c.oid = pr.prrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE pr.prpubid = (SELECT p.oid FROM pg_publication AS p WHERE p.pubname = %(name)s)
