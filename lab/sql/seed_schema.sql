-- PyAirtable's schema, as the lab creates it on the SOURCE cluster (the target starts empty:
-- copying the schema is the migration's job). Tables only; data follows (seed_data.sql), then
-- foreign keys and secondary indexes (seed_constraints.sql), which is faster at 10M rows.
--
-- Deliberate traps for the migration:
--   * audit_log has NO primary key: logical replication cannot replicate its UPDATE/DELETE,
--     so preflight must report it;
--   * "Record Comments" is mixed-case with a space: every statement must quote identifiers;
--   * invoice_number_seq is a standalone sequence: logical replication does not carry it;
--   * users.id is an identity column: its sequence must be advanced on the target too.

CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspaces (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    owner_id bigint NOT NULL,
    plan text NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspace_members (
    workspace_id bigint NOT NULL,
    user_id bigint NOT NULL,
    role text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE permissions (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL,
    user_id bigint NOT NULL,
    resource text NOT NULL,
    action text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bases (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tables (
    id bigserial PRIMARY KEY,
    base_id bigint NOT NULL,
    name text NOT NULL,
    fields jsonb NOT NULL DEFAULT '[]'
);

CREATE TABLE records (
    id bigserial PRIMARY KEY,
    table_id bigint NOT NULL,
    data jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE automations (
    id bigserial PRIMARY KEY,
    base_id bigint NOT NULL,
    name text NOT NULL,
    trigger jsonb NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    last_run_at timestamptz
);

CREATE TABLE audit_log (
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_id bigint,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb
);

CREATE TABLE "Record Comments" (
    id bigserial PRIMARY KEY,
    record_id bigint NOT NULL,
    author_id bigint NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE invoice_number_seq START WITH 1000;
