-- A publication by name, with what it publishes.
SELECT p.pubname, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
       pg_get_userbyid(p.pubowner) AS owner
FROM pg_publication AS p
WHERE p.pubname = %(name)s
