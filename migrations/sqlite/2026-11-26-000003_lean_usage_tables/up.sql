-- The two tables every granted check writes, made cheaper to write:
-- usage_counters becomes ONE B-tree keyed by its primary key (WITHOUT ROWID)
-- instead of a rowid table plus a separate primary-key index, and
-- usage_events drops AUTOINCREMENT, which updated sqlite_sequence on every
-- insert. Its ids still only grow: a new row gets max(id) + 1, so an id can
-- come back only after the newest events were deleted with their user, whose
-- event list (and any cursor into it) is gone too.

CREATE TABLE usage_counters_lean (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (subscription_id, period_start)
) WITHOUT ROWID;
INSERT INTO usage_counters_lean (subscription_id, period_start, used)
    SELECT subscription_id, period_start, used FROM usage_counters;
DROP TABLE usage_counters;
ALTER TABLE usage_counters_lean RENAME TO usage_counters;

CREATE TABLE usage_events_lean (
    id              INTEGER PRIMARY KEY,
    user_id         BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subscription_id BIGINT  NOT NULL,
    permission      TEXT    NOT NULL,
    cost            BIGINT  NOT NULL CHECK (cost > 0),
    at              BIGINT  NOT NULL
);
INSERT INTO usage_events_lean (id, user_id, subscription_id, permission, cost, at)
    SELECT id, user_id, subscription_id, permission, cost, at FROM usage_events;
DROP TABLE usage_events;
ALTER TABLE usage_events_lean RENAME TO usage_events;
-- One index serves the user's event list and the window sums (which also
-- filter on subscription_id): every index costs each granted check a write.
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
