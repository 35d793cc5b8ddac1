-- The record of each granted request that carried an Idempotency-Key: what
-- it asked (permission, cost) and what it was answered (`response`, the
-- quotas after it), so that its repeats are answered the same. Unique per
-- user: the unique index is what makes a repeat find it (SQLite's writers
-- take the write lock in turn, so one reads and writes the record alone).
-- Rows are appended in the order of their creation (`id`): the sweep
-- removes the oldest from the front, and the only index written at random
-- places holds just the key.
CREATE TABLE idempotency_keys (
    id         INTEGER PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    idem_key   TEXT   NOT NULL,
    permission TEXT   NOT NULL,
    cost       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    response   TEXT
);

CREATE UNIQUE INDEX idempotency_keys_by_key ON idempotency_keys (user_id, idem_key);
