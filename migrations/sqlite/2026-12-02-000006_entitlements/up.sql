-- Entitlements: a quota per permission of a plan, and a rate limit per
-- subscriber (a token bucket).
ALTER TABLE plans ADD COLUMN rate_units BIGINT;
ALTER TABLE plans ADD COLUMN rate_per_seconds BIGINT;
-- A permission's own quota lives on its row of the plan: dropping the
-- permission from the plan drops its quota.
ALTER TABLE plan_permissions ADD COLUMN limit_units BIGINT;
ALTER TABLE plan_permissions ADD COLUMN limit_period TEXT;

-- One row per (user, permission, kind of window, window start): the units of
-- that permission the user consumed in it, while a plan limits it.
CREATE TABLE permission_counters (
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission   TEXT   NOT NULL,
    period       TEXT   NOT NULL,
    period_start BIGINT NOT NULL,
    used         BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (user_id, permission, period, period_start)
) WITHOUT ROWID;

-- Each subscriber's bucket: micro-units it held at `updated_at` (micros
-- since the epoch). No row: a full bucket.
CREATE TABLE rate_buckets (
    user_id    BIGINT NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tokens     BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) WITHOUT ROWID;
