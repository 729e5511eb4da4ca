-- Generated rows for the schema in seed_schema.sql, all from generate_series (no COPY), so any
-- scale from a few hundred to 10,000,000 records loads in one server-side pass.
-- Parameters (psycopg2 named): records, users, workspaces, audit_rows, comments, invoices.
-- Ids are 1..n because every table is fresh and filled in this one transaction.

INSERT INTO users (email, display_name, created_at)
SELECT 'user' || g || '@example.com', 'User ' || g, now() - g * interval '1 minute'
FROM generate_series(1, %(users)s) AS g;

INSERT INTO workspaces (name, owner_id, plan)
SELECT 'Workspace ' || g, 1 + mod(g - 1, %(users)s), (ARRAY['free', 'team', 'business'])[1 + mod(g, 3)]
FROM generate_series(1, %(workspaces)s) AS g;

-- Every user belongs to one workspace; every third user to a second one as well.
INSERT INTO workspace_members (workspace_id, user_id, role)
SELECT 1 + mod(u - 1, %(workspaces)s), u, CASE WHEN u <= %(workspaces)s THEN 'owner' ELSE 'editor' END
FROM generate_series(1, %(users)s) AS u
UNION ALL
SELECT 1 + mod(u, %(workspaces)s), u, 'viewer'
FROM generate_series(1, %(users)s) AS u
WHERE mod(u, 3) = 0 AND %(workspaces)s > 1;

INSERT INTO permissions (workspace_id, user_id, resource, action)
SELECT workspace_id, user_id, 'workspace:' || workspace_id,
       CASE role WHEN 'owner' THEN 'admin' WHEN 'editor' THEN 'write' ELSE 'read' END
FROM workspace_members;

INSERT INTO bases (workspace_id, name)
SELECT 1 + mod(g - 1, %(workspaces)s), 'Base ' || g
FROM generate_series(1, %(workspaces)s * 3) AS g;

INSERT INTO tables (base_id, name, fields)
SELECT 1 + mod(g - 1, %(workspaces)s * 3), (ARRAY['Tasks', 'Contacts', 'Invoices', 'Inventory'])[1 + mod(g, 4)],
       '[{"name": "name", "type": "text"}, {"name": "status", "type": "select"},
         {"name": "amount", "type": "number"}]'::jsonb
FROM generate_series(1, %(workspaces)s * 12) AS g;

INSERT INTO records (table_id, data, created_at, updated_at)
SELECT 1 + mod(g, %(workspaces)s * 12),
       jsonb_build_object(
           'name', 'Record ' || g,
           'status', (ARRAY['todo', 'doing', 'done'])[1 + mod(g, 3)],
           'amount', mod(g * 37, 100000) / 100.0,
           'tags', jsonb_build_array('tag' || mod(g, 7), 'tag' || mod(g, 11))),
       now() - mod(g, 86400) * interval '1 minute',
       now() - mod(g, 10000) * interval '1 second'
FROM generate_series(1, %(records)s) AS g;

INSERT INTO automations (base_id, name, trigger, enabled)
SELECT g, 'Notify on change ' || g, jsonb_build_object('on', 'record.updated', 'table', g), mod(g, 5) <> 0
FROM generate_series(1, %(workspaces)s * 3) AS g;

INSERT INTO audit_log (occurred_at, actor_id, action, target, detail)
SELECT now() - g * interval '1 second', 1 + mod(g, %(users)s),
       (ARRAY['record.create', 'record.update', 'member.invite', 'login'])[1 + mod(g, 4)],
       'records/' || (1 + mod(g * 13, %(records)s)), jsonb_build_object('ip', '10.0.' || mod(g, 256) || '.1')
FROM generate_series(1, %(audit_rows)s) AS g;

INSERT INTO "Record Comments" (record_id, author_id, body)
SELECT 1 + mod(g * 7, %(records)s), 1 + mod(g, %(users)s), 'Comment ' || g || ' on this record'
FROM generate_series(1, %(comments)s) AS g;

-- Advance the standalone sequence, as if invoices had been issued.
SELECT setval('invoice_number_seq', 1000 + %(invoices)s);
