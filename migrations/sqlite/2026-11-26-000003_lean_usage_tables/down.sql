-- Back to a rowid usage_counters and an AUTOINCREMENT usage_events.

CREATE TABLE usage_counters_rowid (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (subscription_id, period_start)
);
INSERT INTO usage_counters_rowid (subscription_id, period_start, used)
    SELECT subscription_id, period_start, used FROM usage_counters;
DROP TABLE usage_counters;
ALTER TABLE usage_counters_rowid RENAME TO usage_counters;

CREATE TABLE usage_events_autoincrement (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id BIGINT  NOT NULL,
    permission      TEXT    NOT NULL,
    cost            BIGINT  NOT NULL CHECK (cost > 0),
    at              BIGINT  NOT NULL
);
INSERT INTO usage_events_autoincrement (id, user_id, subscription_id, permission, cost, at)
    SELECT id, user_id, subscription_id, permission, cost, at FROM usage_events;
DROP TABLE usage_events;
ALTER TABLE usage_events_autoincrement RENAME TO usage_events;
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
