-- Foreign keys and secondary (non-unique) indexes, added after the data as pg_dump does:
-- one validating scan per key instead of a trigger per inserted row.

ALTER TABLE workspaces ADD CONSTRAINT workspaces_owner_id_fkey
    FOREIGN KEY (owner_id) REFERENCES users (id);
ALTER TABLE workspace_members ADD CONSTRAINT workspace_members_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE;
ALTER TABLE workspace_members ADD CONSTRAINT workspace_members_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE permissions ADD CONSTRAINT permissions_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE;
ALTER TABLE permissions ADD CONSTRAINT permissions_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE bases ADD CONSTRAINT bases_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE;
ALTER TABLE tables ADD CONSTRAINT tables_base_id_fkey
    FOREIGN KEY (base_id) REFERENCES bases (id) ON DELETE CASCADE;
ALTER TABLE records ADD CONSTRAINT records_table_id_fkey
    FOREIGN KEY (table_id) REFERENCES tables (id) ON DELETE CASCADE;
ALTER TABLE automations ADD CONSTRAINT automations_base_id_fkey
    FOREIGN KEY (base_id) REFERENCES bases (id) ON DELETE CASCADE;
ALTER TABLE "Record Comments" ADD CONSTRAINT "Record Comments_record_id_fkey"
    FOREIGN KEY (record_id) REFERENCES records (id) ON DELETE CASCADE;
ALTER TABLE "Record Comments" ADD CONSTRAINT "Record Comments_author_id_fkey"
    FOREIGN KEY (author_id) REFERENCES users (id);

CREATE INDEX workspace_members_user_id_idx ON workspace_members (user_id);
CREATE INDEX permissions_user_id_idx ON permissions (user_id);
CREATE INDEX bases_workspace_id_idx ON bases (workspace_id);
CREATE INDEX tables_base_id_idx ON tables (base_id);
CREATE INDEX records_table_id_idx ON records (table_id);
CREATE INDEX records_updated_at_idx ON records (updated_at);
CREATE INDEX automations_base_id_idx ON automations (base_id);
CREATE INDEX audit_log_occurred_at_idx ON audit_log (occurred_at);
CREATE INDEX "Record Comments_record_id_idx" ON "Record Comments" (record_id);

-- What pg_dump carries with a key besides the key itself, which the schema copy must carry too
-- (also when it defers the key to after the data).
COMMENT ON CONSTRAINT records_pkey ON records IS 'one row per record';
ALTER TABLE records CLUSTER ON records_pkey;
