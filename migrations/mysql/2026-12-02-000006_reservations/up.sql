-- Reservations: units held by a check whose cost is known afterwards. A
-- held reservation's units are in the counters (`usage_counters` of
-- (user_id, period_start, permission) and, when the permission had a quota,
-- `permission_counters` of (user_id, permission, own_period, own_start)):
-- the keys it was counted under, so that a commit or a release returns the
-- rest to exactly those rows. A key is NULL once a rebuild of the user's
-- counters dropped the window it was counted in (the units went with it).
CREATE TABLE reservations (
    id              VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id         BIGINT      NOT NULL,
    subscription_id BIGINT      NOT NULL,
    permission      VARCHAR(64) NOT NULL,
    reserved        BIGINT      NOT NULL,
    committed       BIGINT      NULL,
    status          VARCHAR(16) NOT NULL,
    created_at      BIGINT      NOT NULL,
    expires_at      BIGINT      NOT NULL,
    period_start    BIGINT      NULL,
    own_period      VARCHAR(16) NULL,
    own_start       BIGINT      NULL,
    KEY reservations_by_expiry (status, expires_at),
    KEY reservations_of_user (user_id, status, period_start),
    CONSTRAINT reservations_reserved_ok CHECK (reserved > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
