-- API keys, their Kafka-style ACL entries, the audit log of admin
-- mutations, and the binding of idempotent producer ids to the key that
-- asked for them. See docs/security.md.

-- One row per API key. A key is silt_<id>_<secret>; only a SHA-256 of the
-- whole key is kept. Keys are never deleted, only revoked, so that audit
-- rows and producer bindings keep pointing at them.
CREATE TABLE api_keys (
    id                    text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    name                  text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash           bytea       NOT NULL CHECK (length(secret_hash) = 32),
    admin                 boolean     NOT NULL DEFAULT false,
    -- per-key quotas over the whole cluster; NULL is unlimited
    produce_bytes_per_sec bigint      CHECK (produce_bytes_per_sec > 0),
    fetch_bytes_per_sec   bigint      CHECK (fetch_bytes_per_sec > 0),
    requests_per_sec      double precision CHECK (requests_per_sec > 0),
    expires_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    last_used_at          timestamptz,
    revoked_at            timestamptz
);
-- A live key's name is its principal (what a client certificate names).
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- ACL entries: resource type x pattern x operations, as in Kafka (allow
-- entries only).
CREATE TABLE api_key_acls (
    key_id         text    NOT NULL REFERENCES api_keys (id),
    resource_type  text    NOT NULL CHECK (resource_type IN ('topic', 'group', 'cluster')),
    pattern_type   text    NOT NULL CHECK (pattern_type IN ('literal', 'prefix')),
    resource_name  text    NOT NULL,
    operations     text[]  NOT NULL CHECK (cardinality(operations) > 0
        AND operations <@ ARRAY['produce', 'consume', 'describe', 'create', 'alter', 'delete']),
    PRIMARY KEY (key_id, resource_type, pattern_type, resource_name)
);

-- Admin mutations: who (key id and name), what (action and resource),
-- when, and from where.
CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    key_id         text,
    key_name       text        NOT NULL,
    action         text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_name  text        NOT NULL,
    source         text        NOT NULL,
    forwarded_for  text        NOT NULL DEFAULT '',
    agent_id       text        NOT NULL DEFAULT '',
    details        jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);

-- An idempotent producer id issued to a key belongs to that key: another
-- key may not produce with it. NULL: issued without authentication.
ALTER TABLE producers ADD COLUMN key_id text REFERENCES api_keys (id);
