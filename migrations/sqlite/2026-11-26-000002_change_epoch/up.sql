-- One counter that every change of keys, users, plans, permissions or
-- subscriptions bumps in its own transaction; each instance polls it to know
-- when its read cache must be dropped.
CREATE TABLE change_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL
);
INSERT INTO change_epoch (id, epoch) VALUES (1, 0);
