-- Tollgate schema, SQLite. Timestamps are microseconds since the Unix epoch (UTC).
-- TEXT compares byte for byte (BINARY collation), so 'Pro' <> 'pro'.

CREATE TABLE permissions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE plans (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL DEFAULT '',
    usage_limit  BIGINT  NULL CHECK (usage_limit IS NULL OR usage_limit >= 0),
    usage_period TEXT    NOT NULL CHECK (usage_period IN ('lifetime', 'day', 'month')),
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

-- A plan's permissions, in the order given.
CREATE TABLE plan_permissions (
    plan_id       BIGINT  NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    permission_id BIGINT  NOT NULL REFERENCES permissions (id) ON DELETE RESTRICT,
    position      INTEGER NOT NULL,
    PRIMARY KEY (plan_id, permission_id)
);
CREATE INDEX plan_permissions_permission ON plan_permissions (permission_id);

CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    status     TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX users_role_status ON users (role, status);

-- Only the SHA-256 of a key is stored.
CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL DEFAULT '',
    prefix     TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NULL,
    revoked_at BIGINT  NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- active_user_id = user_id while active, NULL once canceled: the unique
-- constraint on it allows one active subscription per user.
CREATE TABLE subscriptions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_id        BIGINT  NOT NULL REFERENCES plans (id) ON DELETE RESTRICT,
    status         TEXT    NOT NULL CHECK (status IN ('active', 'canceled')),
    active_user_id BIGINT  NULL UNIQUE,
    started_at     BIGINT  NOT NULL,
    canceled_at    BIGINT  NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id);
CREATE INDEX subscriptions_plan_status ON subscriptions (plan_id, status);

-- Units consumed per subscription and period window (period_start in
-- microseconds; 0 for lifetime).
CREATE TABLE usage_counters (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (subscription_id, period_start)
);

-- One row per granted check. The permission is kept by name, as checked.
CREATE TABLE usage_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id BIGINT  NOT NULL,
    permission      TEXT    NOT NULL,
    cost            BIGINT  NOT NULL CHECK (cost > 0),
    at              BIGINT  NOT NULL
);
-- One index serves the user's event list and the window sums (which also
-- filter on subscription_id): every index costs each granted check a write.
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
