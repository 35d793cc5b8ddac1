-- Roll-ups: the units of each user's usage events per permission and UTC
-- hour, kept by the batching writer in the transaction that writes the
-- events (so they are exact by construction). History reads them, new
-- windows' counters start from them, and they outlive the raw events that
-- retention deletes.
CREATE TABLE usage_hours (
    user_id    BIGINT      NOT NULL,
    hour_start BIGINT      NOT NULL,
    permission VARCHAR(64) NOT NULL,
    used       BIGINT      NOT NULL,
    PRIMARY KEY (user_id, hour_start, permission),
    -- The admin's history over all users reads a range of hours.
    KEY usage_hours_hour (hour_start),
    CONSTRAINT usage_hours_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT usage_hours_used_ok CHECK (used >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO usage_hours (user_id, hour_start, permission, used)
SELECT user_id, (at DIV 3600000000) * 3600000000 AS hour_start, permission, SUM(cost)
FROM usage_events
GROUP BY user_id, hour_start, permission;
