-- A settlement changes a reservation's status, which moved its entries in
-- both indexes of 000008 (status was a key column of each); the user's
-- index put them at random places of an index of every reservation of the
-- last day. Held reservations are few (they are settled within their ttl),
-- so indexes of the held ones alone stay a few pages: a reserve adds to
-- them and a settlement removes from them. Queries that use them say
-- `status = 'held'` as a literal (a bound parameter cannot match a partial
-- index's condition). The settled ones are swept by expiry, which never
-- changes: that index is not touched by a settlement.
DROP INDEX reservations_by_expiry;
DROP INDEX reservations_of_user;
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'held';
CREATE INDEX reservations_held_of_user ON reservations (user_id, period_start) WHERE status = 'held';
CREATE INDEX reservations_by_expiry ON reservations (expires_at);
