-- The record of each granted request that carried an Idempotency-Key: what
-- it asked (permission, cost) and what it was answered (`response`, the
-- quotas after it), so that its repeats are answered the same. Unique per
-- user: the primary key is what makes a repeat find (or wait for) it.
CREATE TABLE idempotency_keys (
    user_id    BIGINT NOT NULL,
    idem_key   TEXT   NOT NULL,
    permission TEXT   NOT NULL,
    cost       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    response   TEXT,
    PRIMARY KEY (user_id, idem_key)
) WITHOUT ROWID;

-- The background sweep removes records by age.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
