-- Back to counters per (subscription, window start). They are left empty:
-- that schema creates a missing counter from its subscription's events in
-- the window, so nothing is lost.
DROP TABLE usage_counters;
CREATE TABLE usage_counters (
    subscription_id BIGINT NOT NULL,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription_id, period_start),
    CONSTRAINT usage_counters_subscription FOREIGN KEY (subscription_id) REFERENCES subscriptions (id) ON DELETE CASCADE,
    CONSTRAINT usage_counters_used_ok CHECK (used >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
