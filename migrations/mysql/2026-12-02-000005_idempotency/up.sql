-- The record of each granted request that carried an Idempotency-Key: what
-- it asked (permission, cost) and what it was answered (`response`, the
-- quotas after it), so that its repeats are answered the same. Unique per
-- user: the primary key is what makes a repeat find (or wait for) it. A row
-- whose `response` is NULL is a request still being decided; it is never
-- committed so (a granted one is filled in, a denied one deleted, in the
-- same transaction). Keys compare byte for byte.
CREATE TABLE idempotency_keys (
    user_id    BIGINT       NOT NULL,
    idem_key   VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    permission VARCHAR(64)  NOT NULL,
    cost       BIGINT       NOT NULL,
    created_at BIGINT       NOT NULL,
    response   TEXT         NULL,
    PRIMARY KEY (user_id, idem_key),
    KEY idempotency_keys_by_age (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
