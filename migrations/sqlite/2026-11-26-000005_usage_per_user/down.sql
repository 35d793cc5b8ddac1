-- Back to counters per (subscription, window start). They are left empty:
-- that schema creates a missing counter from its subscription's events in
-- the window, so nothing is lost.
DROP TABLE usage_counters;
CREATE TABLE usage_counters (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (subscription_id, period_start)
) WITHOUT ROWID;
