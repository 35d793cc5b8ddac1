-- Reservations: units held by a check whose cost is known afterwards. A
-- held reservation's units are in the counters (`usage_counters` of
-- (user_id, period_start, permission) and, when the permission had a quota,
-- `permission_counters` of (user_id, permission, own_period, own_start)):
-- the keys it was counted under, so that a commit or a release returns the
-- rest to exactly those rows. A key is NULL once a rebuild of the user's
-- counters dropped the window it was counted in (the units went with it).
CREATE TABLE reservations (
    id              TEXT   NOT NULL PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    subscription_id BIGINT NOT NULL,
    permission      TEXT   NOT NULL,
    reserved        BIGINT NOT NULL CHECK (reserved > 0),
    committed       BIGINT,
    status          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    period_start    BIGINT,
    own_period      TEXT,
    own_start       BIGINT
);

-- The expiry's sweep: held ones by expiry.
CREATE INDEX reservations_by_expiry ON reservations (status, expires_at);
-- The usage report: a user's held units of a window.
CREATE INDEX reservations_of_user ON reservations (user_id, status, period_start);
