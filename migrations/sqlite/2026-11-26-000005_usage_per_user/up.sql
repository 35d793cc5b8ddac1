-- Usage is counted per user and window, one row per permission: what a user
-- consumed in a window counts against whatever plan they are on, across a
-- plan change or a cancel and a new subscription. The plan-wide quota is the
-- sum of the user's rows of the window; a check adds to its permission's row.
CREATE TABLE usage_counters_by_user (
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period_start BIGINT NOT NULL,
    permission   TEXT   NOT NULL,
    used         BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (user_id, period_start, permission)
) WITHOUT ROWID;

-- Every window of each active subscriber's period kind, from the events
-- (the old counters had no permission). Others get theirs when they
-- subscribe again.
INSERT INTO usage_counters_by_user (user_id, period_start, permission, used)
SELECT e.user_id,
       CASE p.usage_period
           WHEN 'lifetime' THEN 0
           WHEN 'day' THEN (e.at / 86400000000) * 86400000000
           ELSE CAST(strftime('%s', e.at / 1000000, 'unixepoch', 'start of month') AS INTEGER)
                * 1000000
       END AS window_start,
       e.permission,
       SUM(e.cost)
FROM usage_events e
JOIN subscriptions s ON s.active_user_id = e.user_id
JOIN plans p ON p.id = s.plan_id
GROUP BY e.user_id, window_start, e.permission;

DROP TABLE usage_counters;
ALTER TABLE usage_counters_by_user RENAME TO usage_counters;
