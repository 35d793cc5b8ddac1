-- Usage is counted per user and window, one row per permission: what a user
-- consumed in a window counts against whatever plan they are on, across a
-- plan change or a cancel and a new subscription. The plan-wide quota is the
-- sum of the user's rows of the window; a check adds to its permission's row.
CREATE TABLE usage_counters_by_user (
    user_id      BIGINT      NOT NULL,
    period_start BIGINT      NOT NULL,
    permission   VARCHAR(64) NOT NULL,
    used         BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period_start, permission),
    CONSTRAINT usage_counters_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT usage_counters_by_user_used_ok CHECK (used >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every window of each active subscriber's period kind, from the events
-- (the old counters had no permission). Others get theirs when they
-- subscribe again. Months are computed on DATETIMEs without a time zone.
INSERT INTO usage_counters_by_user (user_id, period_start, permission, used)
SELECT e.user_id,
       CASE p.usage_period
           WHEN 'lifetime' THEN 0
           WHEN 'day' THEN (e.at DIV 86400000000) * 86400000000
           ELSE TIMESTAMPDIFF(
               MICROSECOND,
               '1970-01-01 00:00:00',
               DATE_FORMAT(
                   TIMESTAMPADD(SECOND, e.at DIV 1000000, '1970-01-01 00:00:00'),
                   '%Y-%m-01 00:00:00'))
       END AS window_start,
       e.permission,
       SUM(e.cost)
FROM usage_events e
JOIN subscriptions s ON s.active_user_id = e.user_id
JOIN plans p ON p.id = s.plan_id
GROUP BY e.user_id, window_start, e.permission;

DROP TABLE usage_counters;
RENAME TABLE usage_counters_by_user TO usage_counters;
