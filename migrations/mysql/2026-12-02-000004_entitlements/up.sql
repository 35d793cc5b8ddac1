-- Entitlements: a quota per permission of a plan, and a rate limit per
-- subscriber (a token bucket).
ALTER TABLE plans ADD COLUMN rate_units BIGINT NULL, ADD COLUMN rate_per_seconds BIGINT NULL;
-- A permission's own quota lives on its row of the plan: dropping the
-- permission from the plan drops its quota.
ALTER TABLE plan_permissions ADD COLUMN limit_units BIGINT NULL,
    ADD COLUMN limit_period VARCHAR(16) NULL;

-- One row per (user, permission, kind of window, window start): the units of
-- that permission the user consumed in it, while a plan limits it.
CREATE TABLE permission_counters (
    user_id      BIGINT      NOT NULL,
    permission   VARCHAR(64) NOT NULL,
    period       VARCHAR(16) NOT NULL,
    period_start BIGINT      NOT NULL,
    used         BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, permission, period, period_start),
    CONSTRAINT permission_counters_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT permission_counters_used_ok CHECK (used >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Each subscriber's bucket: micro-units it held at `updated_at` (micros
-- since the epoch). No row: a full bucket.
CREATE TABLE rate_buckets (
    user_id    BIGINT NOT NULL PRIMARY KEY,
    tokens     BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT rate_buckets_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
