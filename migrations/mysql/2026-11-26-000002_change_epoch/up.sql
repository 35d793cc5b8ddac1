-- One counter that every change of keys, users, plans, permissions or
-- subscriptions bumps in its own transaction; each instance polls it to know
-- when its read cache must be dropped.
CREATE TABLE change_epoch (
    id    INT    NOT NULL PRIMARY KEY,
    epoch BIGINT NOT NULL,
    CONSTRAINT change_epoch_single_row CHECK (id = 1)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO change_epoch (id, epoch) VALUES (1, 0);
