-- SQLite keys usage events in bulk instead of indexing each one as it is
-- written. An index on usage_events put one random 4-KiB leaf per granted
-- check into the WAL (the user's place in the index), most of what a commit
-- wrote and synced. The batching writer now copies the keys of the newest
-- events into usage_event_keys every few hundred batches, sorted, so that
-- one leaf takes many keys; usage_events_keyed.upto says how far: every event
-- with id <= upto has its key. Reads take the keyed events through the keys
-- and the later ones (the tail) by id. See docs/access.md.
DROP INDEX usage_events_user_at;

CREATE TABLE usage_event_keys (
    user_id BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    id      BIGINT NOT NULL,
    PRIMARY KEY (user_id, at, id)
) WITHOUT ROWID;
INSERT INTO usage_event_keys (user_id, at, id) SELECT user_id, at, id FROM usage_events;

-- generation counts deletions of events: a keying pass that started before
-- one does not move upto (an id above the remaining ones can be given again).
CREATE TABLE usage_events_keyed (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    upto       BIGINT  NOT NULL,
    generation BIGINT  NOT NULL
);
INSERT INTO usage_events_keyed (id, upto, generation)
    SELECT 1, COALESCE(MAX(id), 0), 0 FROM usage_events;

-- Events go only with their user (ON DELETE CASCADE); their keys go with
-- them, and upto comes down to the newest event left, so that a new event
-- that gets a freed id is in the tail.
CREATE TRIGGER usage_events_deleted AFTER DELETE ON usage_events
BEGIN
    DELETE FROM usage_event_keys
        WHERE user_id = OLD.user_id AND at = OLD.at AND id = OLD.id;
    UPDATE usage_events_keyed SET
        generation = generation + 1,
        upto = MIN(upto, (SELECT COALESCE(MAX(id), 0) FROM usage_events));
END;
