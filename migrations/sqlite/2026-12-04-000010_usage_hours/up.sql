-- Roll-ups: the units of each user's usage events per permission and UTC
-- hour, kept by the batching writer in the transaction that writes the
-- events (so they are exact by construction). History reads them, new
-- windows' counters start from them, and they outlive the raw events that
-- retention deletes.
CREATE TABLE usage_hours (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour_start BIGINT NOT NULL,
    permission TEXT   NOT NULL,
    used       BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (user_id, hour_start, permission)
) WITHOUT ROWID;
-- The admin's history over all users reads a range of hours.
CREATE INDEX usage_hours_hour ON usage_hours (hour_start);

INSERT INTO usage_hours (user_id, hour_start, permission, used)
SELECT user_id, (at / 3600000000) * 3600000000 AS hour_start, permission, SUM(cost)
FROM usage_events
GROUP BY user_id, hour_start, permission;
