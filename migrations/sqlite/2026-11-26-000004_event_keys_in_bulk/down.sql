-- Back to one index on usage_events, written with every event.
DROP TRIGGER usage_events_deleted;
DROP TABLE usage_events_keyed;
DROP TABLE usage_event_keys;
CREATE INDEX usage_events_user_at ON usage_events (user_id, at);
